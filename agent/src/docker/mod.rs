//! The Docker supervisor: prepares the sandbox for dockerd, runs it detached with its output
//! kept, decides readiness by `GET /_ping`, and restarts it when it crashes after being ready.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    os::{fd::AsFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use nix::{
    fcntl::OFlag,
    mount::{mount, MsFlags},
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        inotify::{AddWatchFlags, InitFlags, Inotify},
        signal::{kill, Signal},
    },
    unistd::{pipe2, Pid},
};

use contract::{
    args::{Docker as DockerOptions, Network},
    status::Phase,
};

use crate::{
    children::{exec_failure_code, find_in_path, Children, Detach, DEFAULT_PATH},
    nested, say,
    status::Status,
    uplink::{self, Uplink},
};

pub const SOCKET: &str = "/var/run/docker.sock";
/// Where dockerd records the containerd it started.
const CONTAINERD_PID: &str = "/var/run/docker/containerd/containerd.pid";
/// dockerd's network store, which a restarted dockerd would rebuild the old bridge from.
const NETWORK_STORE: &str = "/var/lib/docker/network/files/local-kv.db";
/// dockerd's default bridge, left behind by a crashed daemon.
const BRIDGE: &str = "docker0";
pub const LOG: &str = "/var/log/beta9/dockerd.log";
/// The log file is rotated once (to `.1`) when it reaches this size.
const LOG_CAP: u64 = 4 << 20;
/// gVisor implements these cgroup v1 controllers (it has no blkio); dockerd needs devices.
const CGROUPS: [&str; 7] = ["cpu", "cpuacct", "cpuset", "devices", "memory", "pids", "job"];
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A daemon that stayed ready this long crashed anew: its next restart is not delayed further.
const STABLE: Duration = Duration::from_secs(60);
/// How long a helper (the iptables probe) may take.
const HELPER_LIMIT: Duration = Duration::from_secs(10);
/// How long dockerd gets to stop its containers when the sandbox stops.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running supervisor, as the PID-1 loop holds it.
pub struct Docker {
    status: Arc<Status>,
    stopping: Arc<AtomicBool>,
}

impl Docker {
    /// Starts the status socket and the supervisor thread. `workload` runs once the daemon is
    /// ready (or has failed), so the workload's first docker command finds it answering.
    pub fn start(opts: DockerOptions, children: Arc<Children>, workload: Vec<String>) -> io::Result<Docker> {
        let status = Arc::new(Status::new(LOG));
        crate::status::serve(status.clone())?;
        let stopping = Arc::new(AtomicBool::new(false));
        let sup = Supervisor { opts, children, status: status.clone(), stopping: stopping.clone(), log: None };
        std::thread::Builder::new().name("docker".into()).spawn(move || sup.run(workload))?;
        Ok(Docker { status, stopping })
    }

    /// Asks the supervisor to stop and signals dockerd; returns the daemon's pid to wait for.
    pub fn stop(&self, children: &Children) -> Option<i32> {
        self.stopping.store(true, Ordering::SeqCst);
        self.status.update(|s| s.phase = Phase::Stopping);
        children.wake();
        let pid = self.status.get().pid?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        Some(pid)
    }
}

struct Supervisor {
    opts: DockerOptions,
    children: Arc<Children>,
    status: Arc<Status>,
    stopping: Arc<AtomicBool>,
    log: Option<Arc<Mutex<LogFile>>>,
}

type Version = (u32, u32, u32);

enum Outcome {
    Ready,
    Exited(i32),
    Stopping,
}

impl Supervisor {
    fn run(mut self, workload: Vec<String>) {
        let mut workload = Some(workload).filter(|w| !w.is_empty());
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
                    self.status.update(|s| s.phase = Phase::Ready);
                    self.note(&format!("dockerd (pid {pid}) is ready after {:?}", started.elapsed()));
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
            self.forget_networks();
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Logs a supervisor event to the container's stderr and to the daemon's log.
    fn note(&self, msg: &str) {
        say!("{msg}");
        if let Some(log) = &self.log {
            log.lock().unwrap_or_else(|e| e.into_inner()).write_line(&format!("beta9-sandbox-agent: {msg}"));
        }
    }

    fn fail(&self, error: String) {
        self.note(&error);
        self.status.update(|s| {
            s.phase = Phase::Failed;
            s.pid = None;
            s.error = Some(error);
        });
    }

    fn start_workload(&self, workload: &mut Option<Vec<String>>) {
        if let Some(argv) = workload.take() {
            if let Err(e) = self.children.spawn_workload(&argv) {
                say!("exec {}: {e}", argv[0]);
                self.children.workload_failed(exec_failure_code(&e));
            }
        }
    }

    /// Everything dockerd needs from the sandbox; returns its arguments.
    fn prepare(&mut self) -> Result<Vec<String>, String> {
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
        let dockerd = find_in_path("dockerd", &path)
            .ok_or_else(|| format!("dockerd was not found in the image (PATH={path})"))?;
        if let Some(dir) = Path::new(LOG).parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        self.log = Some(Arc::new(Mutex::new(LogFile::open(Path::new(LOG)).map_err(|e| format!("open {LOG}: {e}"))?)));
        self.mount_cgroups()?;
        let size = self.opts.tmpfs_size.as_ref().map(|s| format!("size={s}"));
        mount_tmpfs("/var/lib/docker", &[Some("mode=711".to_string()), size].into_iter().flatten().collect::<Vec<_>>().join(","))?;
        // Debian's /var/run is a symlink to /run, which the image may not have.
        ensure_dir(Path::new("/run")).map_err(|e| format!("create /run: {e}"))?;
        ensure_dir(Path::new("/var/run")).map_err(|e| format!("create /var/run: {e}"))?;

        let mut args = vec![dockerd.to_string_lossy().into_owned()];
        let iptables = if self.opts.args.iter().any(|a| a.starts_with("--iptables")) {
            "as given in the dockerd arguments".to_string()
        } else {
            match self.probe_iptables(&path) {
                Ok(()) => "on (the sandbox's netstack supports NAT with MASQUERADE and addrtype)".to_string(),
                Err(why) => {
                    args.push("--iptables=false".into());
                    format!("off, --iptables=false ({why})")
                }
            }
        };
        self.note(&format!("iptables {iptables}"));
        self.status.update(|s| s.iptables = iptables);
        let network = match self.opts.network {
            // gVisor lets dockerd neither make a bridge nor turn on forwarding on the host's stack.
            Network::Host => {
                args.extend(["--bridge=none".to_string(), "--ip-forward=false".to_string()]);
                "host: no bridge (--bridge=none --ip-forward=false); nested containers use --network host".to_string()
            }
            Network::None => "none: loopback only; nested containers reach each other on docker0".to_string(),
            Network::Sandbox => match self.route_out(&path) {
                Ok(up) => {
                    args.push(format!("--mtu={}", up.mtu));
                    format!("sandbox: {} {} mtu {}: forwarding on, SNAT (tcp, udp) to {}", up.device, up.address, up.mtu, up.address)
                }
                Err(why) => format!("sandbox: nested containers reach no other host: {why}"),
            },
        };
        self.note(&format!("network {network}"));
        self.status.update(|s| s.network = network);
        args.extend(self.opts.args.iter().cloned());
        Ok(args)
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
            let limit = format!(
                "dockerd {}.{} cannot attach containers to bridge networks in this gVisor (`failed to subscribe to link \
                 updates: permission denied`): nested containers need --network host or none (or dockerd --bridge=none)",
                v.0, v.1
            );
            self.note(&limit);
            self.status.update(|s| s.network = format!("{}; but {limit}", s.network));
        }
    }

    /// cgroup v1 hierarchies, unless the sandbox already has cgroups mounted.
    fn mount_cgroups(&self) -> Result<(), String> {
        const ROOT: &str = "/sys/fs/cgroup";
        if is_mountpoint(ROOT) {
            return Ok(());
        }
        mount_tmpfs(ROOT, "mode=755")?;
        let mut missing = Vec::new();
        for c in CGROUPS {
            let dir = Path::new(ROOT).join(c);
            let r = ensure_dir(&dir)
                .map_err(|e| e.to_string())
                .and_then(|_| mount(Some("cgroup"), &dir, Some("cgroup"), MsFlags::empty(), Some(c)).map_err(|e| e.to_string()));
            if let Err(e) = r {
                missing.push(format!("{c}: {e}"));
            }
        }
        if !missing.is_empty() {
            // dockerd says which controller it cannot do without; the rest is noted only.
            self.note(&format!("cgroup controllers not mounted: {}", missing.join(", ")));
        }
        Ok(())
    }

    /// Lets nested containers reach other hosts through the sandbox's uplink: forwarding on,
    /// and SNAT to the uplink's address (gVisor's netstack has no MASQUERADE).
    fn route_out(&self, path: &str) -> Result<Uplink, String> {
        let up = uplink::find().map_err(|e| format!("no uplink: {e}"))?;
        std::fs::write(uplink::IP_FORWARD, "1").map_err(|e| format!("cannot turn on forwarding ({}): {e}", uplink::IP_FORWARD))?;
        let iptables = uplink::legacy_iptables(path).ok_or("the image has no iptables-legacy, which gVisor's netstack needs for SNAT")?;
        for rule in uplink::snat_rules(&iptables, &up) {
            let (code, out) = self.run_helper(&rule).map_err(|e| format!("cannot run {}: {e}", rule[0]))?;
            if code != 0 {
                return Err(format!("`{}` failed: {}", rule[1..].join(" "), first_line(&out)));
            }
        }
        Ok(up)
    }

    /// dockerd's default iptables setup needs a nat table with MASQUERADE and `-m addrtype`:
    /// try exactly that in a scratch chain with the iptables dockerd runs (`iptables`), and say
    /// what the legacy backend, the one gVisor's netstack speaks, answers too.
    fn probe_iptables(&self, path: &str) -> Result<(), String> {
        let Some(iptables) = find_in_path("iptables", path) else {
            return Err("iptables was not found in the image".into());
        };
        let first = match self.probe_with(&iptables) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match uplink::legacy_iptables(path).filter(|l| std::fs::canonicalize(l).ok() != std::fs::canonicalize(&iptables).ok()) {
            Some(legacy) => match self.probe_with(&legacy) {
                Ok(()) => Err(format!("{first}; {} would do, but dockerd runs iptables", legacy.display())),
                Err(e) => Err(format!("{first}; {e}")),
            },
            None => Err(first),
        }
    }

    fn probe_with(&self, iptables: &Path) -> Result<(), String> {
        let bin = iptables.to_string_lossy().into_owned();
        let name = iptables.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let chain = "BETA9-PROBE";
        let steps: [&[&str]; 3] = [
            &["-N", chain],
            &["-A", chain, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN"],
            &["-A", chain, "-j", "MASQUERADE"],
        ];
        let mut result = Ok(());
        for (i, step) in steps.iter().enumerate() {
            let mut argv: Vec<String> = [bin.as_str(), "-w", "-t", "nat"].iter().map(|s| s.to_string()).collect();
            argv.extend(step.iter().map(|s| s.to_string()));
            let (code, out) = self.run_helper(&argv).map_err(|e| format!("cannot run {bin}: {e}"))?;
            if code != 0 {
                result = Err(format!("`{name} -t nat {}` failed: {}", step.join(" "), first_line(&out)));
                if i == 0 {
                    return result;
                }
                break;
            }
        }
        for step in [["-F", chain], ["-X", chain]] {
            let mut argv: Vec<String> = [bin.as_str(), "-w", "-t", "nat"].iter().map(|s| s.to_string()).collect();
            argv.extend(step.iter().map(|s| s.to_string()));
            let _ = self.run_helper(&argv);
        }
        result
    }

    /// Runs a short helper to completion; returns its exit code and combined output. One that
    /// hangs (`iptables -w` on a held lock) is killed at `HELPER_LIMIT`.
    fn run_helper(&self, argv: &[String]) -> io::Result<(i32, String)> {
        run_helper(&self.children, argv)
    }

    /// Starts dockerd in its own session with its output going to the log; returns its pid and
    /// a channel that disconnects once all of its output was read.
    fn launch(&self, args: &[String]) -> io::Result<(i32, mpsc::Receiver<()>)> {
        let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
        self.status.update(|s| s.tail.clear());
        let pid = self.children.spawn(args, Detach::Session, Some(std::os::fd::AsRawFd::as_raw_fd(&w)))?;
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

    /// gVisor does not report a bridge as a bridge, so a dockerd that finds the old docker0 (or
    /// recreates it from its network store) refuses to start. Both go; the containers that
    /// used them died with the old containerd.
    fn forget_networks(&self) {
        if let Err(e) = std::fs::remove_file(NETWORK_STORE) {
            if e.kind() != io::ErrorKind::NotFound {
                self.note(&format!("cannot remove {NETWORK_STORE}: {e}"));
            }
        }
        if let Err(e) = crate::netlink::delete_link(BRIDGE) {
            self.note(&format!("cannot delete the old {BRIDGE} interface: {e}"));
        }
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

/// Runs a short helper to completion; returns its exit code and combined output. One that
/// hangs (`iptables -w` on a held lock) is killed at `HELPER_LIMIT`.
fn run_helper(children: &Children, argv: &[String]) -> io::Result<(i32, String)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
    let pid = children.spawn(argv, Detach::Session, Some(std::os::fd::AsRawFd::as_raw_fd(&w)))?;
    drop(w);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = File::from(r).take(64 << 10).read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let code = children.wait(pid, HELPER_LIMIT);
    if code.is_none() {
        // A session leader: its group goes with it, and so does the pipe's last writer.
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
    let out = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    children.forget(pid);
    match code {
        Some(code) => Ok((code, out)),
        None => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{} did not finish within {HELPER_LIMIT:?}", argv[0]))),
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

fn first_line(out: &str) -> String {
    out.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
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

fn mount_tmpfs(target: &str, options: &str) -> Result<(), String> {
    if is_mountpoint(target) {
        return Ok(());
    }
    ensure_dir(Path::new(target)).map_err(|e| format!("create {target}: {e}"))?;
    mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options))
        .map_err(|e| format!("mount a tmpfs on {target} ({options}): {e}"))
}

/// Creates a directory unless it exists: on a read-only filesystem gVisor answers mkdir of an
/// existing directory with EROFS, not EEXIST.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
}

fn is_mountpoint(path: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// dockerd's output on disk, bounded: one rotation to `.1` at `LOG_CAP`.
struct LogFile {
    path: PathBuf,
    file: File,
    written: u64,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(LogFile { path: path.to_path_buf(), file, written })
    }

    fn write_line(&mut self, line: &str) {
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

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("beta9-agent-test-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
