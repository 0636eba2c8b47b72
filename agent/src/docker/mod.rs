//! The Docker supervisor: prepares the sandbox for dockerd (prepare.rs), runs it detached with
//! its output kept, decides readiness by `GET /_ping`, and restarts it when it crashes after
//! being ready (supervise.rs); what nested Docker keeps in the sandbox's network stack, set up
//! and removed again (netstack.rs: also what a container restarted in its pod, or a sandbox
//! restored from a snapshot, starts from).

pub mod netstack;
mod prepare;
mod supervise;

use std::{
    fs::File,
    io::{self, Read},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use nix::{
    fcntl::OFlag,
    sys::signal::{kill, Signal},
    unistd::{pipe2, Pid},
};

use contract::{args::Docker as DockerOptions, status::Phase};

use crate::{
    children::{exec_failure_code, Children, Detach},
    say,
    status::Status,
};

pub const SOCKET: &str = "/var/run/docker.sock";
pub const LOG: &str = "/var/log/beta9/dockerd.log";
/// Where dockerd keeps images, containers and its network store: a tmpfs of the agent's.
const STORE: &str = "/var/lib/docker";
/// dockerd's network store, which a restarted dockerd would rebuild the old bridge from.
const NETWORK_STORE: &str = "/var/lib/docker/network/files/local-kv.db";
/// How long a helper (iptables) may take.
const HELPER_LIMIT: Duration = Duration::from_secs(10);
/// How long dockerd gets to stop its containers when the sandbox stops.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running supervisor, as the PID-1 loop holds it.
pub struct Docker {
    status: Arc<Status>,
    stopping: Arc<AtomicBool>,
}

impl Docker {
    /// Starts the status socket and the supervisor thread. `workload` runs once the daemon is
    /// ready (or has failed), so the workload's first docker command finds it answering.
    pub fn start(opts: DockerOptions, children: Arc<Children>, workload: Vec<String>) -> io::Result<Docker> {
        let status = Arc::new(Status::new(LOG));
        crate::status::serve(status.clone())?;
        let stopping = Arc::new(AtomicBool::new(false));
        let sup = Supervisor {
            opts,
            children,
            status: status.clone(),
            stopping: stopping.clone(),
            log: None,
            env: Vec::new(),
            legacy: None,
            uplink: None,
            rules: None,
        };
        std::thread::Builder::new().name("docker".into()).spawn(move || sup.run(workload))?;
        Ok(Docker { status, stopping })
    }

    /// Asks the supervisor to stop and signals dockerd; returns the daemon's pid to wait for.
    pub fn stop(&self, children: &Children) -> Option<i32> {
        self.stopping.store(true, Ordering::SeqCst);
        self.status.update(|s| s.phase = Phase::Stopping);
        children.wake();
        let pid = self.status.get().pid?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        Some(pid)
    }
}

/// What the supervisor thread holds: the daemon's options, the sandbox's children and status,
/// and what `prepare` found for dockerd (its environment, the legacy iptables, the uplink).
struct Supervisor {
    opts: DockerOptions,
    children: Arc<Children>,
    status: Arc<Status>,
    stopping: Arc<AtomicBool>,
    log: Option<Arc<Mutex<supervise::LogFile>>>,
    /// Variables dockerd gets other values of than the agent's (its PATH).
    env: Vec<(&'static str, String)>,
    legacy: Option<netstack::Legacy>,
    uplink: Option<crate::uplink::Uplink>,
    /// The rules for nested networks, set up while dockerd starts.
    rules: Option<prepare::Rules>,
}

impl Supervisor {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Logs a supervisor event to the container's stderr and to the daemon's log.
    fn note(&self, msg: &str) {
        say!("{msg}");
        if let Some(log) = &self.log {
            log.lock().unwrap_or_else(|e| e.into_inner()).write_line(&format!("beta9-sandbox-agent: {msg}"));
        }
    }

    fn fail(&self, error: String) {
        self.note(&error);
        self.status.update(|s| {
            s.phase = Phase::Failed;
            s.pid = None;
            s.error = Some(error);
        });
    }

    fn start_workload(&self, workload: &mut Option<Vec<String>>) {
        if let Some(argv) = workload.take() {
            if let Err(e) = self.children.spawn_workload(&argv) {
                say!("exec {}: {e}", argv[0]);
                self.children.workload_failed(exec_failure_code(&e));
            }
        }
    }

    /// What dockerd left in the sandbox's netstack goes (netstack::reset), with its network
    /// store, and the agent's rules are set up again for the next dockerd.
    fn reset_network(&self) {
        if let Err(e) = std::fs::remove_file(NETWORK_STORE) {
            if e.kind() != io::ErrorKind::NotFound {
                self.note(&format!("cannot remove {NETWORK_STORE}: {e}"));
            }
        }
        match netstack::reset(&self.children, self.legacy.as_ref()) {
            Ok(removed) if !removed.is_empty() => self.note(&format!("removed what the last dockerd left: {}", removed.join(", "))),
            Ok(_) => {}
            Err(e) => self.note(&format!("cannot remove all the last dockerd left: {e}")),
        }
        if let Some(legacy) = &self.legacy {
            if let Err(e) = netstack::install(&self.children, legacy, self.uplink.as_ref()) {
                self.note(&format!("cannot set up the nested networks' rules again: {e}"));
            }
        }
    }
}

/// Runs a short helper to completion; returns its exit code and combined output. One that
/// hangs (`iptables -w` on a held lock) is killed at `HELPER_LIMIT`.
fn run_helper(children: &Children, argv: &[String]) -> io::Result<(i32, String)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
    let pid = children.spawn(argv, Detach::Session, Some(std::os::fd::AsRawFd::as_raw_fd(&w)))?;
    drop(w);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = File::from(r).take(64 << 10).read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let code = children.wait(pid, HELPER_LIMIT);
    if code.is_none() {
        // A session leader: its group goes with it, and so does the pipe's last writer.
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
    let out = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    children.forget(pid);
    match code {
        Some(code) => Ok((code, out)),
        None => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{} did not finish within {HELPER_LIMIT:?}", argv[0]))),
    }
}

#[cfg(test)]
fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("beta9-agent-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
