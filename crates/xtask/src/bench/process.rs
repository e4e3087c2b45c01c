//! A server under test: its own process, started, awaited until it accepts connections,
//! measured (peak RSS) and stopped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::procfs;

pub struct ServerProcess {
    name: String,
    child: Child,
}

impl ServerProcess {
    /// Starts `cmd` with stdout and stderr going to `log` (read it when the server fails).
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        Self::start(name, cmd, out.into(), err)
    }

    /// Starts `cmd` with stdout discarded (a stdout sink's lines) and stderr going to `log`.
    pub fn spawn_discarding_stdout(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        Self::start(name, cmd, Stdio::null(), err)
    }

    fn start(name: &str, mut cmd: Command, stdout: Stdio, stderr: File) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts TCP connections, or fails if the process exits first.
    pub fn wait_ready(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        log: &Path,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                bail!(
                    "{} exited ({status}) before listening on {addr}; its output ({}):\n{}",
                    self.name,
                    log.display(),
                    last_lines(&tail, 20)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let path = procfs::status_path(self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        procfs::vm_hwm_kib(&status).with_context(|| format!("no VmHWM in {path}"))
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the pid of our own, not yet reaped child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not stop within {grace:?} of SIGTERM; killing it",
            self.name
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `perf record` of one process, started when the measured window opens and stopped
/// when it closes, when `SWITCHYARD_BENCH_PERF` names a directory: speed work starts from
/// a profile of exactly the window a figure comes from. The file is
/// `<dir>/<name>.perf.data`; read it with `perf report -i FILE --no-children`.
pub struct Profile {
    perf: Child,
    path: std::path::PathBuf,
}

impl Profile {
    /// Starts recording `pid` (every thread it has now) when the variable is set.
    pub fn start(pid: u32, name: &str) -> Option<Profile> {
        let dir = std::env::var_os("SWITCHYARD_BENCH_PERF")?;
        let path = Path::new(&dir).join(format!("{name}.perf.data"));
        let _ = std::fs::create_dir_all(&dir);
        let perf = Command::new("perf")
            // DWARF unwinding: the release binary keeps no frame pointers, and the
            // callers of malloc, memmove and friends are what a profile is read for.
            .args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match perf {
            Ok(perf) => Some(Profile { perf, path }),
            Err(e) => {
                eprintln!("SWITCHYARD_BENCH_PERF is set but perf cannot start: {e}");
                None
            }
        }
    }

    /// Stops the recording (SIGINT, so perf writes its file) and says where it is.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.perf.id() as i32, libc::SIGINT) };
        let _ = self.perf.wait();
        eprintln!("profile: {}", self.path.display());
    }
}
