//! The agent's children: one registry that the reaping PID-1 loop fills with exits and that
//! any thread can spawn into and wait on, so no exit status is ever stolen or lost.

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::fd::{OwnedFd, RawFd},
    sync::{Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::{
        signal::{kill, signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{dup2_stderr, dup2_stdout, execvp, fork, pipe2, setpgid, setsid, write, ForkResult, Pid},
};

/// How a child is detached from the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// Its own process group, so forwarded signals reach its children too (the workload).
    Group,
    /// Its own session: never in the foreground of anything (dockerd, helpers).
    Session,
}

#[derive(Default)]
struct Inner {
    /// Watched pids and, once reaped, their exit codes.
    exits: HashMap<i32, Option<i32>>,
    workload: Option<i32>,
}

pub struct Children {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Written on every exit of a watched child, for threads that poll on file descriptors.
    wake: (OwnedFd, OwnedFd),
}

impl Children {
    pub fn new() -> io::Result<Children> {
        let wake = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Children { inner: Mutex::default(), changed: Condvar::new(), wake })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks and execs `argv`; the pid is registered before any reaper can see its exit.
    pub fn spawn(&self, argv: &[String], detach: Detach, output: Option<RawFd>) -> io::Result<i32> {
        let mut inner = self.lock();
        let pid = spawn(argv, detach, output)?;
        inner.exits.insert(pid, None);
        Ok(pid)
    }

    /// Spawns the workload; its exit decides the agent's own.
    pub fn spawn_workload(&self, argv: &[String]) -> io::Result<i32> {
        let pid = self.spawn(argv, Detach::Group, None)?;
        self.lock().workload = Some(pid);
        Ok(pid)
    }

    /// Records a workload that could not even be forked.
    pub fn workload_failed(&self, code: i32) {
        let mut inner = self.lock();
        inner.workload = Some(-1);
        inner.exits.insert(-1, Some(code));
        drop(inner);
        // Wakes the PID-1 loop, which waits for signals only.
        let _ = kill(Pid::this(), Signal::SIGCHLD);
    }

    pub fn workload(&self) -> Option<i32> {
        self.lock().workload
    }

    pub fn workload_exit(&self) -> Option<i32> {
        let inner = self.lock();
        inner.workload.and_then(|p| inner.exits.get(&p).copied().flatten())
    }

    /// Reaps every exited child (only the PID-1 loop calls this) and records the watched ones.
    pub fn reap(&self) -> usize {
        let mut reaped = Vec::new();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
                        reaped.push((pid.as_raw(), code));
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let mut inner = self.lock();
        let mut watched = false;
        for (pid, code) in &reaped {
            if let Some(slot) = inner.exits.get_mut(pid) {
                *slot = Some(*code);
                watched = true;
            }
        }
        drop(inner);
        if watched {
            self.wake();
        }
        reaped.len()
    }

    /// Watches a child the agent did not spawn (an orphan it inherited).
    pub fn watch(&self, pid: i32) {
        self.lock().exits.entry(pid).or_insert(None);
    }

    pub fn exit_of(&self, pid: i32) -> Option<i32> {
        self.lock().exits.get(&pid).copied().flatten()
    }

    /// Waits for a watched child's exit, at most `limit`.
    pub fn wait(&self, pid: i32, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let mut inner = self.lock();
        loop {
            if let Some(code) = inner.exits.get(&pid).copied().flatten() {
                return Some(code);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            inner = self.changed.wait_timeout(inner, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Stops watching a child whose exit was handled.
    pub fn forget(&self, pid: i32) {
        self.lock().exits.remove(&pid);
    }

    /// Wakes whoever polls `wake_fd` (a stop request, for example).
    pub fn wake(&self) {
        self.changed.notify_all();
        let _ = write(&self.wake.1, &[1]);
    }

    /// Readable after a watched child exited; drain it with `drain_wake`.
    pub fn wake_fd(&self) -> &OwnedFd {
        &self.wake.0
    }

    pub fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        while nix::unistd::read(&self.wake.0, &mut buf).is_ok_and(|n| n > 0) {}
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

/// Fork and exec with a clean signal state. The child only makes async-signal-safe calls:
/// other threads of the agent may hold locks at the moment of the fork.
fn spawn(argv: &[String], detach: Detach, output: Option<RawFd>) -> io::Result<i32> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument with a NUL byte"))?;
    if args.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let failed = CString::new(format!("beta9-sandbox-agent: cannot exec {}: not found or not executable\n", argv[0]))
        .unwrap_or_default();
    // SAFETY: the child below only calls async-signal-safe functions before exec or _exit.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            if detach == Detach::Group {
                // Also set here, so a signal forwarded right after the fork reaches the group.
                let _ = setpgid(child, child);
            }
            Ok(child.as_raw())
        }
        ForkResult::Child => {
            let _ = match detach {
                Detach::Group => setpgid(Pid::from_raw(0), Pid::from_raw(0)).map(drop),
                Detach::Session => setsid().map(drop),
            };
            if let Some(fd) = output {
                // SAFETY: fd is a pipe the parent keeps open across the fork.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let _ = (dup2_stdout(fd), dup2_stderr(fd));
            }
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // Rust ignores SIGPIPE at startup, and an ignored disposition survives exec.
            // SAFETY: resetting a disposition to its default.
            let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
            let err = execvp(&args[0], &args).unwrap_err();
            // SAFETY: write(2) and _exit(2) are async-signal-safe; fd 2 is the child's stderr.
            unsafe {
                nix::libc::write(2, failed.as_ptr().cast(), failed.as_bytes().len());
                nix::libc::_exit(if err == Errno::ENOENT { 127 } else { 126 })
            }
        }
    }
}
