//! The agent's children: one registry that the reaping PID-1 loop fills with exits and that
//! any thread can spawn into and wait on, so no exit status is ever stolen or lost.

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::fd::{OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::{Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags},
    sys::{
        signal::{kill, SigSet, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{pipe2, write, Pid},
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

    /// Spawns `argv`; the pid is registered before any reaper can see its exit.
    pub fn spawn(&self, argv: &[String], detach: Detach, output: Option<RawFd>) -> io::Result<i32> {
        self.spawn_with_env(argv, detach, output, &[])
    }

    /// `spawn` with some environment variables set to other values (dockerd's PATH).
    pub fn spawn_with_env(&self, argv: &[String], detach: Detach, output: Option<RawFd>, env: &[(&str, String)]) -> io::Result<i32> {
        let mut inner = self.lock();
        let pid = spawn(argv, detach, output, env)?;
        inner.exits.insert(pid, None);
        Ok(pid)
    }

    /// Spawns the workload; its exit decides the agent's own.
    pub fn spawn_workload(&self, argv: &[String]) -> io::Result<i32> {
        // Recorded as the workload under the same lock as the spawn: the reaping loop must never
        // see its exit before knowing whose it is.
        let pid = {
            let mut inner = self.lock();
            let pid = spawn(argv, Detach::Group, None, &[])?;
            inner.exits.insert(pid, None);
            inner.workload = Some(pid);
            pid
        };
        // On a terminal (ctr run -t) the workload's group must own it, or its first read
        // stops it with SIGTTIN; SIGCONT in case that already happened.
        let stdin = std::io::stdin();
        if nix::unistd::isatty(&stdin).unwrap_or(false) && nix::unistd::tcsetpgrp(&stdin, Pid::from_raw(pid)).is_ok() {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGCONT);
        }
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
        WaitStatus::Signaled(_, sig, _) => Some(contract::signaled(sig as i32)),
        _ => None,
    }
}

/// What a shell returns when it cannot run a command: 127 when it does not exist, else 126.
pub fn exec_failure_code(e: &io::Error) -> i32 {
    if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 }
}

/// glibc's POSIX_SPAWN_SETSID, which nix does not name.
const POSIX_SPAWN_SETSID: i32 = 0x80;

/// Gives the calling process default dispositions for every signal and an empty mask, right
/// before it execs a program that must not inherit the agent's (posix_spawn does it for children).
pub fn reset_signals() {
    use nix::libc;
    // Real-time signals too: nix names only the standard ones.
    for sig in (1..=libc::SIGRTMAX()).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: installs SIG_DFL, so no handler code runs; glibc refuses its internal signals.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Starts `argv` with a clean signal state. posix_spawn, not fork: glibc spawns with
/// CLONE_VM|CLONE_VFORK, which in gVisor skips building a copy of the agent's address space
/// (a fork and exec of `true` cost about 15 ms more that way), and it reports exec failures.
fn spawn(argv: &[String], detach: Detach, output: Option<RawFd>, overrides: &[(&str, String)]) -> io::Result<i32> {
    let cstrings = |items: Vec<Vec<u8>>| -> io::Result<Vec<CString>> {
        items
            .into_iter()
            .map(CString::new)
            .collect::<Result<_, _>>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument with a NUL byte"))
    };
    let Some(program) = argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    // Looked up here: in gVisor every exec attempt on a missing PATH entry is slow.
    let program = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let path = overrides.iter().find(|(k, _)| *k == "PATH").map(|(_, v)| v.clone());
        let path = path.or_else(|| std::env::var("PATH").ok()).unwrap_or_else(|| DEFAULT_PATH.to_string());
        find_in_path(program, &path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
    };
    use std::os::unix::ffi::OsStrExt;
    let program = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument with a NUL byte"))?;
    let args = cstrings(argv.iter().map(|a| a.as_bytes().to_vec()).collect())?;
    let inherited = std::env::vars_os().filter(|(k, _)| !overrides.iter().any(|(o, _)| k.as_bytes() == o.as_bytes()));
    let inherited = inherited.map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat());
    let env = cstrings(inherited.chain(overrides.iter().map(|(k, v)| format!("{k}={v}").into_bytes())).collect())?;

    let mut attr = PosixSpawnAttr::init()?;
    let mut flags = PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF;
    match detach {
        Detach::Group => {
            flags |= PosixSpawnFlags::POSIX_SPAWN_SETPGROUP;
            attr.set_pgroup(Pid::from_raw(0))?;
        }
        Detach::Session => flags |= PosixSpawnFlags::from_bits_retain(POSIX_SPAWN_SETSID),
    }
    attr.set_flags(flags)?;
    attr.set_sigmask(&SigSet::empty())?;
    // Every signal back to its default, as init systems do: an ignored disposition survives exec
    // (Rust ignores SIGPIPE at startup, `nohup` SIGHUP), and a shell cannot trap one it started with.
    attr.set_sigdefault(&SigSet::all())?;
    let mut actions = PosixSpawnFileActions::init()?;
    if detach == Detach::Session {
        // Daemons and helpers must not hold the workload's stdin (a terminal, or a client's pipe).
        actions.add_open(0, "/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty())?;
    }
    if let Some(fd) = output {
        actions.add_dup2(fd, 1)?;
        actions.add_dup2(fd, 2)?;
    }
    Ok(posix_spawn(program.as_c_str(), &actions, &attr, &args, &env)?.as_raw())
}

/// The PATH a process without one gets.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The first executable file called `name` in `path`, the way a shell finds it.
pub fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_in_path_order() {
        assert_eq!(find_in_path("sh", "/nonexistent:/bin:/usr/bin"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_in_path("no-such-binary-here", "/bin:/usr/bin"), None);
    }
}
