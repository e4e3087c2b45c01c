//! NATS JetStream for switchyard, on async-nats.
//!
//! * [`sink::build`] — the `nats` sink: each event is one JetStream publish to the
//!   subject its template names, with `Nats-Msg-Id` = the event id so the stream's
//!   duplicate window drops what a retry or a restart sends again. An event is
//!   [`Outcome::Delivered`](switchyard_connector::Outcome) only on its PubAck.
//! * [`source::build`] — the `nats` source: a durable pull consumer (`AckPolicy::All`)
//!   whose feed positions are stream sequences; a commit acknowledges the highest
//!   sequence below the reader's low watermark and waits for the server to confirm it.
//!
//! This crate knows no runtime: it implements the contracts of `switchyard-connector`
//! (`docs/decisions/0027-nats-connector.md`).

pub mod sink;
pub mod source;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use switchyard_config::BrokerTlsConfig;
use switchyard_connector::BuildError;
use tracing::{info, warn};

/// Message headers the sink sets from the event's fields (the event's own headers follow
/// them). The source maps them back.
pub mod headers {
    /// JetStream's deduplication id: the event id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const ID: &str = "switchyard-id";
    pub const SOURCE: &str = "switchyard-source";
    pub const KIND: &str = "switchyard-kind";
    pub const CONTENT_TYPE: &str = "switchyard-content-type";
    /// The event key when it is text that fits a header value.
    pub const KEY: &str = "switchyard-key";
    /// The event key in base64 when it is not.
    pub const KEY_BASE64: &str = "switchyard-key-base64";
    /// Set by the source: how often the server has delivered the message to its consumer.
    pub const DELIVERED: &str = "nats-delivered";
    /// Set by the source: the subject the message was published to.
    pub const SUBJECT: &str = "nats-subject";
    /// The names the sink writes, which it does not copy again from the event's headers.
    pub const ALL: [&str; 7] = [MSG_ID, ID, SOURCE, KIND, CONTENT_TYPE, KEY, KEY_BASE64];
}

/// The servers of `url` (comma-separated), each checked now so that a typo fails the
/// start with the fix instead of a reconnect loop.
pub(crate) fn servers(what: &str, name: &str, url: &str) -> Result<Vec<ServerAddr>, BuildError> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .map(|one| {
            one.parse::<ServerAddr>().map_err(|e| {
                BuildError::new(format!(
                    "{what} `{name}`: invalid url {:?}: {e}; write e.g. \"nats://127.0.0.1:4222\"",
                    switchyard_config::redact::url(one)
                ))
            })
        })
        .collect()
}

/// Connects to `servers` for the component `name`, in the background: the client is
/// returned at once and (re)connects with backoff for as long as it lives, so a server
/// that is down delays work, it does not fail the start. User and password or a token
/// in the URL are used by async-nats; `tls` files are passed through.
pub(crate) async fn connect(
    what: &'static str,
    name: &str,
    servers: Vec<ServerAddr>,
    tls: &BrokerTlsConfig,
    timeout: Duration,
) -> Result<async_nats::Client, String> {
    let mut options = ConnectOptions::new()
        .name(format!("switchyard-{name}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(timeout)
        .request_timeout(Some(timeout));
    if servers.iter().any(|s| s.tls_required()) {
        options = options.require_tls(true);
    }
    let refusal = Refusal::default();
    if let Some(ca) = &tls.ca {
        let config =
            client_config(ca, tls, refusal.clone()).map_err(|e| format!("{what} `{name}`: {e}"))?;
        options = options.tls_client_config(config).require_tls(true);
    } else if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.add_client_certificate(cert.into(), key.into());
    }
    let component = name.to_owned();
    options = options.event_callback(move |event| {
        let component = component.clone();
        let refused = refusal.lock().expect("refusal lock").take();
        async move {
            match (event, refused) {
                (async_nats::Event::Connected, _) => {
                    info!(what, name = %component, "connected to nats")
                }
                (async_nats::Event::Disconnected, _) => {
                    warn!(what, name = %component, "disconnected from nats; reconnecting")
                }
                (async_nats::Event::ClientError(_), Some(reason)) => warn!(
                    what,
                    name = %component,
                    "cannot connect to nats over TLS: the server's certificate was refused \
                     ({reason}); check that `tls.ca` is the CA that signed it and that it names \
                     the host in `url`; retrying"
                ),
                (other, _) => warn!(what, name = %component, event = %other, "nats client event"),
            }
        }
    });
    options
        .connect(servers)
        .await
        .map_err(|e| format!("{what} `{name}`: cannot set up the nats client: {e}"))
}

/// Why the last TLS handshake refused the server's certificate, until it is reported.
type Refusal = Arc<Mutex<Option<String>>>;

/// The rustls configuration that trusts only the CA(s) in the PEM file `ca` (as
/// async-nats does with a root certificate), with the client certificate of `tls` when
/// it has one, and a verifier that keeps the reason it refuses a certificate in
/// `refusal`.
fn client_config(
    ca: &str,
    tls: &BrokerTlsConfig,
    refusal: Refusal,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read tls.ca {ca:?}: {e}"))?;
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!(
            "tls.ca {ca:?} holds no usable certificate: give the PEM file of the CA that \
             signed the server's certificate"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("tls.ca {ca:?}: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recording { webpki, refusal }));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read tls.cert {cert:?}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read tls.key {key:?}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls.cert and tls.key do not go together: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// webpki's verification of the server's certificate, keeping why it refused one: a
/// failed handshake reaches the client's events only as "IO error".
#[derive(Debug)]
struct Recording {
    webpki: Arc<WebPkiServerVerifier>,
    refusal: Refusal,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(e) = &verdict {
            *self.refusal.lock().expect("refusal lock") = Some(e.to_string());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
