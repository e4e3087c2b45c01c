//! A throwaway Postgres cluster with logical replication, one per test.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh temporary directory and starts the
//! server on a free port with `wal_level=logical` and room for many replication slots.
//! As root, `initdb` refuses to run, so the cluster is created and run as the `postgres`
//! OS user. Dropping the handle stops the server (`-m immediate`, like a crash) and
//! removes its files. [`PgCluster::sql`] runs SQL with `psql` and returns its rows.
//!
//! [`PgCluster::start_with_tls`] starts one that accepts TLS connections only: its
//! certificate is signed by a throwaway CA ([`PgCluster::ca_file`]) for
//! `IP:127.0.0.1` and `DNS:localhost`, and `pg_hba.conf` rejects every plaintext TCP
//! connection (`hostnossl … reject`).
//!
//! Everything here is blocking (std only), like [`crate::Switchyard`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a start of the server may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running throwaway cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
    /// TLS only (see [`PgCluster::start_with_tls`]).
    tls: bool,
}

/// The newest `/usr/lib/postgresql/*/bin`, or the directory of `pg_ctl` on `PATH`.
pub fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.pop() {
        return dir;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .expect("running sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and PATH); \
         install them, e.g. `apt-get install postgresql`"
    );
    PathBuf::from(path)
        .parent()
        .expect("pg_ctl has a directory")
        .to_path_buf()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    /// Creates and starts a new cluster; returns once it accepts connections.
    ///
    /// # Panics
    /// When the server binaries are missing or the cluster does not start; the message
    /// includes the server's log.
    pub fn start() -> Self {
        Self::create(false)
    }

    /// Like [`PgCluster::start`], for TLS connections only: `ssl = on` with a
    /// certificate signed by [`PgCluster::ca_file`] (for `IP:127.0.0.1` and
    /// `DNS:localhost`), and `pg_hba.conf` rejects plaintext TCP connections. Needs
    /// `openssl`.
    pub fn start_with_tls() -> Self {
        Self::create(true)
    }

    fn create(tls: bool) -> Self {
        let bin = pg_bin_dir();
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-pg-")
            .tempdir()
            .expect("creating a directory for the cluster");
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let cluster = Self {
            dir,
            bin,
            port: free_port(),
            run_as_postgres,
            tls,
        };
        let data = cluster.data_dir();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            cluster.set_up_tls();
        }
        cluster.start_server();
        cluster
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// Certificates, a key only the server may read, and a `pg_hba.conf` that accepts
    /// TCP connections over TLS only.
    fn set_up_tls(&self) {
        let tls = self.tls_dir();
        std::fs::create_dir(&tls).expect("creating the certificate directory");
        crate::certs::make_certificates(&tls);
        std::fs::write(
            self.data_dir().join("pg_hba.conf"),
            "local all all trust\n\
             local replication all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl replication all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl replication all 0.0.0.0/0 reject\n",
        )
        .expect("writing pg_hba.conf");
        // The server refuses a key that others may read.
        let key = tls.join("server.key");
        let mut perms = std::fs::metadata(&key).expect("the key").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&key, perms).expect("chmod of the key");
        if self.run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&tls)
                .arg(self.data_dir().join("pg_hba.conf"))
                .status()
                .expect("running chown");
            assert!(status.success(), "chown of the certificates failed");
        }
    }

    /// The CA that signed the server's certificate (PEM), for `sslrootcert`.
    ///
    /// # Panics
    /// When the cluster was not started with [`PgCluster::start_with_tls`].
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "the cluster was started without TLS");
        self.tls_dir().join("ca.pem")
    }

    /// A CA that did not sign the server's certificate (PEM).
    pub fn wrong_ca_file(&self) -> PathBuf {
        assert!(self.tls, "the cluster was started without TLS");
        self.tls_dir().join("other-ca.pem")
    }

    /// Gives the server a certificate signed by [`PgCluster::wrong_ca_file`] instead
    /// (same key and names) and reloads its configuration; returns once new
    /// connections get it. Connections already open keep the old one.
    pub fn switch_to_certificate_of_wrong_ca(&self) {
        let tls = self.tls_dir();
        let out = Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "other-ca.pem",
                "-CAkey",
                "other-ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ])
            .current_dir(&tls)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.sql("postgres", "SELECT pg_reload_conf()");
        let conninfo = format!(
            "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            self.port,
            self.wrong_ca_file().display()
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ok = Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-c", "select 1"])
                .arg(&conninfo)
                .output()
                .expect("running psql")
                .status
                .success();
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server does not present the new certificate:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a plaintext TCP connection (`sslmode=disable`) may run a query.
    pub fn accepts_plaintext(&self) -> bool {
        Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-c", "select 1"])
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
                self.port
            ))
            .output()
            .expect("running psql")
            .status
            .success()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs a server binary (as the `postgres` user when we are root).
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
    }

    /// Starts the server again after [`PgCluster::stop_immediate`] (same port and data).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_level=logical \
             -c max_replication_slots=40 -c max_wal_senders=40 -c fsync=off \
             -c full_page_writes=off -c wal_sender_timeout=10s",
            self.port,
            self.dir.path().display()
        );
        let options = if self.tls {
            let tls = self.tls_dir();
            format!(
                "{options} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                tls.join("server.pem").display(),
                tls.join("server.key").display()
            )
        } else {
            options
        };
        let data = self.data_dir();
        let log = self.log_path();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-w",
                "-t",
                &START_TIMEOUT.as_secs().to_string(),
                "-o",
                &options,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "the Postgres server did not start: {}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while self.try_sql("postgres", "select 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "the Postgres server does not answer:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server like a crash (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `database` as the `postgres` superuser.
    pub fn dsn(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its connection string.
    pub fn create_database(&self, database: &str) -> String {
        self.sql("postgres", &format!("create database \"{database}\""));
        self.dsn(database)
    }

    /// Runs `sql` in `database` with psql (stops at the first error) and returns the
    /// rows, one line each, columns separated by `|`.
    ///
    /// # Panics
    /// When psql fails; the message has psql's error.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql)
            .unwrap_or_else(|e| panic!("SQL failed in {database}: {e}\n--- SQL ---\n{sql}"))
    }

    /// Like [`PgCluster::sql`], returning psql's error instead of panicking.
    pub fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let file = self.dir.path().join(format!(
            "q-{}-{}.sql",
            std::process::id(),
            QUERY_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&file, sql).expect("writing an SQL file");
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .arg("-f")
            .arg(&file)
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        let _ = std::fs::remove_file(&file);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        }
    }

    /// The directory of this cluster's files (data, log, socket).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the server binaries in use (`pg_recvlogical` is next to them,
    /// or on `PATH`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }
}

static QUERY_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}
