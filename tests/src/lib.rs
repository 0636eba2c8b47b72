//! Harness for the end-to-end tests: `ctr` against the private containerd that hack/test.sh
//! starts, containers that clean up after themselves, and leak checks.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub mod cgroups;
pub mod client;
pub mod compose;
pub mod cri;
pub mod engine;
pub mod net;

pub const RUNTIME: &str = "io.beta9.sandbox";
pub const BUSYBOX: &str = "docker.io/beta9/busybox:latest";
/// The Docker images (hack/build-images.sh): bookworm's docker.io 20.10 (runc 1.1.5), trixie's
/// 26.1.5 (runc 1.1.15), sid's 28.5.2 (runc 1.3.6, and crun).
pub const DEBIAN: &str = "docker.io/beta9/debian:latest";
pub const DEBIAN_TRIXIE: &str = "docker.io/beta9/debian-trixie:latest";
pub const DEBIAN_SID: &str = "docker.io/beta9/debian-sid:latest";

/// The private containerd's socket. A missing one is a failure, never a skip.
pub fn address() -> String {
    let a = std::env::var("CONTAINERD_ADDRESS").unwrap_or_else(|_| "/run/beta9-dev/containerd.sock".into());
    assert!(
        Path::new(&a).exists(),
        "containerd socket {a} is missing: run the tests through hack/test.sh, which starts it"
    );
    a
}

/// A container id unique to this test run, so parallel tests never collide.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

pub fn ctr() -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(address());
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Asserts that the client was refused and that its error says every one of `words`.
    pub fn assert_refused(&self, words: &[&str]) {
        assert_ne!(self.code, 0, "should have been refused: {}{}", self.stdout, self.stderr);
        for w in words {
            assert!(self.stderr.contains(w), "the error should say {w:?}: {}", self.stderr);
        }
    }
}

pub fn run_cmd(cmd: &mut Command, stdin: Option<&str>) -> Run {
    let start = Instant::now();
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ctr");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).unwrap();
    }
    let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// A process the test started and that runs until the test stops it: killed when dropped, so a
/// failing test leaves nothing running (nothing that holds the test runner's output open).
pub struct Spawned(Option<std::process::Child>);

impl Spawned {
    pub fn new(cmd: &mut Command) -> Spawned {
        Spawned(Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))))
    }

    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a running process")
    }

    /// Kills it and returns what it wrote to its piped stdout and stderr.
    pub fn kill_and_output(mut self) -> Output {
        let mut child = self.0.take().expect("a running process");
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A container of the test; on drop it is killed and removed, and nothing of it may remain.
pub struct Container {
    pub id: String,
}

impl Container {
    pub fn new(prefix: &str) -> Self {
        Container { id: unique_id(prefix) }
    }

    /// `ctr run --rm` in the foreground.
    pub fn run(&self, image: &str, extra: &[&str], args: &[&str], stdin: Option<&str>) -> Run {
        let mut c = ctr();
        c.args(["run", "--rm", "--runtime", RUNTIME]).args(extra).args([image, &self.id]).args(args);
        run_cmd(&mut c, stdin)
    }

    /// `ctr run -d`; panics if it fails.
    pub fn start(&self, image: &str, extra: &[&str], args: &[&str]) -> Run {
        let mut c = ctr();
        c.args(["run", "-d", "--runtime", RUNTIME]).args(extra).args([image, &self.id]).args(args);
        let r = run_cmd(&mut c, None);
        assert_eq!(r.code, 0, "ctr run -d {}: {}{}", self.id, r.stdout, r.stderr);
        r
    }

    pub fn exec(&self, exec_id: &str, args: &[&str], stdin: Option<&str>) -> Run {
        let mut c = ctr();
        c.args(["task", "exec", "--exec-id", exec_id, &self.id]).args(args);
        run_cmd(&mut c, stdin)
    }

    pub fn task(&self, args: &[&str]) -> Run {
        let mut c = ctr();
        c.arg("task").args(args);
        run_cmd(&mut c, None)
    }

    /// The task's status as `ctr task ls` shows it (RUNNING, STOPPED, ...), if any.
    pub fn status(&self) -> Option<String> {
        let ls = self.task(&["ls"]).stdout;
        ls.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.first() == Some(&self.id.as_str())).map(|f| f[2].to_string())
    }

    /// Waits until the task is STOPPED, then deletes it and returns its exit code
    /// (ctr 1.6 has no `task wait`; `task rm` reports a non-zero status).
    pub fn wait_exit(&self) -> i32 {
        assert!(
            eventually(Duration::from_secs(20), || self.status().as_deref() == Some("STOPPED")),
            "{} did not stop: {:?}",
            self.id,
            self.status()
        );
        let rm = self.task(&["rm", &self.id]);
        assert_eq!(rm.code, 0, "task rm {}: {}", self.id, rm.stderr);
        rm.stderr
            .split("exit code ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// A `file://` URI for `--log-uri`, in a directory removed with the container.
    pub fn log_uri(&self) -> String {
        format!("file://{}", self.log_path().display())
    }

    /// Waits (bounded) until the container's log file holds `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        eventually(Duration::from_secs(10), || std::fs::read_to_string(self.log_path()).is_ok_and(|s| s.contains(text)))
    }

    fn log_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(&self.id).join("out.log")
    }

    /// The host command line of this container's runsc sandbox process.
    pub fn sandbox_cmdline(&self) -> Option<String> {
        self.sandbox().map(|(_, c)| c)
    }

    pub fn sandbox_pid(&self) -> Option<u32> {
        self.sandbox().map(|(p, _)| p)
    }

    fn sandbox(&self) -> Option<(u32, String)> {
        processes_with_pids().into_iter().find(|(_, c)| c.starts_with("runsc-sandbox") && c.ends_with(&format!(" {}", self.id)))
    }

    /// The pid of the shim serving this container.
    pub fn shim_pid(&self) -> Option<u32> {
        let id = format!(" -id {} ", self.id);
        processes_with_pids().into_iter().find(|(_, c)| c.contains("containerd-shim-beta9-sandbox") && c.contains(&id)).map(|(p, _)| p)
    }

    pub fn remove(&self) {
        let _ = self.task(&["kill", "-s", "SIGKILL", &self.id]);
        let _ = self.task(&["rm", "-f", &self.id]);
        let _ = run_cmd(ctr().args(["containers", "rm", &self.id]), None);
    }

    pub fn assert_no_leftovers(&self) {
        assert_no_leftovers(&[&self.id]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.id));
        if !std::thread::panicking() {
            self.assert_no_leftovers();
        }
    }
}

/// What is left of a container on the host: processes, mounts, runsc state, cgroups.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut left: Vec<String> = processes()
        .into_iter()
        .filter(|c| c.contains(id) && (c.contains("runsc") || c.contains("containerd-shim")))
        .map(|c| format!("process: {c}"))
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(mounts.lines().filter(|l| l.contains(&format!("/{id}/")) || l.contains(&format!("/{id} "))).map(|l| format!("mount: {l}")));
    if let Ok(roots) = std::fs::read_dir("/run/beta9") {
        for root in roots.flatten() {
            for f in std::fs::read_dir(root.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().contains(id) {
                    left.push(format!("runsc state: {}", f.path().display()));
                }
            }
        }
    }
    left.extend(cgroups::named(id).into_iter().map(|d| format!("cgroup: {}", d.display())));
    left
}

/// Waits (bounded, on the condition itself) until nothing of these containers remains.
pub fn assert_no_leftovers(ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = ids.iter().flat_map(|id| leftovers(id)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind:\n{}", left.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every process's command line, arguments joined by spaces.
pub fn processes() -> Vec<String> {
    processes_with_pids().into_iter().map(|(_, c)| c).collect()
}

pub fn processes_with_pids() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            if !raw.is_empty() {
                let s = String::from_utf8_lossy(&raw).split('\0').filter(|a| !a.is_empty()).collect::<Vec<_>>().join(" ");
                out.push((pid, s));
            }
        }
    }
    out
}

/// Polls a condition that an event will make true, for at most `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A program on the test's PATH; a missing one is a failure, never a skip.
pub fn which(name: &str) -> std::path::PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: hack/install-deps.sh installs it"))
}

/// A busybox root filesystem as a tar, for `docker import` inside a sandbox: (its directory,
/// to remove afterwards; the tar).
pub fn busybox_tar() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique_id("bbroot"));
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    std::fs::copy(which("busybox"), dir.join("rootfs/bin/busybox")).unwrap();
    let tar = dir.join("busybox.tar");
    let t = run_cmd(Command::new("tar").arg("-C").arg(dir.join("rootfs")).arg("-cf").arg(&tar).arg("."), None);
    assert_eq!(t.code, 0, "{}", t.stderr);
    (dir, tar)
}

/// The containerd version the tests run against (hack/env.sh's BETA9_CONTAINERD).
pub fn containerd_version() -> String {
    std::env::var("BETA9_CONTAINERD").unwrap_or_else(|_| "1.6".into())
}

/// Whether containerd is 1.x, whose Go client sends runc's `containerd.linux.runc.*` option
/// types to a runtime not named `io.containerd.runc*` (2.x sends `containerd.runc.v1.*`, and its
/// daemon refuses any other type for Create and Checkpoint).
pub fn containerd_1x() -> bool {
    containerd_version().starts_with("1.")
}

/// The cache hack/build-images.sh fills.
pub fn cache() -> std::path::PathBuf {
    std::env::var("BETA9_CACHE").unwrap_or_else(|_| "/var/cache/beta9".into()).into()
}

/// hack/build-images.sh's busybox root filesystem with its applets, as a tar for `docker import`
/// inside a Docker sandbox.
pub fn nested_busybox_tar() -> std::path::PathBuf {
    let tar = cache().join("busybox-rootfs.tar");
    assert!(tar.is_file(), "{} is missing: hack/build-images.sh busybox makes it", tar.display());
    tar
}

/// The root filesystem hack/build-images.sh made for a Debian suite's Docker image (its
/// `rootfs_dir`: trixie's carries the image's revision).
pub fn docker_rootfs(suite: &str) -> std::path::PathBuf {
    let dir = match suite {
        "bookworm" => cache().join("debian-rootfs"),
        "trixie" => cache().join("trixie-r2-rootfs"),
        other => cache().join(format!("{other}-rootfs")),
    };
    assert!(dir.join(".complete").exists(), "{} is missing: hack/build-images.sh makes it", dir.display());
    dir
}

/// The runsc root the sandbox of `id` runs under, from its runsc processes' `--root`.
pub fn runsc_root_of(id: &str) -> String {
    let sandbox = processes()
        .into_iter()
        .find(|c| c.starts_with("runsc-sandbox") && c.ends_with(&format!(" {id}")))
        .unwrap_or_else(|| panic!("no runsc sandbox for {id}"));
    let root = sandbox.split_whitespace().find_map(|a| a.strip_prefix("--root=")).expect("runsc's --root flag");
    root.to_string()
}

/// The bundle containerd made for container `id` of `namespace`.
pub fn bundle_of(namespace: &str, id: &str) -> std::path::PathBuf {
    // hack/containerd.sh: each version but the default has a state directory of its own.
    let state = match std::env::var("BETA9_CONTAINERD").ok().filter(|v| v != "1.6") {
        Some(v) => format!("state-{v}"),
        None => "state".to_string(),
    };
    Path::new(&address()).parent().unwrap().join(state).join("io.containerd.runtime.v2.task").join(namespace).join(id)
}

/// A runtime config file for one test (`ctr run --runtime-config-path`), removed with it.
pub struct ConfigFile(pub std::path::PathBuf);

impl ConfigFile {
    pub fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.toml", unique_id("beta9-config")));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    pub fn flag(&self) -> [String; 2] {
        ["--runtime-config-path".into(), self.0.display().to_string()]
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
