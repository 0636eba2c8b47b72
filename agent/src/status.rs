//! The Docker daemon's state as the supervisor sees it, and the in-sandbox socket that reports
//! it: `agent status` for people and probes, `agent status --wait` for the shim's readiness.

use contract::status::{Phase, Report, EXIT_NOT_READY, EXIT_READY, EXIT_UNREACHABLE};
use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::linux::net::SocketAddrExt,
    os::unix::net::{SocketAddr, UnixListener, UnixStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use crate::say;

/// An abstract socket: nothing on the image's filesystem, reachable by `runsc exec` into the
/// sandbox and by what shares its network namespace (nested containers only with --network
/// host). It only tells the daemon's state.
const SOCKET_NAME: &[u8] = b"beta9-sandbox-agent";
/// Lines of dockerd's output kept in memory for status and error messages.
pub const TAIL_LINES: usize = 40;
/// Of those, the ones `agent status` shows.
const SHOWN_LINES: usize = 15;
const TAIL_LINE_MAX: usize = 400;
/// Status requests answered at once; more are dropped.
const MAX_CONNECTIONS: usize = 32;

/// The daemon's state, shared by the supervisor that changes it and the socket that reports it.
pub struct Status {
    state: Mutex<Report>,
    changed: Condvar,
    /// The sandbox came back from a checkpoint, and its dockerd is to start again.
    restored: std::sync::atomic::AtomicBool,
}

impl Status {
    /// A daemon about to start, whose output goes to `log`.
    pub fn new(log: &str) -> Status {
        Status {
            state: Mutex::new(Report {
                phase: Phase::Starting,
                pid: None,
                restarts: 0,
                iptables: "not decided yet".into(),
                network: "not set up yet".into(),
                storage: "not set up yet".into(),
                works: "not known yet".into(),
                does_not_work: "not known yet".into(),
                log: log.to_string(),
                error: None,
                tail: Vec::new(),
            }),
            changed: Condvar::new(),
            restored: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Report> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> Report {
        self.lock().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    pub fn push_line(&self, line: &str) {
        let mut s = self.lock();
        if s.tail.len() == TAIL_LINES {
            s.tail.remove(0);
        }
        let mut end = line.len().min(TAIL_LINE_MAX);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        s.tail.push(line[..end].to_string());
    }

    pub fn tail(&self) -> Vec<String> {
        self.lock().tail.clone()
    }

    /// Marks the sandbox restored and the daemon restarting; returns the daemon's pid, to end.
    pub fn mark_restored(&self) -> Option<i32> {
        self.restored.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut s = self.lock();
        if s.phase == Phase::Ready {
            s.phase = Phase::Restarting;
        }
        self.changed.notify_all();
        s.pid
    }

    /// Whether the sandbox was restored since this was last asked.
    pub fn take_restored(&self) -> bool {
        self.restored.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until the daemon is ready, failed or stopping, at most `limit`.
    pub fn wait_settled(&self, limit: Duration) -> Report {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        while !s.phase.settled() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        s.clone()
    }
}

/// What `agent status` prints: the report with only the last `SHOWN_LINES` of output.
pub fn render(s: &Report) -> String {
    let shown = Report { tail: s.tail[s.tail.len().saturating_sub(SHOWN_LINES)..].to_vec(), ..s.clone() };
    shown.render()
}

/// The containers of a pod share the sandbox's network stack, and with it the abstract socket
/// names: the name carries the container's root filesystem, which `runsc exec` into the same
/// container sees too and another container does not.
fn address() -> io::Result<SocketAddr> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/")?;
    let mut name = SOCKET_NAME.to_vec();
    name.extend(format!("/{:x}:{:x}", root.dev(), root.ino()).as_bytes());
    SocketAddr::from_abstract_name(name)
}

/// Serves status requests on the sandbox's agent socket, each on its own thread.
pub fn serve(status: Arc<Status>) -> io::Result<()> {
    let listener = UnixListener::bind_addr(&address()?)?;
    static OPEN: AtomicUsize = AtomicUsize::new(0);
    std::thread::Builder::new().name("status".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else {
                // Out of descriptors, say: wait for some to close rather than spin in PID 1.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            if OPEN.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                OPEN.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let status = status.clone();
            let spawned = std::thread::Builder::new().name("status-conn".into()).spawn(move || {
                answer(conn, &status);
                OPEN.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                OPEN.fetch_sub(1, Ordering::SeqCst);
            }
        }
    })?;
    Ok(())
}

/// One request line: `status`, or `wait <milliseconds>`.
fn answer(conn: UnixStream, status: &Status) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&conn).take(128).read_line(&mut line).is_err() {
        return;
    }
    let state = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["status"] => status.get(),
        ["restored", ms] => match ms.parse() {
            Ok(ms) => {
                // dockerd goes, and the supervisor starts it again on a netstack made anew.
                if let Some(pid) = status.mark_restored() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                status.wait_settled(Duration::from_millis(ms))
            }
            Err(_) => return,
        },
        ["wait", ms] => match ms.parse() {
            Ok(ms) => status.wait_settled(Duration::from_millis(ms)),
            Err(_) => return,
        },
        _ => return,
    };
    let _ = (&conn).write_all(render(&state).as_bytes());
}

/// `agent status [--wait SECONDS]`: prints the daemon's state; exit 0 only when it is ready.
/// `agent restored --wait SECONDS` (`restored`): first tells PID 1 the sandbox came back from a
/// checkpoint.
pub fn client(args: &[String], restored: bool) -> i32 {
    let wait = match contract::args::parse_status_argv(args) {
        Ok(w) => w,
        Err(e) => {
            say!("{e}");
            return EXIT_UNREACHABLE;
        }
    };
    let request = match wait {
        None => "status\n".to_string(),
        Some(d) if restored => format!("restored {}\n", d.as_millis()),
        Some(d) => format!("wait {}\n", d.as_millis()),
    };
    match ask(&request, wait.unwrap_or_default()) {
        Ok(reply) => {
            print!("{reply}");
            match Report::parse(&reply) {
                Some(r) if r.phase == Phase::Ready => EXIT_READY,
                _ => EXIT_NOT_READY,
            }
        }
        Err(e) => {
            say!("status: cannot reach the agent of this sandbox (is io.beta9.sandbox.docker on?): {e}");
            EXIT_UNREACHABLE
        }
    }
}

/// Sends one request. The agent binds its socket as it starts, so a refused connection is
/// retried briefly: `runsc start` returns before PID 1 has run that far.
fn ask(request: &str, wait: Duration) -> io::Result<String> {
    let addr = address()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut conn = loop {
        match UnixStream::connect_addr(&addr) {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    conn.set_read_timeout(Some(wait + Duration::from_secs(5)))?;
    conn.write_all(request.as_bytes())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_starts_with_the_phase_and_ends_with_the_tail() {
        let status = Status::new("/var/log/d.log");
        status.update(|s| {
            s.phase = Phase::Failed;
            s.error = Some("dockerd exited with 1 before it was ready".into());
        });
        for i in 0..TAIL_LINES + 5 {
            status.push_line(&format!("line {i}"));
        }
        let text = render(&status.get());
        assert!(text.starts_with("dockerd: failed\npid: -\nrestarts: 0\n"), "{text}");
        assert!(text.contains("error: dockerd exited with 1"));
        let shown: Vec<&str> = text.lines().skip_while(|l| *l != "last log lines:").skip(1).collect();
        assert_eq!(shown.len(), SHOWN_LINES);
        assert_eq!(shown.last().copied(), Some(format!("  line {}", TAIL_LINES + 4).as_str()));
    }

    #[test]
    fn waiters_return_when_the_phase_settles_or_time_is_up() {
        let status = Arc::new(Status::new("/var/log/d.log"));
        let s2 = status.clone();
        let t = std::thread::spawn(move || s2.wait_settled(Duration::from_secs(30)).phase);
        status.update(|s| s.phase = Phase::Restarting);
        status.update(|s| s.phase = Phase::Ready);
        assert_eq!(t.join().unwrap(), Phase::Ready);
        status.update(|s| s.phase = Phase::Starting);
        assert_eq!(status.wait_settled(Duration::from_millis(20)).phase, Phase::Starting);
    }
}
