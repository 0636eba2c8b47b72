//! One process of a container (its init or an exec): state, exit and waiters.

use std::time::SystemTime;

use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    stdio::{ProcessIo, StdioPaths},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

pub struct Process {
    pub stdio: StdioPaths,
    /// Host pid: the sandbox for an init, the runsc exec waiter for an exec.
    pub pid: u32,
    /// Pid inside the sandbox, for signalling an exec.
    pub internal_pid: Option<u32>,
    pub status: Status,
    pub io: ProcessIo,
    exit: watch::Sender<Option<Exit>>,
}

impl Process {
    pub fn new(stdio: StdioPaths) -> Self {
        Process {
            stdio,
            pid: 0,
            internal_pid: None,
            status: Status::Created,
            io: ProcessIo::default(),
            exit: watch::channel(None).0,
        }
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub fn set_exited(&mut self, code: i32) -> Exit {
        if let Some(e) = self.exit() {
            return e;
        }
        let e = Exit { code: code as u32, at: SystemTime::now() };
        self.status = Status::Stopped;
        self.exit.send_replace(Some(e));
        e
    }

    /// Resolves when the process has exited (None if it was deleted first); usable without
    /// holding the container's lock.
    pub fn exited(&self) -> impl std::future::Future<Output = Option<Exit>> + Send + 'static {
        let mut rx = self.exit.subscribe();
        async move { rx.wait_for(|e| e.is_some()).await.ok().and_then(|e| *e) }
    }

    pub fn can_start(&self) -> Result<()> {
        match self.status {
            Status::Created => Ok(()),
            s => Err(Error::FailedPrecondition(format!("cannot start a process that is {s:?}"))),
        }
    }

    pub fn can_delete(&self) -> Result<()> {
        match self.status {
            Status::Running => Err(Error::FailedPrecondition("cannot delete a running process".into())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_the_first_exit_only() {
        let mut p = Process::new(StdioPaths::default());
        let waiter = p.exited();
        assert!(p.can_start().is_ok());
        p.status = Status::Running;
        assert!(p.can_delete().is_err());
        let first = p.set_exited(3);
        assert_eq!(p.set_exited(9), first, "a second exit does not overwrite the first");
        assert_eq!(waiter.await.unwrap().code, 3);
        assert_eq!(p.exited().await.unwrap().code, 3, "late waiters resolve at once");
        assert!(p.can_start().is_err());
        assert!(p.can_delete().is_ok());
    }
}
