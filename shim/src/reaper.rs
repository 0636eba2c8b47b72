//! The one owner of every `waitpid` in the shim.
//!
//! The shim is a child subreaper: runsc's sandbox and exec waiters are reparented to it. A single
//! SIGCHLD loop reaps them all and hands each status to whoever watches that pid, keeping statuses
//! nobody watches yet, because a process can exit before its pid file has been read.

use std::{
    collections::HashMap,
    io,
    process::Command,
    sync::{Arc, Mutex, OnceLock},
};

use log::warn;
use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::oneshot,
};

/// Exits nobody claimed (for example runsc's gofer) are kept only this many at a time.
const UNCLAIMED_LIMIT: usize = 4096;

/// The shell's convention for a process killed by a signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[derive(Default)]
struct Table {
    /// Counts reaps, so a status kept from before a watch's `since` is known to be stale.
    seq: u64,
    watchers: HashMap<i32, oneshot::Sender<i32>>,
    unclaimed: HashMap<i32, (u64, i32)>,
}

#[derive(Default)]
pub struct Reaper {
    table: Mutex<Table>,
}

static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();

impl Reaper {
    /// The process-wide reaper; the SIGCHLD loop starts on first use, inside a tokio runtime.
    pub fn get() -> Arc<Reaper> {
        REAPER
            .get_or_init(|| {
                let reaper = Arc::new(Reaper::default());
                let mut sigchld = signal(SignalKind::child()).expect("install SIGCHLD handler");
                let r = reaper.clone();
                tokio::spawn(async move {
                    loop {
                        r.reap_all();
                        if sigchld.recv().await.is_none() {
                            break;
                        }
                    }
                });
                reaper
            })
            .clone()
    }

    /// A point in the reap sequence: a later `watch(pid, mark)` ignores statuses reaped before it.
    pub fn mark(&self) -> u64 {
        self.table.lock().unwrap().seq
    }

    /// Spawns `cmd` and returns its pid with a receiver of its exit code. The table is locked
    /// across the spawn so that a status kept for an earlier process with the same pid is dropped.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(i32, oneshot::Receiver<i32>)> {
        let mut table = self.table.lock().unwrap();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // std's Child must not wait; we own the wait.
        drop(child);
        table.unclaimed.remove(&pid);
        let (tx, rx) = oneshot::channel();
        table.watchers.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Watches a child we did not spawn ourselves (a reparented sandbox or exec waiter), created
    /// after `since`.
    pub fn watch(&self, pid: i32, since: u64) -> oneshot::Receiver<i32> {
        let mut table = self.table.lock().unwrap();
        let (tx, rx) = oneshot::channel();
        match table.unclaimed.remove(&pid) {
            Some((seq, code)) if seq > since => {
                let _ = tx.send(code);
            }
            _ => {
                table.watchers.insert(pid, tx);
            }
        }
        rx
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) else {
                        continue;
                    };
                    self.record(pid.as_raw(), code);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn record(&self, pid: i32, code: i32) {
        let mut table = self.table.lock().unwrap();
        table.seq += 1;
        if let Some(tx) = table.watchers.remove(&pid) {
            let _ = tx.send(code);
            return;
        }
        if table.unclaimed.len() >= UNCLAIMED_LIMIT {
            let oldest = table.unclaimed.iter().min_by_key(|(_, (seq, _))| *seq).map(|(p, _)| *p);
            if let Some(p) = oldest {
                table.unclaimed.remove(&p);
            }
        }
        let seq = table.seq;
        table.unclaimed.insert(pid, (seq, code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kept_for_a_late_watcher_only_if_newer_than_its_mark() {
        let r = Reaper::default();
        r.record(100, 3);
        let mark = r.mark();
        let mut stale = r.watch(100, mark);
        assert!(stale.try_recv().is_err(), "a status from before the mark must not be delivered");
        r.record(100, 5);
        assert_eq!(stale.try_recv().unwrap(), 5);

        let mark = r.mark();
        r.record(200, 7);
        assert_eq!(r.watch(200, mark).try_recv().unwrap(), 7);
    }

    #[test]
    fn signals_map_to_128_plus_signal() {
        use nix::sys::signal::Signal;
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)), Some(137));
        assert_eq!(exit_code(WaitStatus::Exited(pid, 7)), Some(7));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn spawned_child_exit_code_is_delivered() {
        let r = Reaper::get();
        let (_pid, rx) = r.spawn(Command::new("sh").args(["-c", "exit 9"])).unwrap();
        assert_eq!(rx.await.unwrap(), 9);
    }
}
