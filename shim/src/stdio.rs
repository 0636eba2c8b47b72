//! A process's stdio: pipes to the process, copied to and from what containerd gave us
//! (fifos, `file://` paths, or nothing).
//!
//! Fifo pitfalls handled here: no open blocks a request waiting for containerd; the shim holds
//! an unread reader on each output fifo so the copy survives a containerd restart (no EPIPE); and
//! stdin ends when the client's writer closes or at CloseIO, whichever comes first, never because
//! the client had not opened its end yet (ctr 1.6 may close stdin without sending CloseIO).

use std::{
    fs::{File, OpenOptions},
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    path::Path,
    process::Stdio as ChildStdio,
    sync::Mutex,
    time::Duration,
};

use log::debug;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::unix::pipe,
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    error::{Error, Result},
    runsc::ProcessStdio,
};

/// How long the client may leave the output unread once the process is gone: its exit waits for
/// its output to reach the client, but not for a client that stopped reading.
const STALL: Duration = Duration::from_secs(10);

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
    /// Tells the output copies that the process has exited.
    exited: Option<watch::Sender<bool>>,
    /// A terminal: the socket runsc sends its master to, then the master itself.
    console: Option<Console>,
    master: Option<std::sync::Arc<OwnedFd>>,
    paths: StdioPaths,
}

/// Where runsc sends a terminal's master (`--console-socket`): a socket in a directory of its
/// own, made with a random name and mode 0700 (as runc's shim does), so no other user can take
/// the name first or connect. Short path: unix sockets end at 108 bytes, and bundle paths with
/// 64-character ids are longer.
struct Console {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    listener: tokio::net::UnixListener,
}

impl Console {
    fn new() -> Result<Console> {
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("beta9-console-XXXXXX"))
            .map_err(|e| Error::io("make a directory for the console socket")(e.into()))?;
        let path = dir.join("console.sock");
        match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => Ok(Console { dir, path, listener }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(Error::io(format!("bind {}", path.display()))(e))
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
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
            let console = Console::new()?;
            let mut stdio = ProcessStdio::null();
            stdio.console_socket = Some(console.path.clone());
            let mut io = ProcessIo::default();
            io.console = Some(console);
            io.paths = paths.clone();
            return Ok((stdio, io));
        }
        let (exited, exit) = watch::channel(false);
        let mut io = ProcessIo::default();
        io.exited = Some(exited);
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
        stdio.stdout = io.output(&paths.stdout, exit.clone())?;
        stdio.stderr = io.output(&paths.stderr, exit)?;
        Ok((stdio, io))
    }

    fn output(&mut self, path: &str, exit: watch::Receiver<bool>) -> Result<ChildStdio> {
        let Some(to) = self.writer(path)? else { return Ok(ChildStdio::null()) };
        let (r, w) = pipe_pair()?;
        let from = pipe::Receiver::from_owned_fd(r).map_err(Error::io("output pipe"))?;
        self.outputs.push(tokio::spawn(copy(from, to, exit)));
        Ok(ChildStdio::from(w))
    }

    /// Where an output goes, opened without blocking; `None` for nowhere.
    fn writer(&self, path: &str) -> Result<Option<Box<dyn AsyncWrite + Send + Unpin>>> {
        let to: Box<dyn AsyncWrite + Send + Unpin> = match target(path)? {
            Target::None => return Ok(None),
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
        Ok(Some(to))
    }

    /// For a terminal, once runsc ran: takes the master runsc sent and copies between it and
    /// the client's fifos. Nothing to do for pipes.
    pub async fn attach_console(&mut self) -> Result<()> {
        let Some(console) = self.console.take() else { return Ok(()) };
        let master = receive_master(&console).await?;
        let master = std::sync::Arc::new(master);
        let (exited, exit) = watch::channel(false);
        self.exited = Some(exited);
        if let Target::Fifo(path) = target(&self.paths.stdin)? {
            let to = master.try_clone().map_err(Error::io("dup the terminal"))?;
            let (stop, stopped) = oneshot::channel();
            *self.stdin_stop.lock().unwrap() = Some(stop);
            tokio::spawn(copy_stdin(path, Terminal::new(to)?, stopped));
        }
        let from = master.try_clone().map_err(Error::io("dup the terminal"))?;
        let out = self.paths.stdout.clone();
        if let Some(to) = self.writer(&out)? {
            self.outputs.push(tokio::spawn(copy(Terminal::new(from)?, to, exit)));
        }
        self.master = Some(master);
        Ok(())
    }

    /// ResizePty: the terminal's window size, which also signals SIGWINCH inside. A process
    /// without a terminal has nothing to resize (clients ask unconditionally, as runc's shim allows).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = &self.master else { return Ok(()) };
        let ws = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&**master), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            return Err(Error::io("resize the terminal")(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// CloseIO: the process reads EOF on stdin.
    pub fn close_stdin(&self) {
        if let Some(stop) = self.stdin_stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// The process exited: stop feeding it, and return once everything it wrote has reached
    /// the client. Its output is in the pipe (or terminal) by now, so it is read without
    /// waiting for an end of file that an orphan, or runsc itself, may hold off.
    pub async fn finish(&mut self) {
        self.close_stdin();
        if let Some(exited) = &self.exited {
            let _ = exited.send(true);
        }
        for o in std::mem::take(&mut self.outputs) {
            let _ = o.await;
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        for o in &self.outputs {
            o.abort();
        }
        self.close_stdin();
    }
}

/// Copies the stdin fifo into the process until the client's writer closes or `stop` fires.
/// The open blocks until the client opens its end, so it runs on a thread of its own (never the
/// runtime's blocking pool, which the shim would wait for on exit); `stop` releases it by
/// briefly becoming that writer, retrying until the thread has really entered its open.
async fn copy_stdin<W: AsyncWrite + Unpin>(path: String, mut to: W, stop: oneshot::Receiver<()>) {
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
async fn drain<W: AsyncWrite + Unpin>(mut fifo: File, to: &mut W) {
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

/// Accepts runsc's connection on the console socket and takes the master it sends. Only a
/// process of the shim's own user (runsc, as root) is heard; any other is turned away.
async fn receive_master(console: &Console) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stream = loop {
        let accepted = tokio::time::timeout_at(deadline, console.listener.accept()).await;
        let (stream, _) = accepted
            .map_err(|_| Error::Other("runsc did not send the terminal".into()))?
            .map_err(Error::io("accept on the console socket"))?;
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == nix::unistd::geteuid().as_raw() => break stream,
            Ok(cred) => log::warn!("console socket {}: refused a connection from uid {}", console.path.display(), cred.uid()),
            Err(e) => log::warn!("console socket {}: refused a connection whose peer is unknown: {e}", console.path.display()),
        }
    };
    let stream = stream.into_std().map_err(Error::io("console socket"))?;
    stream.set_nonblocking(false).map_err(Error::io("console socket"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(Error::io("console socket"))?;
    let fd = tokio::task::spawn_blocking(move || -> Result<OwnedFd> {
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| Error::io("receive the terminal")(e.into()))?;
        for c in msg.cmsgs().map_err(|e| Error::io("receive the terminal")(e.into()))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just gave us this descriptor; nobody else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(Error::Other("runsc's console message carried no terminal".into()))
    })
    .await
    .map_err(|e| Error::Other(format!("receive the terminal: {e}")))??;
    Ok(fd)
}

/// A terminal master, read and written asynchronously (one per direction, each on its own dup).
/// Reading it gives `EIO` once every process holding the other side has gone: its end of file.
struct Terminal(tokio::io::unix::AsyncFd<File>);

impl AsFd for Terminal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

impl Terminal {
    fn new(fd: OwnedFd) -> Result<Self> {
        set_nonblocking(&fd)?;
        // SAFETY: the AsyncFd owns the File, so the descriptor stays open while it is registered.
        unsafe { tokio::io::unix::AsyncFd::register(File::from(fd)) }
            .map(Terminal)
            .map_err(|_| Error::Other("cannot register the terminal with the reactor".into()))
    }
}

impl AsyncRead for Terminal {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|f| f.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return std::task::Poll::Ready(Ok(())),
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Terminal {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(buf)) {
                Ok(r) => return std::task::Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| Error::io("fcntl")(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| Error::io("fcntl")(e.into()))?;
    Ok(())
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

/// An output source whose descriptor can also be read directly, without the reactor.
trait Source: AsyncRead + AsFd + Unpin {}
impl Source for pipe::Receiver {}
impl Source for Terminal {}

/// Copies a process's output to the client until its end, or until the process has exited and
/// what it left in the pipe is delivered. Chunks are written whole: nothing read is dropped.
async fn copy<R: Source, W: AsyncWrite + Unpin>(mut from: R, mut to: W, mut exited: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        let n = tokio::select! {
            biased;
            r = from.read(&mut buf) => match r {
                Ok(0) => break true,
                Ok(n) => n,
                Err(e) => {
                    debug!("stdio copy ended: {e}");
                    break true;
                }
            },
            _ = exited.wait_for(|e| *e) => break false,
        };
        if !deliver(&mut to, &buf[..n]).await {
            return;
        }
    };
    // Exited: read straight from the descriptor, as the reactor may not have seen the last
    // data arrive, until it is empty (EAGAIN) or ended (EOF, or EIO for a terminal).
    while !ended {
        match nix::unistd::read(from.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !deliver(&mut to, &buf[..n]).await {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    // A file target writes in the background until flushed.
    let _ = tokio::time::timeout(STALL, to.flush()).await;
}

/// Writes a chunk to the client; false if it cannot take it, or left it unread for `STALL`.
async fn deliver<W: AsyncWrite + Unpin>(to: &mut W, chunk: &[u8]) -> bool {
    match tokio::time::timeout(STALL, to.write_all(chunk)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!("stdio copy ended: {e}");
            false
        }
        Err(_) => {
            debug!("the client did not read the output for {STALL:?}; dropping the rest");
            false
        }
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

    #[tokio::test(flavor = "multi_thread")]
    async fn terminal_master_arrives_on_the_console_socket_and_can_be_resized() {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let stdout = mkfifo(dir.path(), "out");
        let paths = StdioPaths { stdout: stdout.clone(), terminal: true, ..Default::default() };
        let (child_stdio, mut io) = ProcessIo::open(&paths).unwrap();
        let socket = child_stdio.console_socket.clone().expect("a console socket for runsc");
        // What runsc does: send the master of a new pty over the socket.
        let pty = nix::pty::openpty(None, None).unwrap();
        let conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let fds = [pty.master.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"console")];
        sendmsg::<()>(conn.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        io.attach_console().await.unwrap();
        // The shim holds the fifo's writer now, so the client's open does not block.
        let mut client_out = std::fs::File::open(&stdout).unwrap();
        assert!(!socket.exists() && !socket.parent().unwrap().exists(), "the console socket and its directory go once used");

        io.resize(100, 30).unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a winsize struct that lives for the call.
        unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));

        // The process writes to its side of the terminal; the client reads it from its fifo.
        let mut slave = std::fs::File::from(pty.slave);
        slave.write_all(b"hi\n").unwrap();
        drop(slave);
        drop(pty.master);
        io.finish().await;
        let mut got = String::new();
        client_out.read_to_string(&mut got).unwrap();
        assert_eq!(got.replace('\r', ""), "hi\n");
    }

    /// What runsc does with a console socket: connect and send a terminal's master.
    fn send_master(socket: &std::path::Path, master: &OwnedFd) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
        let iov = [std::io::IoSlice::new(b"console")];
        sendmsg::<()>(conn.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&[master.as_raw_fd()])], MsgFlags::empty(), None).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn console_sockets_are_private_and_hear_only_the_shims_own_user() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // The names the shim once used, taken by another user: they no longer matter.
        for n in 0..3 {
            let _ = std::fs::create_dir(std::env::temp_dir().join(format!("beta9-console-{}-{n}.sock", std::process::id())));
        }
        let paths = StdioPaths { terminal: true, ..Default::default() };
        let (a, mut io) = ProcessIo::open(&paths).unwrap();
        let (b, _other) = ProcessIo::open(&paths).unwrap();
        let (a, b) = (a.console_socket.unwrap(), b.console_socket.unwrap());
        let dir = a.parent().unwrap().to_path_buf();
        assert_ne!(dir, b.parent().unwrap(), "a directory per terminal");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o700, nix::unistd::geteuid().as_raw()), "{}", dir.display());

        // Opened up on purpose, the socket still turns away a process of another user: nobody
        // (uid 65534) connects and sends a terminal of its own first.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o777)).unwrap();
        let script = "import socket,sys,os,array; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
            s.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0]))]); print('sent', flush=True); sys.stdin.read()";
        let mut intruder = std::process::Command::new("python3");
        std::os::unix::process::CommandExt::uid(&mut intruder, 65534);
        let mut intruder = intruder
            .args(["-c", script])
            .arg(&a)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(intruder.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "sent\n", "the intruder connected");
        let pty = nix::pty::openpty(None, None).unwrap();
        send_master(&a, &pty.master);
        io.attach_console().await.unwrap();
        drop(intruder.stdin.take());
        let _ = intruder.wait();
        // The master the shim holds is runsc's pty, not the intruder's stdin.
        io.resize(77, 22).unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a winsize struct that lives for the call.
        unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&pty.slave), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_col, ws.ws_row), (77, 22));
        for n in 0..3 {
            let _ = std::fs::remove_dir(std::env::temp_dir().join(format!("beta9-console-{}-{n}.sock", std::process::id())));
        }
    }
}
