//! The real `switchyard` binary as a child process.
//!
//! [`Switchyard::start`] writes a config into a fresh temporary directory, picks a free
//! port, starts `switchyard run` with its output captured to files, and returns once
//! `/readyz` answers 200. The handle can kill the process with SIGKILL, stop it with
//! SIGTERM, and start it again on the same config, port and data directory. Dropping it
//! kills the process; when the test is panicking, the end of the process's log is
//! printed so the failure can be understood.
//!
//! Everything here is blocking (std only). From an async test, call the slow methods
//! (`start`, `restart`, `terminate`) inside `tokio::task::spawn_blocking` or
//! `block_in_place`, or drive the async parts on a runtime of their own.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails (debug builds on a busy machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Switchyard::terminate`] waits for the process to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `switchyard` binary under test.
///
/// `SWITCHYARD_BIN` when set; otherwise `switchyard` in the target directory of the
/// running test executable (`target/<profile>/deps/<test>` → `target/<profile>/switchyard`).
///
/// # Panics
/// When the binary does not exist: it has to be built before the tests run.
pub fn switchyard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SWITCHYARD_BIN={} does not name a file; build it or unset SWITCHYARD_BIN",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("finding the running test executable");
    let mut candidates = Vec::new();
    // target/<profile>/deps/<test> → target/<profile>/switchyard (cargo test, nextest);
    // target/<profile>/<test> → the same directory (a binary run directly).
    for dir in exe.ancestors().skip(1).take(2) {
        candidates.push(dir.join(format!("switchyard{}", std::env::consts::EXE_SUFFIX)));
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the switchyard binary is missing (looked for {}); run `cargo build -p switchyard-cli` \
                 first with the same profile and target directory, or run the tests through \
                 `cargo nextest run --workspace` / `cargo test --workspace`, or set SWITCHYARD_BIN",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
}

/// A `Command` for [`switchyard_bin`] whose environment is cleaned of the caller's
/// `SWITCHYARD_*` variables (they would override config keys) and `RUST_LOG`.
pub fn switchyard_command() -> Command {
    let mut cmd = Command::new(switchyard_bin());
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if (text.starts_with("SWITCHYARD_") && text != "SWITCHYARD_BIN") || text == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// A free TCP port on 127.0.0.1 (free when this returns; another process may take it
/// before it is used, which [`Switchyard::start`] handles by trying another).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// A running (or stopped) `switchyard run`. See the module docs.
pub struct Switchyard {
    dir: PathBuf,
    /// Owns `dir` when it is a temporary directory made here.
    _temp: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    config_path: PathBuf,
    template: String,
    addr: SocketAddr,
    env: Vec<(String, String)>,
    open_file_limit: Option<u64>,
    tls: bool,
    ready_timeout: Duration,
    ready_path: &'static str,
    child: Option<Child>,
    runs: u32,
}

/// How to start a [`Switchyard`], for the cases [`Switchyard::start`] does not cover.
#[derive(Default)]
pub struct Options {
    /// Where the data directory goes (default: `<temp dir>/data`). For tests that need a
    /// special file system, such as a small tmpfs.
    pub data_dir: Option<PathBuf>,
    /// Extra environment variables for the process and its CLI commands.
    pub env: Vec<(String, String)>,
    /// Soft and hard open-file limit of the process (`ulimit -n`), for tests of what it
    /// does when descriptors run short.
    pub open_file_limit: Option<u64>,
    /// The server speaks TLS (`[server.tls]`): it counts as started once it logs that it
    /// listens, since the plain `/readyz` probe cannot talk to it.
    pub tls: bool,
    /// How long a start may take before the test fails (default 60 s): more for a start
    /// that compiles a big plugin with the debug build's compiler.
    pub ready_timeout: Option<Duration>,
    /// The path that must answer 200 for a start to count (default `/readyz`):
    /// `/healthz` for an instance that may start as a standby, which is alive but not
    /// ready.
    pub ready_path: Option<&'static str>,
}

impl Switchyard {
    /// Writes `config_toml` to `<temp dir>/switchyard.toml`, replacing `{listen}` with a
    /// free `127.0.0.1` address and `{data_dir}` with `<temp dir>/data` (when a
    /// placeholder is absent, the value is set with `SWITCHYARD_SERVER__LISTEN` /
    /// `SWITCHYARD_SERVER__DATA_DIR` instead), and `{dir}` with the temp dir; starts it
    /// and waits for `/readyz`.
    ///
    /// # Panics
    /// When the process does not become ready: the panic shows its log.
    pub fn start(config_toml: &str) -> Self {
        Self::start_with(config_toml, Options::default())
    }

    /// [`Switchyard::start`] with [`Options`].
    pub fn start_with(config_toml: &str, options: Options) -> Self {
        let temp = tempfile::Builder::new()
            .prefix("switchyard-e2e-")
            .tempdir()
            .expect("creating a temp dir for switchyard");
        let dir = temp.path().to_path_buf();
        let data_dir = options.data_dir.unwrap_or_else(|| dir.join("data"));
        let mut last_log = String::new();
        // Another process may grab the port between picking and binding: try a few.
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("a socket address");
            let mut s = Switchyard {
                dir: dir.clone(),
                _temp: None,
                data_dir: data_dir.clone(),
                config_path: dir.join("switchyard.toml"),
                template: config_toml.to_owned(),
                addr,
                env: options.env.clone(),
                open_file_limit: options.open_file_limit,
                tls: options.tls,
                ready_timeout: options.ready_timeout.unwrap_or(READY_TIMEOUT),
                ready_path: options.ready_path.unwrap_or("/readyz"),
                child: None,
                runs: 0,
            };
            s.write_config();
            match s.spawn_and_wait() {
                Ok(()) => {
                    s._temp = Some(temp);
                    return s;
                }
                Err(StartError::PortTaken(log)) => last_log = log,
                Err(StartError::Failed(msg)) => {
                    // Keep the directory for a look at the data when asked to.
                    if std::env::var_os("SWITCHYARD_E2E_KEEP").is_some() {
                        let kept = temp.keep();
                        panic!("{msg}\n(kept {})", kept.display());
                    }
                    panic!("{msg}");
                }
            }
        }
        panic!("switchyard could not bind a free port after 5 tries:\n{last_log}");
    }

    fn write_config(&self) {
        let mut text = self
            .template
            .replace("{dir}", &self.dir.display().to_string());
        text = text.replace("{listen}", &self.addr.to_string());
        text = text.replace("{data_dir}", &self.data_dir.display().to_string());
        std::fs::write(&self.config_path, text).expect("writing the switchyard config");
    }

    /// Environment variables for the process and for CLI commands on its config.
    fn overrides(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        if !self.template.contains("{listen}") {
            env.push(("SWITCHYARD_SERVER__LISTEN".into(), self.addr.to_string()));
        }
        if !self.template.contains("{data_dir}") {
            env.push((
                "SWITCHYARD_SERVER__DATA_DIR".into(),
                self.data_dir.display().to_string(),
            ));
        }
        env
    }

    /// A `switchyard` command on this config: environment cleaned of the caller's
    /// `SWITCHYARD_*` overrides and `RUST_LOG`, with this instance's own set.
    fn base_command(&self) -> Command {
        let mut cmd = switchyard_command();
        cmd.envs(self.overrides());
        cmd.current_dir(&self.dir);
        cmd
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.runs += 1;
        let stdout = self.log_file("stdout.log");
        let stderr = self.log_file("stderr.log");
        let mut cmd = self.base_command();
        cmd.arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(limit) = self.open_file_limit {
            // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", switchyard_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("just spawned")
                .try_wait()
                .expect("polling the switchyard process")
            {
                self.child = None;
                let log = self.stderr_of_run();
                if log.contains("cannot listen on") && self.runs == 1 {
                    return Err(StartError::PortTaken(log));
                }
                return Err(StartError::Failed(format!(
                    "switchyard exited with {status} while starting (run {}, config {}):\n{log}",
                    self.runs,
                    self.config_path.display()
                )));
            }
            let ready = if self.tls {
                self.stderr_of_run().contains("switchyard is listening")
            } else {
                http_status(self.addr, self.ready_path) == Some(200)
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.as_mut().map(Child::kill);
                let _ = self.child.as_mut().map(Child::wait);
                self.child = None;
                return Err(StartError::Failed(format!(
                    "switchyard did not answer 200 on {} within {:?} (run {}):\n{}",
                    self.ready_path,
                    self.ready_timeout,
                    self.runs,
                    self.stderr_of_run()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_file(&self, name: &str) -> File {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .expect("opening a log file for switchyard");
        writeln!(file, "===== switchyard run {} =====", self.runs).expect("writing a log file");
        file
    }

    /// The stderr of the current (latest) run.
    fn stderr_of_run(&self) -> String {
        let all = read_lossy(&self.dir.join("stderr.log"));
        let marker = format!("===== switchyard run {} =====", self.runs);
        match all.rfind(&marker) {
            Some(i) => all[i..].to_owned(),
            None => all,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on (the same across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The config file as written (placeholders replaced).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding config, logs and (by default) data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// How many times the process was started.
    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// Kills the process with SIGKILL and waits for it to be gone: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same config, port and data directory, and waits
    /// for `/readyz`.
    ///
    /// # Panics
    /// When it is still running, or does not become ready (showing its log).
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "restart() while switchyard is running: kill9() or terminate() first"
        );
        self.child = None;
        if let Err(StartError::Failed(msg) | StartError::PortTaken(msg)) = self.spawn_and_wait() {
            panic!("switchyard did not restart: {msg}");
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    ///
    /// # Panics
    /// When it is not running, or does not exit within a minute (it is killed then).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("terminate() while switchyard is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with a pid we own (not yet reaped, so not reused) and a valid
        // signal number has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "sending SIGTERM: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("polling the switchyard process") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "switchyard did not exit within {EXIT_TIMEOUT:?} of SIGTERM:\n{}",
                    tail(&self.logs(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr (its log) and stdout, over all runs.
    pub fn logs(&self) -> String {
        format!(
            "--- stderr ---\n{}\n--- stdout ---\n{}",
            read_lossy(&self.dir.join("stderr.log")),
            read_lossy(&self.dir.join("stdout.log"))
        )
    }

    /// What the process wrote to stderr, over all runs.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.join("stderr.log"))
    }

    /// Runs `switchyard <args>` (a CLI command such as `dlq list`) with `-c <config>`
    /// appended and the same environment as the server, and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.base_command();
        cmd.args(args).arg("-c").arg(&self.config_path);
        cmd.stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("running switchyard {args:?}: {e}"))
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "switchyard in {} (runs: {}), end of its log:\n{}",
                self.dir.display(),
                self.runs,
                tail(&self.stderr(), 80)
            );
            if std::env::var_os("SWITCHYARD_E2E_KEEP").is_some()
                && let Some(temp) = self._temp.take()
            {
                eprintln!("kept {}", temp.keep().display());
            }
        }
    }
}

impl std::fmt::Debug for Switchyard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchyard")
            .field("addr", &self.addr)
            .field("dir", &self.dir)
            .field("runs", &self.runs)
            .finish_non_exhaustive()
    }
}

enum StartError {
    /// The first run could not bind its port: try another.
    PortTaken(String),
    Failed(String),
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The status of `GET <path>` on `addr`, or `None` when there is no answer within a
/// second (a tiny HTTP/1.1 client, so that polling needs no async runtime).
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    let line = std::str::from_utf8(&head).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Spawns `cmd` from a thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG = death_signal`: the child gets that signal when this process dies.
/// (The death signal follows the *thread* that forked, so a test thread that ends must
/// not be it.)
pub(crate) fn spawn_tied_to_this_process(cmd: Command, death_signal: libc::c_int) -> Child {
    type Request = (Command, libc::c_int, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("broker-spawner".into())
            .spawn(move || {
                for (mut cmd, signal, reply) in rx {
                    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
                    // and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let program = cmd.get_program().to_owned();
                    let _ = reply.send(cmd.spawn().map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot start {}: {e}", Path::new(&program).display()),
                        )
                    }));
                }
            })
            .expect("starting the broker spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .expect("spawner lock")
        .send((cmd, death_signal, reply_tx))
        .expect("the spawner thread runs");
    reply_rx
        .recv()
        .expect("the spawner answers")
        .unwrap_or_else(|e| panic!("{e}"))
}
