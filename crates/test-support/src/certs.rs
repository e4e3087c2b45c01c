//! Throwaway TLS material made with the `openssl` command at test time: a CA, a server
//! certificate it signed for `127.0.0.1` and `localhost`, and a second CA that signed
//! nothing (to show that a client trusting the wrong CA refuses the server).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A directory holding `ca.pem`, `server.pem`, `server.key` and `other-ca.pem`, deleted
/// on drop. Brokers that terminate TLS themselves (nats-server, mosquitto) take
/// [`Certificates::server_cert`] and [`Certificates::server_key`]; clients trust
/// [`Certificates::ca_file`].
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes them.
    ///
    /// # Panics
    /// When `openssl` is missing or fails (with its output).
    pub fn make() -> Certificates {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-certs-")
            .tempdir()
            .expect("creating a temp dir for certificates");
        make_certificates(dir.path());
        Certificates { dir }
    }

    /// The CA that signed the server certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign the server certificate (PEM).
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The server certificate (PEM), for `IP:127.0.0.1` and `DNS:localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// Writes `ca.pem`, `server.pem`, `server.key` (signed by the CA, for 127.0.0.1 and
/// localhost) and `other-ca.pem` into `dir` with the `openssl` command.
pub(crate) fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}); install it (scripts/install-test-tools.sh)")
            });
        assert!(
            out.status.success(),
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    for (name, cn) in [
        ("ca", "switchyard test CA"),
        ("other-ca", "unrelated test CA"),
    ] {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-subj", &subj]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args);
    }
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    args.extend(["-subj", "/CN=localhost"]);
    openssl(&args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing the certificate extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}
