//! Real `meridian` processes: start, kill -9, SIGSTOP/SIGCONT, restart. Every node writes
//! its log to `<run dir>/logs/<region>-<name>.log` (appended across restarts), which the
//! report points to when something goes wrong.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{ChaosError, io};

/// One node process of the deployment.
#[derive(Debug)]
pub struct NodeProcess {
    /// region/name, as `--node` takes it.
    pub node: String,
    /// `broker` or `mirror`.
    pub role: &'static str,
    binary: PathBuf,
    topology: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The network namespace the node runs in (its region's), if any.
    netns: Option<String>,
    child: Option<Child>,
    stopped: bool,
}

impl NodeProcess {
    /// A node that is not running yet.
    pub fn new(
        binary: &Path,
        topology: &Path,
        run_dir: &Path,
        node: &str,
        role: &'static str,
    ) -> Self {
        Self {
            node: node.to_string(),
            role,
            binary: binary.to_path_buf(),
            topology: topology.to_path_buf(),
            log: run_dir
                .join("logs")
                .join(format!("{}.log", node.replace('/', "-"))),
            env: Vec::new(),
            netns: None,
            child: None,
            stopped: false,
        }
    }

    /// Sets an environment variable for every later start (debug switches).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Runs the node in network namespace `netns` from its next start (`ip netns exec`,
    /// which execs in place: the pid the harness signals is the node's own).
    pub fn set_namespace(&mut self, netns: &str) {
        self.netns = Some(netns.to_string());
    }

    /// Starts the process (again).
    pub fn start(&mut self) -> Result<(), ChaosError> {
        if self.child.is_some() {
            return Ok(());
        }
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent).map_err(io("create the logs directory"))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(format!("open {}", self.log.display())))?;
        let err = log.try_clone().map_err(io("clone a log handle"))?;
        let mut command = match &self.netns {
            None => Command::new(&self.binary),
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(&self.binary);
                command
            }
        };
        let child = command
            .arg(self.role)
            .arg("--topology")
            .arg(&self.topology)
            .args(["--node", &self.node])
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("start {}", self.node)))?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    /// kill -9: a real crash, nothing flushed, nothing said goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }

    /// SIGSTOP: alive but silent (a stalled process, a long GC pause, a frozen VM).
    pub fn stall(&mut self) {
        if self.signal(Signal::SIGSTOP) {
            self.stopped = true;
        }
    }

    /// SIGCONT after [`NodeProcess::stall`].
    pub fn resume(&mut self) {
        if self.stopped && self.signal(Signal::SIGCONT) {
            self.stopped = false;
        }
    }

    /// SIGTERM and wait: the clean stop at the end of a run.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while the process runs (stalled counts as running).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True while SIGSTOPped.
    pub fn is_stalled(&self) -> bool {
        self.stopped
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn signal(&self, signal: Signal) -> bool {
        match &self.child {
            Some(child) => kill(Pid::from_raw(child.id() as i32), signal).is_ok(),
            None => false,
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}
