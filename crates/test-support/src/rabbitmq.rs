//! A private RabbitMQ node for tests that stop and restart the broker.
//!
//! [`RabbitNode::start`] runs the installed `rabbitmq-server` as a node of the test's
//! own, beside any RabbitMQ the machine runs: its own node name
//! (`sy-test-<port>@localhost`), AMQP port and distribution port (both free ports on
//! 127.0.0.1), and a temporary directory holding its config, database, logs and Erlang
//! cookie (`HOME` points there, so the node makes its own cookie). No plugin is
//! enabled. The machine's `epmd` (port 4369) is shared; the distinct node name keeps the
//! nodes apart, and the machine's own node is never touched.
//!
//! [`RabbitNode::stop`] shuts the node down (SIGTERM: RabbitMQ closes its client
//! connections and its message stores) and [`RabbitNode::start_again`] boots it on the
//! same ports and database, so durable queues and persistent messages come back. A boot
//! takes seconds (8–12 s on two busy cores): the tests start one node and restart it,
//! and [`RabbitNode::boot_times`] says how long each boot took.
//!
//! The node runs in a process group of its own; dropping the handle kills that group
//! and removes the directory, also when the test panics (the end of the node's log is
//! printed then). If the test process itself dies, the node gets SIGTERM
//! (`PR_SET_PDEATHSIG`) and shuts down. Everything here is blocking.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, spawn_tied_to_this_process};

/// How long a boot may take before the test fails (a debug build of the tests and
/// switchyard may be using both cores meanwhile).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `rabbitmq-server` script that runs a node in the foreground as the calling user.
/// Debian's `/usr/sbin/rabbitmq-server` is a wrapper that switches to the `rabbitmq`
/// user and its home; the script it calls, in `/usr/lib/rabbitmq/bin`, takes the
/// environment as it is. `RABBITMQ_SERVER_BIN` overrides the search.
pub fn rabbitmq_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("RABBITMQ_SERVER_BIN") {
        return PathBuf::from(path);
    }
    [
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        "/usr/local/sbin/rabbitmq-server",
        "/opt/homebrew/sbin/rabbitmq-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| PathBuf::from("rabbitmq-server"))
}

/// A RabbitMQ node of one test; see the module docs.
pub struct RabbitNode {
    port: u16,
    dist_port: u16,
    name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    boots: Vec<Duration>,
}

impl RabbitNode {
    /// Boots a new node and waits until it accepts AMQP connections.
    ///
    /// # Panics
    /// When `rabbitmq-server` cannot be started or the node does not listen within a
    /// minute (showing the end of its log).
    pub fn start() -> Self {
        let port = free_port();
        let dist_port = std::iter::repeat_with(free_port)
            .find(|&p| p != port)
            .expect("a second free port");
        let dir = tempfile::Builder::new()
            .prefix("switchyard-rabbitmq-")
            .tempdir()
            .expect("creating a temp dir for the rabbitmq node");
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )
        .expect("writing the node's rabbitmq.conf");
        // No plugins (the management plugin alone adds seconds to every boot), and no
        // settings from the machine's /etc/rabbitmq/rabbitmq-env.conf.
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")
            .expect("writing enabled_plugins");
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("writing the env file");
        let mut node = Self {
            port,
            dist_port,
            name: format!("sy-test-{port}@localhost"),
            dir,
            child: None,
            boots: Vec::new(),
        };
        node.boot();
        node
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`: the default user and vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node name, e.g. for `rabbitmqctl -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long each boot took, from spawning the server to its AMQP port answering.
    pub fn boot_times(&self) -> &[Duration] {
        &self.boots
    }

    /// Whether the node's process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Shuts the node down with SIGTERM (RabbitMQ closes its connections, then its
    /// message stores) and waits until every process of it is gone; returns how long
    /// that took. Kills the node if it takes longer than 30 s.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if !self.signal_group(libc::SIGTERM) {
            return started.elapsed();
        }
        if !self.wait_gone(STOP_TIMEOUT) {
            eprintln!(
                "rabbitmq node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                self.name
            );
            self.signal_group(libc::SIGKILL);
            self.wait_gone(Duration::from_secs(10));
        }
        self.child = None;
        started.elapsed()
    }

    /// Boots the node again after [`RabbitNode::stop`], on the same ports and database.
    ///
    /// # Panics
    /// When it still runs, or does not come back (showing the end of its log).
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "start_again() while the node runs: stop() first"
        );
        self.boot();
    }

    /// The end of the node's log (its stdout: the server logs there as well as to its
    /// log file).
    pub fn log(&self) -> String {
        let text = std::fs::read(self.dir.path().join("server.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        crate::tail(&text, 40)
    }

    fn boot(&mut self) {
        let dir = self.dir.path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("opening the node's log");
        let mut cmd = Command::new(rabbitmq_server_bin());
        // The caller's RabbitMQ and Erlang settings would point the node elsewhere.
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("RABBITMQ_") || text.starts_with("ERL_") {
                cmd.env_remove(&name);
            }
        }
        cmd.current_dir(dir)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            // Distribution (for rabbitmqctl) on loopback only.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            // A group of its own: the script, the Erlang VM and its helpers are
            // signalled together.
            .process_group(0);
        let started = Instant::now();
        // SIGTERM when the test process dies: the script then stops the VM properly.
        self.child = Some(spawn_tied_to_this_process(cmd, libc::SIGTERM));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = started + BOOT_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "rabbitmq node {} exited with {status} while booting:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq node {} did not listen on {addr} within {BOOT_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.boots.push(started.elapsed());
    }

    /// Sends `signal` to the node's process group; false when it is not running.
    fn signal_group(&mut self, signal: libc::c_int) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let group = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on the process group our child leads, with a valid signal.
        unsafe { libc::kill(-group, signal) == 0 }
    }

    /// Reaps the script and waits until no process of its group is left (the Erlang VM
    /// is the script's child, not ours); false when `within` passed first.
    fn wait_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let group = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        loop {
            let _ = child.try_wait();
            if !group_alive(group) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a process of `group` runs. Zombies do not count: when the script is killed
/// with the VM, the VM's exit status goes to whoever reaps orphans, maybe late.
fn group_alive(group: libc::pid_t) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // SAFETY: signal 0 only checks whether the group still has a member.
        return unsafe { libc::kill(-group, 0) == 0 };
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<libc::pid_t>().ok());
        pgrp == Some(group) && !matches!(state, Some("Z" | "X"))
    })
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "rabbitmq node {} (port {}), end of its log:\n{}",
                self.name,
                self.port,
                self.log()
            );
        }
        // Killed, not stopped: nothing of it is kept, and a graceful stop takes seconds.
        if self.signal_group(libc::SIGKILL) {
            self.wait_gone(Duration::from_secs(10));
        }
        self.child = None;
    }
}
