//! The Debian package on this bookworm host, in the order an admin goes: `apt install` of the
//! .deb (the postinst says what to run), `beta9-sandbox-install install` (containerd's version
//! asked of Debian's containerd 1.6; the package's binaries used in place), `ctr run --runtime
//! io.beta9.sandbox` on Debian's containerd, `apt remove` refused while the runtime is
//! registered and again while a sandbox runs, `uninstall` (config.toml back byte for byte),
//! `apt purge`.
//!
//! It runs on a copy-on-write view of this machine's root (an overlay over `/` as the root of a
//! private mount namespace), so apt and dpkg do all their real work while the host's
//! dpkg state and /etc are never written: the test checks both are as before.

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::*;

struct Host {
    dir: PathBuf,
    ns: Option<Namespace>,
    /// The overlay as the root of a namespace of its own, where every command runs.
    root_ns: Option<Namespace>,
    containerd: Option<Daemon>,
    /// The containers it ran: none may leave a cgroup behind.
    ids: Vec<String>,
}

impl Host {
    fn new() -> Host {
        let dir = std::env::temp_dir().join(beta9_e2e::unique_id("beta9-apt"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let m = format!("{d}/merged");
        // Upper and work directories on a tmpfs of the namespace: the host's disk gets nothing.
        let setup = format!(
            "mount -t tmpfs tmpfs {d}\nmkdir {d}/upper {d}/work {m}\n\
             mount -t overlay overlay -o lowerdir=/,upperdir={d}/upper,workdir={d}/work {m}\n\
             mount -t proc proc {m}/proc\nmount --rbind /sys {m}/sys\nmount --rbind /dev {m}/dev\n\
             mount -t tmpfs tmpfs {m}/run\nmount -t tmpfs tmpfs {m}/tmp\n\
             mkdir -p {m}/var/lib/containerd\nmount -t tmpfs tmpfs {m}/var/lib/containerd"
        );
        let ns = Namespace::new(&setup);
        let root_ns = ns.rooted_at(&dir.join("merged"), "");
        Host { dir, ns: Some(ns), root_ns: Some(root_ns), containerd: None, ids: Vec::new() }
    }

    fn inside(&self, program: &str) -> Command {
        let mut c = self.root_ns.as_ref().unwrap().command("env");
        c.arg("DEBIAN_FRONTEND=noninteractive").arg(program);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Run {
        run_cmd(self.inside(program).args(args), None)
    }

    fn sh(&self, script: &str) -> String {
        ok(self.inside("sh").args(["-c", script])).stdout
    }

    /// Whether a path exists in the overlay (only the namespace sees it).
    fn exists(&self, path: &str) -> bool {
        self.run("test", &["-e", path]).code == 0
    }

    fn start_containerd(&mut self) {
        let mut d = Daemon::spawn(self.inside("containerd").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()));
        assert!(eventually(Duration::from_secs(30), || d.alive() && self.run("ctr", &["version"]).code == 0), "Debian's containerd did not come up");
        self.containerd = Some(d);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut d) = self.containerd.take() {
            d.stop();
        }
        self.root_ns.take();
        self.ns.take();
        for id in &self.ids {
            let mut dirs = beta9_e2e::cgroups::named(id);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// What dpkg knows of every package, and the bytes of /etc/containerd, as `sh` sees them.
const STATE: &str = "dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'; find /etc/containerd /var/lib/beta9-sandbox -printf '%p %m %y\\n' 2>/dev/null | sort; find /etc/containerd -type f -exec md5sum {} + | sort";

/// Asserts two states are the same, showing only the lines that differ.
fn assert_same(before: &str, after: &str, what: &str) {
    if before != after {
        let only = |a: &str, b: &str| a.lines().filter(|l| !b.lines().any(|m| m == *l)).map(str::to_string).collect::<Vec<_>>().join("\n");
        panic!("{what}:\nbefore only:\n{}\nafter only:\n{}", only(before, after), only(after, before));
    }
}

fn host_state() -> String {
    ok(Command::new("sh").args(["-c", STATE])).stdout
}

#[test]
fn apt_install_then_install_uninstall_and_apt_purge() {
    let _one = lock();
    let deb = std::fs::read_dir(repo().join("target/debian"))
        .ok()
        .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("beta9-sandbox_")))
        .expect("target/debian/beta9-sandbox_*_amd64.deb is missing: build it with hack/package.sh (hack/test.sh does)");
    assert!(deb.to_string_lossy().ends_with("_amd64.deb"));
    let deb = deb.display().to_string();
    let before = host_state();

    let mut host = Host::new();
    assert_same(&before, &host.sh(STATE), "the overlay starts as the host is");

    let r = host.run("apt-get", &["install", "-y", "--no-install-recommends", &deb]);
    assert_eq!(r.code, 0, "apt install: {}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("run:") && r.stdout.contains("beta9-sandbox-install install"), "the postinst says what to run:\n{}", r.stdout);
    assert!(host.sh("dpkg-query -W -f '${db:Status-Abbrev}' beta9-sandbox").starts_with("ii"));
    assert!(!host.exists("/etc/containerd/beta9-sandbox.toml"), "the package writes no runtime config: install does");
    assert_eq!(host.sh("md5sum </etc/containerd/config.toml"), ok(Command::new("sh").args(["-c", "md5sum </etc/containerd/config.toml"])).stdout, "the package's scripts leave containerd's conffile alone");

    let install = host.run("beta9-sandbox-install", &["install"]);
    assert_eq!(install.code, 0, "install: {}{}", install.stdout, install.stderr);
    for words in ["ok      containerd: 1.6", "using containerd-shim-beta9-sandbox and beta9-sandbox-agent in /usr/bin", "updated /etc/containerd/config.toml", "no containerd runs"] {
        assert!(install.stdout.contains(words), "install should say {words:?}:\n{}", install.stdout);
    }
    assert!(!host.exists("/usr/local/bin/containerd-shim-beta9-sandbox"), "the package's binaries are used where they are");
    assert!(host.exists("/etc/containerd/beta9-sandbox.toml") && host.exists("/etc/containerd/beta9-sandbox-docker.toml"));

    // Debian's containerd on the registered config runs a sandbox through the package's shim.
    host.start_containerd();
    let images = cache().join("images/beta9_busybox.tar");
    assert!(images.is_file(), "{} is missing: hack/build-images.sh builds it", images.display());
    ok(host.inside("ctr").args(["images", "import", "--base-name", "docker.io/beta9/busybox", images.to_str().unwrap()]));
    let (run_id, busy_id) = (beta9_e2e::unique_id("apt-run"), beta9_e2e::unique_id("apt-busy"));
    host.ids = vec![run_id.clone(), busy_id.clone()];
    let r = host.run("ctr", &["run", "--rm", "--runtime", "io.beta9.sandbox", "docker.io/beta9/busybox:latest", &run_id, "echo", "from the package"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "from the package\n"), "{}", r.stderr);

    // apt remove refuses while the runtime is registered, naming the command to run.
    let r = host.run("apt-get", &["remove", "-y", "beta9-sandbox"]);
    assert_ne!(r.code, 0, "apt remove should refuse: {}", r.stdout);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("run 'beta9-sandbox-install uninstall'"), "{}{}", r.stdout, r.stderr);
    assert!(host.sh("dpkg-query -W -f '${db:Status-Abbrev}' beta9-sandbox").starts_with("ii"), "still installed");

    let uninstall = host.run("beta9-sandbox-install", &["uninstall"]);
    assert_eq!(uninstall.code, 0, "uninstall: {}{}", uninstall.stdout, uninstall.stderr);
    assert!(uninstall.stdout.contains("restored /etc/containerd/config.toml"), "{}", uninstall.stdout);
    assert_eq!(std::fs::read_to_string("/etc/containerd/config.toml").unwrap(), host.sh("cat /etc/containerd/config.toml"), "config.toml back byte for byte");

    // ... and while a sandbox of ours runs (the shim is still on PATH without registration).
    ok(host.inside("ctr").args(["run", "-d", "--runtime", "io.beta9.sandbox", "docker.io/beta9/busybox:latest", &busy_id, "sleep", "600"]));
    let r = host.run("apt-get", &["remove", "-y", "beta9-sandbox"]);
    assert_ne!(r.code, 0, "apt remove should refuse while a sandbox runs: {}", r.stdout);
    assert!(format!("{}{}", r.stdout, r.stderr).contains(&format!("default/{busy_id}")), "{}{}", r.stdout, r.stderr);
    ok(host.inside("ctr").args(["task", "rm", "-f", &busy_id]));
    ok(host.inside("ctr").args(["containers", "rm", &busy_id]));
    let gone = eventually(Duration::from_secs(20), || host.run("beta9-sandbox-install", &["status"]).code == 0);
    assert!(gone, "the sandbox's shim did not go: {}", host.run("beta9-sandbox-install", &["status"]).stdout);

    let r = host.run("apt-get", &["purge", "-y", "beta9-sandbox"]);
    assert_eq!(r.code, 0, "apt purge: {}{}", r.stdout, r.stderr);
    assert!(!host.exists("/usr/bin/containerd-shim-beta9-sandbox") && !host.exists("/usr/bin/beta9-sandbox-install"));
    if let Some(mut d) = host.containerd.take() {
        d.stop();
    }
    assert_same(&before, &host.sh(STATE), "after apt purge the overlay's dpkg state and /etc/containerd are the host's again");
    let left: Vec<_> = host.ns.as_ref().unwrap().members().into_iter().chain(host.root_ns.as_ref().unwrap().members()).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    let ids = host.ids.clone();
    assert!(eventually(Duration::from_secs(10), || ids.iter().all(|id| beta9_e2e::cgroups::named(id).is_empty())), "cgroups left");
    drop(host);
    assert_same(&before, &host_state(), "the host's own dpkg state and /etc/containerd were never touched");
}
