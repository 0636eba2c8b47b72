//! PID-1 duties: spawn the workload, reap everything, forward signals, exit like the workload.

use std::{
    ffi::CString,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, sigprocmask, signal, SigHandler, SigSet, SigmaskHow, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{execvp, fork, setpgid, ForkResult, Pid},
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

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub keepalive: bool,
    pub command: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut opts = Options::default();
        let mut it = args.iter();
        for a in it.by_ref() {
            match a.as_str() {
                "--keepalive" => opts.keepalive = true,
                "--" => break,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        opts.command = it.cloned().collect();
        if opts.command.is_empty() && !opts.keepalive {
            return Err("nothing to run: give a command or --keepalive".into());
        }
        Ok(opts)
    }
}

/// The shell's convention, which is also what runsc reports for a sandbox whose init died.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// Runs as PID 1 until the agent should exit; returns its exit code.
pub fn run(opts: Options) -> i32 {
    if std::process::id() != 1 {
        // Outside a sandbox (tests, debugging) orphans must still come to us.
        // SAFETY: prctl with integer arguments only.
        unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    // Every signal we care about is taken synchronously with sigwait: no handlers, no races.
    let set = handled();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("beta9-sandbox-agent: block signals: {e}");
        return 126;
    }
    let workload = if opts.command.is_empty() { None } else { Some(spawn(&opts.command)) };
    let workload = match workload {
        Some(Err(code)) => return code,
        Some(Ok(pid)) => Some(pid),
        None => None,
    };
    let mut workload_exit: Option<i32> = None;
    loop {
        for (pid, code) in reap() {
            if Some(pid) == workload {
                workload_exit = Some(code);
            }
        }
        if let (Some(code), false) = (workload_exit, opts.keepalive) {
            return code;
        }
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGTERM | Signal::SIGINT if opts.keepalive => {
                stop_everything();
                return 0;
            }
            s => {
                if let (Some(pid), None) = (workload, workload_exit) {
                    // The workload leads its own group: its children get the signal too.
                    let _ = kill(Pid::from_raw(-pid.as_raw()), s);
                }
            }
        }
    }
}

/// Forks and execs the workload in its own process group, with a clean signal state.
fn spawn(command: &[String]) -> Result<Pid, i32> {
    let argv: Vec<CString> = match command.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(v) => v,
        Err(_) => {
            eprintln!("beta9-sandbox-agent: argument with a NUL byte");
            return Err(126);
        }
    };
    // SAFETY: the agent is single-threaded, so the child may do anything before exec.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            // Also set here, so a signal forwarded right after fork reaches the group.
            let _ = setpgid(child, child);
            Ok(child)
        }
        Ok(ForkResult::Child) => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // Rust ignores SIGPIPE at startup, and an ignored disposition survives exec.
            // SAFETY: resetting a disposition to its default.
            let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
            let err = execvp(&argv[0], &argv).unwrap_err();
            eprintln!("beta9-sandbox-agent: exec {}: {err}", command[0]);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { nix::libc::_exit(if err == Errno::ENOENT { 127 } else { 126 }) }
        }
        Err(e) => {
            eprintln!("beta9-sandbox-agent: fork: {e}");
            Err(126)
        }
    }
}

/// Reaps every exited child, returning their pids and exit codes.
fn reap() -> Vec<(Pid, i32)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return out,
            Ok(status) => {
                if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
                    out.push((pid, code));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return out,
        }
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
fn stop_everything() {
    signal_all(Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    while Instant::now() < deadline {
        reap();
        if waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) == Err(Errno::ECHILD) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = nix::libc::timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
        // SAFETY: waits for a blocked SIGCHLD with a timeout; no memory is shared.
        unsafe { nix::libc::sigtimedwait(chld.as_ref(), std::ptr::null_mut(), &ts) };
    }
    signal_all(Signal::SIGKILL);
    reap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_options_and_command() {
        let o = Options::parse(&args(&["--keepalive", "--", "sh", "-c", "--keepalive"])).unwrap();
        assert!(o.keepalive);
        assert_eq!(o.command, args(&["sh", "-c", "--keepalive"]));
        let o = Options::parse(&args(&["--", "true"])).unwrap();
        assert!(!o.keepalive);
        assert_eq!(Options::parse(&args(&["--keepalive"])).unwrap().command, Vec::<String>::new());
        assert!(Options::parse(&args(&["--"])).is_err(), "nothing to run");
        assert!(Options::parse(&args(&["--bogus", "--", "true"])).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let p = Pid::from_raw(2);
        assert_eq!(exit_code(WaitStatus::Exited(p, 5)), Some(5));
        assert_eq!(exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)), Some(143));
    }
}
