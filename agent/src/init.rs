//! PID-1 duties: spawn the workload, reap everything, forward signals, exit like the workload.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal},
        wait::{waitpid, WaitPidFlag},
    },
    unistd::Pid,
};

use contract::args::AgentArgs;

use crate::{
    children::{exec_failure_code, Children},
    docker::{self, Docker},
    say,
};

/// Signals a workload would have received had it been PID 1 itself.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// How long processes get between SIGTERM and SIGKILL when a keepalive sandbox stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// Runs as PID 1 until the agent should exit; returns its exit code.
pub fn run(opts: AgentArgs) -> i32 {
    if std::process::id() != 1 {
        // Outside a sandbox (tests, debugging) orphans must still come to us.
        // SAFETY: prctl with integer arguments only.
        unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    // Every signal we care about is taken synchronously with sigwait: no handlers, no races.
    // Blocked before any thread starts, so every thread inherits the mask.
    let set = handled();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        say!("block signals: {e}");
        return 126;
    }
    let children = match Children::new() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            say!("{e}");
            return 126;
        }
    };
    // With Docker the supervisor starts the workload once the daemon answers.
    let docker = match opts.docker {
        Some(d) => match Docker::start(d, children.clone(), opts.command.clone()) {
            Ok(d) => Some(d),
            Err(e) => {
                say!("cannot start the Docker supervisor: {e}");
                return 126;
            }
        },
        None => {
            if !opts.command.is_empty() {
                if let Err(e) = children.spawn_workload(&opts.command) {
                    say!("exec {}: {e}", opts.command[0]);
                    return exec_failure_code(&e);
                }
            }
            None
        }
    };
    loop {
        children.reap();
        if let (Some(code), false) = (children.workload_exit(), opts.keepalive) {
            if let Some(d) = &docker {
                stop_docker(d, &children);
                stop_everything(&children);
            }
            return code;
        }
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        let workload = children.workload().filter(|_| children.workload_exit().is_none());
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGTERM | Signal::SIGINT if opts.keepalive || (docker.is_some() && workload.is_none()) => {
                if let Some(d) = &docker {
                    stop_docker(d, &children);
                }
                stop_everything(&children);
                return if opts.keepalive { 0 } else { contract::signaled(sig as i32) };
            }
            s => {
                if let Some(pid) = workload {
                    // The workload leads its own group: its children get the signal too.
                    let _ = kill(Pid::from_raw(-pid), s);
                }
            }
        }
    }
}

/// Gives dockerd its grace to stop its containers, reaping meanwhile.
fn stop_docker(d: &Docker, children: &Children) {
    if let Some(pid) = d.stop(children) {
        if reap_until(children, Instant::now() + docker::STOP_GRACE, || children.exit_of(pid).is_some()) {
            say!("dockerd (pid {pid}) stopped with status {}", children.exit_of(pid).unwrap_or(-1));
        } else {
            say!("dockerd (pid {pid}) did not stop within {:?}; killing what is left", docker::STOP_GRACE);
        }
    }
}

/// Reaps until `done` or the deadline, woken by each SIGCHLD; returns whether `done` held.
fn reap_until(children: &Children, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        children.reap();
        if done() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ts = nix::libc::timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
        // SAFETY: waits for a blocked SIGCHLD with a timeout; no memory is shared.
        unsafe { nix::libc::sigtimedwait(chld.as_ref(), std::ptr::null_mut(), &ts) };
    }
}

/// Signals every process the agent is responsible for: as PID 1 that is everything else in
/// the sandbox; elsewhere only its own descendants, never the host's other processes.
fn signal_all(sig: Signal) {
    if std::process::id() == 1 {
        let _ = kill(Pid::from_raw(-1), sig);
        return;
    }
    for pid in descendants(std::process::id()) {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten();
        for t in tasks {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// SIGTERM to every process, a bounded grace that ends as soon as all are reaped, then SIGKILL.
fn stop_everything(children: &Children) {
    signal_all(Signal::SIGTERM);
    let no_children = || waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) == Err(Errno::ECHILD);
    if !reap_until(children, Instant::now() + STOP_GRACE, no_children) {
        signal_all(Signal::SIGKILL);
        children.reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        use nix::sys::wait::WaitStatus;
        use crate::children::exit_code;
        let p = Pid::from_raw(2);
        assert_eq!(exit_code(WaitStatus::Exited(p, 5)), Some(5));
        assert_eq!(exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)), Some(143));
    }
}
