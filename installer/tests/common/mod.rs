//! A private mount namespace that holds a node root for the installer and a real containerd,
//! and takes everything it ran with it: processes, mounts, the CNI bridge.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

pub use beta9_e2e::{eventually, processes_with_pids, run_cmd, Run};

/// One node at a time: they share the CNI bridge and CRI's stream port, and the machine has 2 cores.
pub static ONE_NODE: Mutex<()> = Mutex::new(());

pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_NODE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The shipped binaries, as hack/test.sh builds them (the release profile).
pub fn release_dir() -> PathBuf {
    let d = repo().join("target/x86_64-unknown-linux-gnu/release");
    for b in ["beta9-sandbox-install", "containerd-shim-beta9-sandbox", "beta9-sandbox-agent"] {
        assert!(d.join(b).is_file(), "{} is missing: build first (cargo build --release --workspace --bins, as hack/test.sh does)", d.join(b).display());
    }
    d
}

pub fn cache() -> PathBuf {
    PathBuf::from(std::env::var("BETA9_CACHE").unwrap_or_else(|_| "/var/cache/beta9".into()))
}

/// Kills a process and waits for it to be gone (bounded).
fn kill_wait(pid: u32, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
    eventually(Duration::from_secs(10), || !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid));
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

fn mnt_ns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().map(|p| p.display().to_string())
}

fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// The process holding a private mount namespace (`unshare -m`), set up by a shell script; it
/// ends when the test process does (its stdin closes), and on drop every process that lives in
/// the namespace, or descends from one that does, is killed first.
pub struct Namespace {
    holder: Option<Child>,
    pub pid: u32,
    ns: String,
}

impl Namespace {
    pub fn new(setup: &str) -> Namespace {
        Self::start(Command::new("unshare"), setup)
    }

    /// A namespace made from this one whose root is `root` (pivot_root, not chroot: runsc makes
    /// user namespaces, which the kernel refuses to a chrooted process).
    pub fn rooted_at(&self, root: &Path, setup: &str) -> Namespace {
        let r = root.display();
        let pivot = format!("mount --rbind {r} {r}\ncd {r}\nmkdir -p .oldroot\npivot_root . .oldroot\ncd /\numount -l /.oldroot\nrmdir /.oldroot\n{setup}");
        let mut c = self.command("unshare");
        c.arg("--mount");
        Self::start(c, &pivot)
    }

    fn start(mut c: Command, setup: &str) -> Namespace {
        let script = format!("set -e\n{setup}\necho ready\nexec cat >/dev/null\n");
        if c.get_program() == "unshare" {
            c.arg("--mount");
        }
        c.args(["--propagation", "private", "sh", "-c", &script]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("unshare");
        let mut line = String::new();
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("the namespace's setup failed: {}{}", line, String::from_utf8_lossy(&o.stderr));
        }
        // The holder is unshare's sh (nsenter and unshare exec, they do not fork).
        let pid = child.id();
        let ns = mnt_ns(pid).expect("the holder's mount namespace");
        Namespace { holder: Some(child), pid, ns }
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.pid.to_string()).arg("-m").arg("--").arg(program);
        // hack/test.sh points ctr at the private development containerd; in here ctr and crictl
        // talk to the node's own.
        c.env_remove("CONTAINERD_ADDRESS").env_remove("CONTAINERD_NAMESPACE");
        c
    }

    /// Every process in the namespace (but the holder), and their descendants wherever they live.
    pub fn members(&self) -> Vec<(u32, String)> {
        let all = processes_with_pids();
        let mut set: Vec<u32> = all.iter().filter(|(p, _)| *p != self.pid && mnt_ns(*p).as_deref() == Some(&self.ns)).map(|(p, _)| *p).collect();
        loop {
            let more: Vec<u32> = all.iter().map(|(p, _)| *p).filter(|p| !set.contains(p) && ppid(*p).is_some_and(|pp| set.contains(&pp))).collect();
            if more.is_empty() {
                break;
            }
            set.extend(more);
        }
        all.into_iter().filter(|(p, _)| set.contains(p)).collect()
    }

    pub fn kill_members(&self) {
        for (pid, _) in self.members() {
            kill_wait(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.kill_members();
        if let Some(mut h) = self.holder.take() {
            drop(h.stdin.take());
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// A file tree's contents (bytes or link target, and mode), to compare before and after.
pub type Tree = BTreeMap<String, (String, u32)>;

pub fn snapshot(dir: &Path) -> Tree {
    let mut out = Tree::new();
    fn walk(base: &Path, dir: &Path, out: &mut Tree) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(base, &p, out);
                "dir".to_string()
            } else {
                format!("{:x} bytes {}", fnv(&std::fs::read(&p).unwrap()), m.len())
            };
            out.insert(rel, (what, m.mode() & 0o7777));
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// A content fingerprint for snapshots (bytes are compared whole where it matters).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ *x as u64).wrapping_mul(0x100000001b3))
}

pub fn mtimes(dir: &Path) -> BTreeMap<String, i64> {
    snapshot(dir).keys().map(|k| (k.clone(), std::fs::symlink_metadata(dir.join(k)).map(|m| m.mtime_nsec() + m.mtime() * 1_000_000_000).unwrap_or(0))).collect()
}

pub fn assert_trees_equal(before: &Tree, after: &Tree, what: &str) {
    if before != after {
        let mut d = Vec::new();
        for (k, v) in before {
            if after.get(k) != Some(v) {
                d.push(format!("- {k}: {v:?} -> {:?}", after.get(k)));
            }
        }
        for (k, v) in after {
            if !before.contains_key(k) {
                d.push(format!("+ {k}: {v:?}"));
            }
        }
        panic!("{what}:\n{}", d.join("\n"));
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A command's output, asserting success.
pub fn ok(cmd: &mut Command) -> Run {
    let r = run_cmd(cmd, None);
    assert_eq!(r.code, 0, "{cmd:?} failed:\n{}{}", r.stdout, r.stderr);
    r
}

/// A child that is killed (with SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Daemon(pub Option<Child>);

impl Daemon {
    pub fn spawn(cmd: &mut Command) -> Daemon {
        unsafe {
            // It dies with the test process, whatever ends it.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Daemon(Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    pub fn alive(&mut self) -> bool {
        self.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CNI bridge of these tests: its own name and subnet, nothing routed off the machine.
pub const BRIDGE: &str = "beta9inst0";
pub const SUBNET: &str = "10.88.95";

pub fn conflist() -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "beta9-install-test", "plugins": [
  {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{SUBNET}.0/24", "gateway": "{SUBNET}.1"}}]]}}}}]}}
"#
    )
}

pub fn delete_bridge() {
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).stderr(Stdio::null()).status();
}
