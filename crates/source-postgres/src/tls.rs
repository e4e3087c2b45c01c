//! TLS to Postgres, for the SQL connection and the replication connection alike.
//!
//! The `dsn`'s `sslmode` and `sslrootcert` (libpq's names and meanings, see
//! [`switchyard_config::postgres_dsn`]) become one rustls client configuration:
//!
//! * `disable` — plaintext; `prefer` — TLS when the server offers it, unchecked;
//! * `require` — TLS, unchecked, unless `sslrootcert` is given: then like `verify-ca`;
//! * `verify-ca` — the chain must lead to `sslrootcert`;
//! * `verify-full` — and the certificate must name the host (a DNS name or an IP
//!   address in its subjectAltName).
//!
//! The SQL connection gets it through tokio-postgres' `MakeTlsConnect`; the replication
//! connection (our own client, [`crate::replication`]) through
//! [`Target::replication_stream`] — the same verifier, the same errors.
//!
//! A TLS problem the user must fix (the server does not speak TLS but the mode requires
//! it, a certificate that fails the check, a handshake the server refuses) is a
//! permanent [`CdcError::Tls`] that names the dsn's `sslmode`/`sslrootcert`; a network
//! failure stays transient.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use switchyard_config::postgres_dsn::{self, PostgresTls, RootCert, SslMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::setup::{CdcError, describe};

/// A connection to the server, whichever transport it took.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where and how to connect, from a source's `dsn`.
#[derive(Clone)]
pub struct Target {
    /// tokio-postgres' view of the dsn without `sslmode`/`sslrootcert`; its own
    /// `ssl_mode` is set to match (verification is ours).
    pub config: tokio_postgres::Config,
    pub tls: PostgresTls,
    /// The dsn with its password hidden, for messages.
    pub redacted: String,
    /// `None` when no TLS is tried: `disable`, or a Unix socket (libpq ignores
    /// `sslmode` there too).
    rustls: Option<Arc<ClientConfig>>,
}

impl Target {
    /// Parses the dsn and loads the root certificates it names.
    pub fn parse(dsn: &str) -> Result<Self, CdcError> {
        let redacted = postgres_dsn::redact(dsn);
        let split = postgres_dsn::split_tls(dsn)
            .map_err(|e| CdcError::Config(format!("dsn {redacted}: {e}")))?;
        let mut config = tokio_postgres::Config::from_str(&split.dsn).map_err(|e| {
            CdcError::Config(format!(
                "invalid dsn {redacted}: {}; write e.g. \
                 postgres://user:password@host:5432/database?sslmode=verify-full&sslrootcert=ca.pem",
                switchyard_config::redact::text(&e.to_string())
            ))
        })?;
        let unix = matches!(config.get_hosts().first(), Some(Host::Unix(_)));
        let mode = if unix {
            SslMode::Disable
        } else {
            split.tls.mode
        };
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let rustls = match mode {
            SslMode::Disable => None,
            _ => Some(client_config(&split.tls)?),
        };
        Ok(Self {
            config,
            tls: split.tls,
            redacted,
            rustls,
        })
    }

    /// The first host and port (the replication session uses the first host).
    pub fn host_port(&self) -> (String, u16) {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        (
            host,
            self.config.get_ports().first().copied().unwrap_or(5432),
        )
    }

    /// Connects for ordinary SQL with these TLS settings. The caller spawns the
    /// connection.
    pub async fn connect_sql(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, MaybeTls>,
        ),
        CdcError,
    > {
        let connect = MakeMaybeTls(self.rustls.clone());
        self.config
            .connect(connect)
            .await
            .map_err(|e| self.classify(&e, &describe(&e)))
    }

    /// Opens the replication session's transport: a Unix socket, a plain TCP
    /// connection (`disable`, or `prefer` and a server without TLS), or TLS over TCP
    /// checked as the dsn asks.
    pub async fn replication_stream(&self) -> Result<Box<dyn Io>, CdcError> {
        let (host, port) = self.host_port();
        let connect_error = |e: io::Error| {
            CdcError::Transient(format!("cannot connect to Postgres at {host}:{port}: {e}"))
        };
        if let Some(Host::Unix(dir)) = self.config.get_hosts().first() {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let socket = UnixStream::connect(&path).await.map_err(|e| {
                CdcError::Transient(format!(
                    "cannot connect to Postgres at {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(Box::new(socket));
        }
        let addr = match self.config.get_hostaddrs().first() {
            Some(ip) => ip.to_string(),
            None => host.clone(),
        };
        let mut tcp = TcpStream::connect((addr.as_str(), port))
            .await
            .map_err(connect_error)?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        let Some(rustls) = &self.rustls else {
            return Ok(Box::new(tcp));
        };
        // SSLRequest: length 8, then the code 1234.5679 (the protocol's fixed bytes).
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(connect_error)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(connect_error)?;
        match answer[0] {
            b'S' => {}
            b'N' if !self.tls.mode.requires_tls() => return Ok(Box::new(tcp)),
            b'N' => return Err(self.no_tls_error()),
            other => {
                return Err(CdcError::Transient(format!(
                    "replication connection: unexpected answer {other:#04x} to the TLS request"
                )));
            }
        }
        let name = server_name(&host)
            .map_err(|e| CdcError::Config(format!("dsn {}: {e}", self.redacted)))?;
        let stream = tokio_rustls::TlsConnector::from(rustls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.classify(&e, &e.to_string()))?;
        Ok(Box::new(stream))
    }

    /// A permanent error for a TLS problem in `e`'s chain; otherwise transient.
    fn classify(&self, e: &(dyn std::error::Error + 'static), text: &str) -> CdcError {
        let (host, port) = self.host_port();
        let mut next = Some(e);
        while let Some(err) = next {
            let found = err.downcast_ref::<rustls::Error>().or_else(|| {
                err.downcast_ref::<io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = found {
                return self.handshake_error(tls, &host, port);
            }
            if err.to_string().contains("server does not support TLS") {
                return self.no_tls_error();
            }
            next = err.source();
        }
        CdcError::Transient(format!(
            "cannot connect to Postgres at {host}:{port}: {text}"
        ))
    }

    fn no_tls_error(&self) -> CdcError {
        let (host, port) = self.host_port();
        CdcError::Tls(format!(
            "the Postgres server at {host}:{port} does not accept TLS connections, but the \
             source's dsn ({}) asks for {}: turn TLS on in the server (ssl = on with \
             ssl_cert_file and ssl_key_file in postgresql.conf), or set sslmode=prefer or \
             sslmode=disable in the dsn to connect without encryption",
            self.redacted, self.tls
        ))
    }

    fn handshake_error(&self, e: &rustls::Error, host: &str, port: u16) -> CdcError {
        let fix = match e {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the certificate does not name {host}: connect with a host name the \
                 certificate lists in its subjectAltName, or use sslmode=verify-ca to check \
                 only the chain"
            ),
            rustls::Error::InvalidCertificate(_) => {
                "set sslrootcert in the dsn to the PEM file of the CA that signed the \
                 server's certificate (and check the certificate's validity dates)"
                    .to_owned()
            }
            _ => "check that the server's TLS settings (ssl_min_protocol_version, \
                  ssl_ciphers, its certificate and key) allow a TLS 1.2 or 1.3 client"
                .to_owned(),
        };
        CdcError::Tls(format!(
            "TLS with the Postgres server at {host}:{port} failed with the source's dsn \
             ({}, {}): {e}; {fix}",
            self.redacted, self.tls
        ))
    }
}

/// The name the certificate must carry: a DNS name, or an IP address.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("host {host:?} cannot be checked against a certificate: {e}"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration of `tls`.
fn client_config(tls: &PostgresTls) -> Result<Arc<ClientConfig>, CdcError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CdcError::Config(format!("TLS set-up: {e}")))?;
    let config = if tls.verifies_chain() {
        let roots = Arc::new(root_store(tls)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| CdcError::Config(format!("TLS set-up ({tls}): {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = if tls.verifies_host() {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

fn root_store(tls: &PostgresTls) -> Result<RootCertStore, CdcError> {
    let mut roots = RootCertStore::empty();
    match &tls.root_cert {
        Some(RootCert::System) => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(RootCert::File(path)) => {
            let certs = read_pem(path).map_err(|e| {
                CdcError::Config(format!(
                    "sslrootcert={} in the dsn: {e}; name the PEM file of the CA that signed \
                     the server's certificate",
                    path.display()
                ))
            })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(CdcError::Config(format!(
                    "sslrootcert={} in the dsn holds no usable CA certificate: name the PEM \
                     file of the CA that signed the server's certificate",
                    path.display()
                )));
            }
        }
        None => {}
    }
    Ok(roots)
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read it ({e})"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`, and `require` without `sslrootcert`: encrypted, the certificate is not
/// checked (libpq's meaning). The handshake signatures still are.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres' hook for TLS: rustls, or none (`disable`).
#[derive(Clone)]
pub struct MakeMaybeTls(Option<Arc<ClientConfig>>);

impl<S> MakeTlsConnect<S> for MakeMaybeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = MaybeTls<S>;
    type TlsConnect = ConnectTls;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<ConnectTls, io::Error> {
        let Some(config) = self.0.clone() else {
            return Ok(ConnectTls(None));
        };
        let name =
            server_name(domain).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(ConnectTls(Some((config, name))))
    }
}

/// One TLS handshake of the SQL connection.
pub struct ConnectTls(Option<(Arc<ClientConfig>, ServerName<'static>)>);

impl<S> TlsConnect<S> for ConnectTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = MaybeTls<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<MaybeTls<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // Not reached: with `disable` tokio-postgres never asks for TLS.
            let Some((config, name)) = self.0 else {
                return Err(io::Error::other("TLS is disabled (sslmode=disable)"));
            };
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(MaybeTls(Box::new(tls)))
        })
    }
}

/// The SQL connection's TLS stream.
pub struct MaybeTls<S = tokio_postgres::Socket>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for MaybeTls<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding, as over the replication connection.
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dsn_decides_the_sql_clients_ssl_mode_and_keeps_its_other_settings() {
        let t = Target::parse(
            "postgres://app:pw@db.example.com:6543/orders?sslmode=require&application_name=x",
        )
        .unwrap();
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(t.host_port(), ("db.example.com".into(), 6543));
        assert_eq!(
            t.redacted,
            "postgres://app:***@db.example.com:6543/orders?sslmode=require&application_name=x"
        );
        assert!(t.rustls.is_some());

        let t = Target::parse("host=/var/run/postgresql dbname=app sslmode=require").unwrap();
        assert!(
            t.rustls.is_none(),
            "no TLS over a Unix socket, as with libpq"
        );
        let t = Target::parse("postgres://h/app?sslmode=disable").unwrap();
        assert!(t.rustls.is_none());
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn an_unreadable_root_certificate_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let Err(e) = Target::parse(&format!(
            "postgres://u:secret@h/app?sslmode=verify-full&sslrootcert={}",
            missing.display()
        )) else {
            panic!("a missing sslrootcert must be refused");
        };
        let text = e.to_string();
        assert!(!e.is_transient() && text.contains("missing.pem"), "{text}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let Err(e) = Target::parse(&format!(
            "postgres://u@h/app?sslmode=verify-ca&sslrootcert={}",
            garbage.display()
        )) else {
            panic!("a file without certificates must be refused");
        };
        assert!(e.to_string().contains("no usable CA certificate"), "{e}");
    }
}
