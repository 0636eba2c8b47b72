//! dockerd's life: started detached with its output kept (in memory for the status, on disk
//! rotated), ready when `GET /_ping` answers, checked once ready (runc, bridges, storage), and
//! started again after a crash with a growing delay, from a clean network stack.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    os::{fd::AsFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    fcntl::OFlag,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        inotify::{AddWatchFlags, InitFlags, Inotify},
        signal::{kill, Signal},
    },
    unistd::{pipe2, Pid},
};

use contract::{args::Network, status::Phase};

use super::{run_helper, Supervisor, SOCKET};
use crate::{
    children::{find_in_path, Children, Detach, DEFAULT_PATH},
    nested,
};

/// Where dockerd records the containerd it started.
const CONTAINERD_PID: &str = "/var/run/docker/containerd/containerd.pid";
/// The log file is rotated once (to `.1`) when it reaches this size.
const LOG_CAP: u64 = 4 << 20;
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A daemon that stayed ready this long crashed anew: its next restart is not delayed further.
const STABLE: Duration = Duration::from_secs(60);

type Version = (u32, u32, u32);

enum Outcome {
    Ready,
    Exited(i32),
    Stopping,
}

impl Supervisor {
    pub(super) fn run(mut self, workload: Vec<String>) {
        let mut workload = Some(workload).filter(|w| !w.is_empty());
        let started_at = Instant::now();
        let args = match self.prepare() {
            Ok(args) => args,
            Err(e) => {
                self.fail(e);
                self.start_workload(&mut workload);
                return;
            }
        };
        // Asked while dockerd starts (`runc --version` takes ~60-90 ms in gVisor), answered at
        // its first readiness.
        let mut runc = {
            let (children, args) = (self.children.clone(), self.opts.args.clone());
            let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
            Some(std::thread::spawn(move || runc_version(&children, &path, &args)))
        };
        let mut backoff = BACKOFF_FIRST;
        let mut ever_ready = false;
        while !self.stopping() {
            let started = Instant::now();
            let (pid, drained) = match self.launch(&args) {
                Ok(l) => l,
                Err(e) => {
                    self.fail(format!("cannot start dockerd: {e}"));
                    self.start_workload(&mut workload);
                    return;
                }
            };
            let code = match self.wait_ready(pid) {
                Outcome::Stopping => return,
                Outcome::Ready => {
                    if let Some(check) = runc.take() {
                        if let Err(e) = self.check_runc(check.join().ok().flatten()) {
                            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                            self.kill_leftover_containerd();
                            self.fail(e);
                            self.start_workload(&mut workload);
                            return;
                        }
                        self.note_bridge_limits();
                    }
                    self.rules_ready();
                    self.note_storage_driver();
                    self.status.update(|s| s.phase = Phase::Ready);
                    self.note(&format!(
                        "dockerd (pid {pid}) is ready after {:?} ({:?} since the agent began preparing the sandbox)",
                        started.elapsed(),
                        started_at.elapsed()
                    ));
                    ever_ready = true;
                    self.start_workload(&mut workload);
                    match self.wait_exit(pid) {
                        Some(code) => code,
                        None => return,
                    }
                }
                Outcome::Exited(code) => code,
            };
            self.children.forget(pid);
            // What dockerd left in its process group goes; its containerd, in a session of its
            // own, holds dockerd's output pipe too, so it goes before the output is drained.
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            self.kill_leftover_containerd();
            // Its output may still be in the pipe: take it before quoting the tail.
            let _ = drained.recv_timeout(Duration::from_secs(1));
            if self.stopping() {
                return;
            }
            if self.status.take_restored() {
                // Restored from a checkpoint: no crash, no backoff; the namespace it came back in
                // has an address of its own.
                if self.opts.network == contract::args::Network::Sandbox {
                    self.uplink = crate::uplink::find().ok();
                }
                self.note(&format!(
                    "restored from a checkpoint: dockerd (pid {pid}) starts again on bridges made anew (gVisor restores no interface made in the sandbox)"
                ));
                self.reset_network();
                continue;
            }
            let tail = self.status.tail();
            if !ever_ready {
                self.fail(format!("dockerd exited with status {code} before it was ready"));
                self.start_workload(&mut workload);
                return;
            }
            if started.elapsed() > STABLE {
                backoff = BACKOFF_FIRST;
            }
            self.status.update(|s| {
                s.phase = Phase::Restarting;
                s.pid = None;
                s.restarts += 1;
                s.error = Some(format!("dockerd exited with status {code}"));
            });
            self.note(&format!(
                "dockerd (pid {pid}) exited with status {code}; restarting in {backoff:?}; its last lines:\n  {}",
                tail.join("\n  ")
            ));
            if self.sleep(backoff) {
                return;
            }
            self.reset_network();
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Fails when the image's runc would refuse every nested container (nested.rs).
    fn check_runc(&self, runc: Option<(PathBuf, Version)>) -> Result<(), String> {
        let Some((runc, v)) = runc else { return Ok(()) };
        if nested::runc_refuses_gvisor_proc(v) {
            return Err(format!(
                "{} is runc {}.{}.{}, which refuses gVisor's /proc (runc 1.2 and later require its root inode to be 1, \
                 and this gVisor's is not), so every nested container would fail (`unsafe procfs detected`); \
                 use an image whose runc is older than 1.2 (Debian trixie's docker.io comes with runc 1.1.15), \
                 or run them with crun: an /etc/docker/daemon.json whose default-runtime is crun with runtimeArgs \
                 [\"--cgroup-manager=disabled\"] (gVisor has no blkio cgroup), and nested containers on --network host",
                runc.display(),
                v.0,
                v.1,
                v.2
            ));
        }
        self.note(&format!("nested containers run on runc {}.{}.{} ({})", v.0, v.1, v.2, runc.display()));
        Ok(())
    }

    /// Once dockerd answers: a dockerd that cannot attach containers to bridge networks here
    /// (nested.rs) is told in the status, so `docker run`'s failure is not a surprise. Its
    /// version comes from its own API (running `dockerd --version` costs ~250 ms in gVisor).
    fn note_bridge_limits(&self) {
        if self.opts.network == Network::Host || nested::bridge_chosen(&self.opts.args) {
            return;
        }
        let Some(v) = server_version(Path::new(SOCKET), PING_TIMEOUT).and_then(|v| nested::parse_version(&v)) else { return };
        if nested::dockerd_bridge_fails(v) {
            let network = self.opts.network;
            self.status.update(|s| {
                s.works = nested::works(network, false);
                s.does_not_work = nested::does_not_work(network, false);
            });
            let limit = format!(
                "dockerd {}.{} cannot attach containers to bridge networks in this gVisor (`failed to subscribe to link \
                 updates: permission denied`): nested containers need --network host or none (or dockerd --bridge=none)",
                v.0, v.1
            );
            self.note(&limit);
            self.status.update(|s| s.network = format!("{}; but {limit}", s.network));
        }
    }

    /// The storage driver dockerd chose goes into the status, from its start-up line.
    fn note_storage_driver(&self) {
        let driver = nested::storage_driver(&self.status.tail()).unwrap_or_else(|| "not in dockerd's log".into());
        self.status.update(|s| {
            let store = s.storage.split("; storage driver ").next().unwrap_or_default().to_string();
            s.storage = format!("{store}; storage driver {driver}");
        });
    }

    /// Starts dockerd in its own session with its output going to the log; returns its pid and
    /// a channel that disconnects once all of its output was read.
    fn launch(&self, args: &[String]) -> io::Result<(i32, mpsc::Receiver<()>)> {
        let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
        self.status.update(|s| s.tail.clear());
        let pid = self.children.spawn_with_env(args, Detach::Session, Some(std::os::fd::AsRawFd::as_raw_fd(&w)), &self.env)?;
        drop(w);
        self.status.update(|s| s.pid = Some(pid));
        self.note(&format!("started {} (pid {pid})", args.join(" ")));
        let (done, drained) = mpsc::channel::<()>();
        let (status, log) = (self.status.clone(), self.log.clone());
        std::thread::Builder::new().name("dockerd-log".into()).spawn(move || {
            let _done = done;
            for line in BufReader::new(File::from(r)).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                status.push_line(&line);
                if let Some(log) = &log {
                    log.lock().unwrap_or_else(|e| e.into_inner()).write_line(&line);
                }
            }
        })?;
        Ok((pid, drained))
    }

    /// Pings the daemon until it answers, it exits, or the sandbox stops. Woken by the socket
    /// appearing (inotify) and by exits; the short backoff only covers dockerd's bind-to-listen gap.
    fn wait_ready(&self, pid: i32) -> Outcome {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
        let dir = std::fs::canonicalize("/var/run").unwrap_or_else(|_| PathBuf::from("/var/run"));
        if let Some(i) = &inotify {
            let _ = i.add_watch(&dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
        }
        let mut backoff = Duration::from_millis(5);
        loop {
            if let Some(code) = self.children.exit_of(pid) {
                return Outcome::Exited(code);
            }
            if self.stopping() {
                return Outcome::Stopping;
            }
            if ping(Path::new(SOCKET), PING_TIMEOUT) {
                return Outcome::Ready;
            }
            let wake = self.children.wake_fd();
            let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            if let Some(i) = &inotify {
                fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, PollTimeout::try_from(backoff).unwrap_or(PollTimeout::MAX));
            self.children.drain_wake();
            if let Some(i) = &inotify {
                let _ = i.read_events();
            }
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// The containerd a crashed dockerd started lives in a session of its own and may outlive
    /// it; a new dockerd would try to reuse it half-dead. It goes, and is reaped, first.
    fn kill_leftover_containerd(&self) {
        let Ok(text) = std::fs::read_to_string(CONTAINERD_PID) else { return };
        let Ok(pid) = text.trim().parse::<i32>() else { return };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid <= 1 || !String::from_utf8_lossy(&cmdline).contains("containerd") {
            return;
        }
        // Watched before the signal, so its exit cannot slip past us.
        self.children.watch(pid);
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() && self.children.wait(pid, Duration::from_secs(5)).is_none() {
            self.note(&format!("the old containerd (pid {pid}) did not exit"));
        }
        self.children.forget(pid);
    }

    /// Waits for dockerd's exit; None when the sandbox is stopping instead.
    fn wait_exit(&self, pid: i32) -> Option<i32> {
        loop {
            if let Some(code) = self.children.exit_of(pid) {
                return Some(code);
            }
            if self.stopping() {
                return None;
            }
            let mut fds = [PollFd::new(self.children.wake_fd().as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::NONE);
            self.children.drain_wake();
        }
    }

    /// Sleeps, unless the sandbox starts stopping; returns whether it is stopping.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while !self.stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(self.children.wake_fd().as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX));
            self.children.drain_wake();
        }
        true
    }
}

/// The image's runc and its version, unless a runtime was chosen in dockerd's arguments or
/// daemon.json.
fn runc_version(children: &Children, path: &str, args: &[String]) -> Option<(PathBuf, Version)> {
    let daemon_json = std::fs::read_to_string("/etc/docker/daemon.json").ok();
    if nested::runtime_chosen(args, daemon_json.as_deref()) {
        return None;
    }
    let runc = find_in_path("runc", path)?;
    let (_, out) = run_helper(children, &[runc.to_string_lossy().into_owned(), "--version".into()]).ok()?;
    Some((runc, nested::parse_version(&out)?))
}

/// `GET /_ping` on the daemon's socket; true only for a 200 answer within `timeout`.
pub fn ping(socket: &Path, timeout: Duration) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut head = [0u8; 16];
        let mut n = 0;
        while n < head.len() {
            match s.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        let head = &head[..n];
        Ok(head.starts_with(b"HTTP/1.") && head.get(8..13) == Some(b" 200 "))
    };
    attempt().unwrap_or(false)
}

/// `GET /version` on the daemon's socket: the `Version` of its answer.
fn server_version(socket: &Path, timeout: Duration) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut answer = String::new();
    let _ = s.take(64 << 10).read_to_string(&mut answer);
    let rest = answer.split("\"Version\":\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

/// dockerd's output on disk, bounded: one rotation to `.1` at `LOG_CAP`.
pub(super) struct LogFile {
    path: PathBuf,
    file: File,
    written: u64,
}

impl LogFile {
    pub(super) fn open(path: &Path) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(LogFile { path: path.to_path_buf(), file, written })
    }

    pub(super) fn write_line(&mut self, line: &str) {
        if self.written + line.len() as u64 + 1 > LOG_CAP {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = std::fs::rename(&self.path, rotated);
            if let Ok(f) = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path) {
                self.file = f;
                self.written = 0;
            }
        }
        if writeln!(self.file, "{line}").is_ok() {
            self.written += line.len() as u64 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::tempdir;
    use std::os::unix::net::UnixListener;

    #[test]
    fn ping_wants_a_200_from_the_socket() {
        let dir = tempdir();
        let sock = dir.join("d.sock");
        assert!(!ping(&sock, Duration::from_millis(100)), "no socket");
        let l = UnixListener::bind(&sock).unwrap();
        let serve = |answer: &'static [u8]| {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /_ping HTTP/1.0\r\n"));
            c.write_all(answer).unwrap();
        };
        std::thread::scope(|s| {
            s.spawn(|| serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"));
            assert!(ping(&sock, Duration::from_secs(5)));
        });
        std::thread::scope(|s| {
            s.spawn(|| serve(b"HTTP/1.1 500 Internal Server Error\r\n\r\n"));
            assert!(!ping(&sock, Duration::from_secs(5)));
        });
        // Accepted but never answered: the per-request timeout ends it.
        let t = Instant::now();
        assert!(!ping(&sock, Duration::from_millis(100)));
        assert!(t.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn log_file_is_rotated_at_its_cap() {
        let dir = tempdir();
        let path = dir.join("d.log");
        let mut log = LogFile::open(&path).unwrap();
        let line = "x".repeat(1023);
        for _ in 0..(LOG_CAP / 1024 + 10) {
            log.write_line(&line);
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let rotated = std::fs::metadata(dir.join("d.log.1")).unwrap().len();
        assert!(size < LOG_CAP && rotated <= LOG_CAP && size > 0, "{size} {rotated}");
        let _ = std::fs::remove_dir_all(dir);
    }

}
