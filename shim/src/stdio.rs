//! A process's stdio: pipes to the process, copied to and from what containerd gave us
//! (fifos, `file://` paths, or nothing).
//!
//! Fifo pitfalls handled here: no open blocks a request waiting for containerd; the shim holds
//! an unread reader on each output fifo so the copy survives a containerd restart (no EPIPE); and
//! stdin ends when the client's writer closes or at CloseIO, whichever comes first, never because
//! the client had not opened its end yet (ctr 1.6 may close stdin without sending CloseIO).

use std::{
    fs::{File, OpenOptions},
    os::{fd::OwnedFd, unix::fs::OpenOptionsExt},
    path::Path,
    process::Stdio as ChildStdio,
    sync::Mutex,
    time::Duration,
};

use log::debug;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::unix::pipe,
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    error::{Error, Result},
    runsc::ProcessStdio,
};

/// How long output still buffered in a pipe may take to reach containerd once the process is gone.
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of a process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    outputs: Vec<JoinHandle<()>>,
    /// Ends the stdin copy, closing the process's stdin.
    stdin_stop: Mutex<Option<oneshot::Sender<()>>>,
    cancel: Option<watch::Sender<bool>>,
}

enum Target {
    None,
    Fifo(String),
    File(String),
}

fn target(path: &str) -> Result<Target> {
    if path.is_empty() {
        return Ok(Target::None);
    }
    if let Some(rest) = path.strip_prefix("file://") {
        return Ok(Target::File(rest.to_string()));
    }
    if let Some(scheme) = path.split_once("://").map(|(s, _)| s) {
        return Err(Error::Unimplemented(format!("stdio scheme {scheme}:// is not supported ({path})")));
    }
    Ok(Target::Fifo(path.to_string()))
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe")(e.into()))
}

fn nonblocking(path: &str, opts: &mut OpenOptions) -> Result<File> {
    opts.custom_flags(libc::O_NONBLOCK).open(path).map_err(Error::io(format!("open {path}")))
}

impl ProcessIo {
    /// Makes the pipes for `paths` and starts copying. Returns what runsc hands the process.
    pub fn open(paths: &StdioPaths) -> Result<(ProcessStdio, ProcessIo)> {
        if paths.terminal {
            return Err(Error::Unimplemented("terminals (ctr -t) are not supported yet".into()));
        }
        let (cancel, cancelled) = watch::channel(false);
        let mut io = ProcessIo::default();
        io.cancel = Some(cancel);
        let mut stdio = ProcessStdio::null();

        match target(&paths.stdin)? {
            Target::None => {}
            Target::File(_) => return Err(Error::Unimplemented("stdin from a file:// path".into())),
            Target::Fifo(path) => {
                let (r, w) = pipe_pair()?;
                let to = pipe::Sender::from_owned_fd(w).map_err(Error::io("stdin pipe"))?;
                stdio.stdin = ChildStdio::from(r);
                let (stop, stopped) = oneshot::channel();
                *io.stdin_stop.lock().unwrap() = Some(stop);
                tokio::spawn(copy_stdin(path, to, stopped));
            }
        }
        stdio.stdout = io.output(&paths.stdout, cancelled.clone())?;
        stdio.stderr = io.output(&paths.stderr, cancelled)?;
        Ok((stdio, io))
    }

    fn output(&mut self, path: &str, cancelled: watch::Receiver<bool>) -> Result<ChildStdio> {
        let to: Box<dyn AsyncWrite + Send + Unpin> = match target(path)? {
            Target::None => return Ok(ChildStdio::null()),
            Target::File(file) => {
                if let Some(dir) = Path::new(&file).parent() {
                    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
                }
                let f = OpenOptions::new().create(true).append(true).open(&file);
                Box::new(tokio::fs::File::from_std(f.map_err(Error::io(format!("open {file}")))?))
            }
            Target::Fifo(fifo) => {
                // Opened first so the writer's open cannot fail for want of a reader.
                let hold = nonblocking(&fifo, OpenOptions::new().read(true))?;
                let w = nonblocking(&fifo, OpenOptions::new().write(true))?;
                Box::new(HeldSender(pipe::Sender::from_file(w).map_err(Error::io("stdout fifo"))?, hold))
            }
        };
        let (r, w) = pipe_pair()?;
        let from = pipe::Receiver::from_owned_fd(r).map_err(Error::io("output pipe"))?;
        self.outputs.push(tokio::spawn(copy(from, to, cancelled)));
        Ok(ChildStdio::from(w))
    }

    /// CloseIO: the process reads EOF on stdin.
    pub fn close_stdin(&self) {
        if let Some(stop) = self.stdin_stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// The process exited: stop feeding it and let its output drain, for a bounded time
    /// because an orphan inside may still hold the pipe.
    pub async fn finish(&mut self) {
        self.close_stdin();
        let outputs = std::mem::take(&mut self.outputs);
        let drained = async {
            for o in outputs {
                let _ = o.await;
            }
        };
        if tokio::time::timeout(DRAIN, drained).await.is_err() {
            debug!("output still open after the process exited; closing it");
        }
        if let Some(c) = self.cancel.take() {
            let _ = c.send(true);
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        if let Some(c) = self.cancel.take() {
            let _ = c.send(true);
        }
        self.close_stdin();
    }
}

/// Copies the stdin fifo into the process until the client's writer closes or `stop` fires.
/// The open blocks until the client opens its end, so it runs on a thread of its own (never the
/// runtime's blocking pool, which the shim would wait for on exit); `stop` releases it by
/// briefly becoming that writer, retrying until the thread has really entered its open.
async fn copy_stdin(path: String, mut to: pipe::Sender, stop: oneshot::Receiver<()>) {
    let (opened_tx, mut opened) = oneshot::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let _ = opened_tx.send(File::open(p));
    });
    tokio::pin!(stop);
    let mut stopped = false;
    let fifo = tokio::select! {
        f = &mut opened => f.ok(),
        _ = &mut stop => {
            stopped = true;
            let mut f = None;
            for _ in 0..100 {
                let _ = nonblocking(&path, OpenOptions::new().write(true));
                if let Ok(r) = tokio::time::timeout(Duration::from_millis(10), &mut opened).await {
                    f = r.ok();
                    break;
                }
            }
            f
        }
    };
    let Some(Ok(fifo)) = fifo else { return };
    let fifo = if stopped {
        fifo
    } else {
        let Ok(mut from) = pipe::Receiver::from_file(fifo) else { return };
        tokio::select! {
            r = tokio::io::copy(&mut from, &mut to) => {
                if let Err(e) = r { debug!("stdin copy ended: {e}"); }
                return;
            }
            _ = stop => {}
        }
        match from.into_nonblocking_fd() {
            Ok(fd) => File::from(fd),
            Err(_) => return,
        }
    };
    drain(fifo, &mut to).await;
}

/// CloseIO means the client wrote all it will: deliver what is already in the fifo, reading
/// directly (a freshly registered tokio pipe reports nothing ready until the reactor polls).
async fn drain(mut fifo: File, to: &mut pipe::Sender) {
    use std::io::Read;
    let flags = nix::fcntl::fcntl(&fifo, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    if nix::fcntl::fcntl(&fifo, nix::fcntl::FcntlArg::F_SETFL(flags)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = fifo.read(&mut buf) {
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// A fifo writer that keeps the shim's own (never read) reader open as long as it lives.
struct HeldSender(pipe::Sender, #[allow(dead_code)] File);

impl AsyncWrite for HeldSender {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn copy<R, W>(mut from: R, mut to: W, mut cancelled: watch::Receiver<bool>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        r = tokio::io::copy(&mut from, &mut to) => {
            if let Err(e) = r { debug!("stdio copy ended: {e}"); }
        }
        _ = cancelled.wait_for(|c| *c) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn mkfifo(dir: &Path, name: &str) -> String {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn copies_stdin_to_stdout_through_a_process_and_ends_on_close_io() {
        let dir = tempfile::tempdir().unwrap();
        let (stdin, stdout) = (mkfifo(dir.path(), "in"), mkfifo(dir.path(), "out"));
        let paths = StdioPaths { stdin: stdin.clone(), stdout: stdout.clone(), ..Default::default() };
        let (child_stdio, mut io) = ProcessIo::open(&paths).unwrap();
        // The client side, as containerd would open it.
        let mut client_out = std::fs::File::open(&stdout).unwrap();
        let mut client_in = OpenOptions::new().write(true).open(&stdin).unwrap();
        let mut cat = std::process::Command::new("cat")
            .stdin(child_stdio.stdin)
            .stdout(child_stdio.stdout)
            .stderr(child_stdio.stderr)
            .spawn()
            .unwrap();
        client_in.write_all(b"hello\n").unwrap();
        drop(client_in);
        io.close_stdin();
        let status = tokio::task::spawn_blocking(move || cat.wait().unwrap()).await.unwrap();
        assert!(status.success());
        io.finish().await;
        let mut got = String::new();
        client_out.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
    }

    #[tokio::test]
    async fn file_scheme_appends_and_other_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/out.log");
        let paths = StdioPaths { stdout: format!("file://{}", log.display()), ..Default::default() };
        let (child_stdio, mut io) = ProcessIo::open(&paths).unwrap();
        let mut c = std::process::Command::new("echo").arg("hi").stdout(child_stdio.stdout).spawn().unwrap();
        tokio::task::spawn_blocking(move || c.wait().unwrap()).await.unwrap();
        io.finish().await;
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hi\n");

        let bad = StdioPaths { stdout: "binary:///usr/bin/logger".into(), ..Default::default() };
        assert!(ProcessIo::open(&bad).err().unwrap().to_string().contains("binary://"));
    }
}
