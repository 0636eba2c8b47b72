//! Docker Engine as a containerd client: trixie's dockerd and docker CLI (unpacked into the cache
//! by hack/install-deps.sh) pointed at the private containerd, each with its own data-root,
//! exec-root, pidfile, socket and containerd namespace, no bridge and no iptables, so the host's
//! network is never touched. Its images live in containerd (the containerd image store), so the
//! test images are imported there from the archives hack/build-images.sh keeps in the cache.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{address, ctr, eventually, run_cmd, unique_id, Run};

fn cache() -> PathBuf {
    PathBuf::from(std::env::var("BETA9_CACHE").unwrap_or_else(|_| "/var/cache/beta9".into()))
}

/// A program of the unpacked Docker Engine; a missing one is a failure, never a skip.
fn engine_bin(path: &str) -> PathBuf {
    let p = cache().join("docker-engine").join(path);
    assert!(p.is_file(), "{} is missing: hack/install-deps.sh unpacks trixie's docker.io and docker-cli there", p.display());
    p
}

/// An OCI archive of a test image, as hack/build-images.sh keeps it (`beta9/busybox` ->
/// `$BETA9_CACHE/images/beta9_busybox.tar`).
pub fn image_archive(name: &str) -> PathBuf {
    let p = cache().join("images").join(format!("{}.tar", name.replace('/', "_")));
    assert!(p.is_file(), "{} is missing: hack/build-images.sh writes it", p.display());
    p
}

/// A dockerd of the test's own; stopped, with everything it made, on drop.
pub struct Engine {
    pub namespace: String,
    dir: PathBuf,
    child: Child,
}

impl Engine {
    pub fn start() -> Engine {
        let dockerd = engine_bin("usr/sbin/dockerd");
        let namespace = unique_id("b9engine");
        let dir = std::env::temp_dir().join(&namespace);
        std::fs::create_dir_all(&dir).unwrap();
        // Images in containerd's store: `ctr -n NAMESPACE images import` puts them in reach.
        std::fs::write(dir.join("daemon.json"), r#"{"features": {"containerd-snapshotter": true}}"#).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .args(["--containerd", &address(), "--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-plugins")])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            // The host's network stays as it is: no bridge, no rules, no sysctl, no proxy.
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--userland-proxy=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut e = Engine { namespace, dir, child };
        let up = eventually(Duration::from_secs(60), || e.docker(&["version"]).code == 0 || e.exited());
        assert!(up && !e.exited(), "dockerd did not answer; its log:\n{}", e.log());
        e
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Run {
        let mut c = Command::new(engine_bin("usr/bin/docker"));
        c.arg("--host").arg(format!("unix://{}", self.dir.join("docker.sock").display())).args(args);
        run_cmd(&mut c, None)
    }

    /// Imports a test image (`beta9/busybox`) into the daemon's containerd namespace.
    pub fn import(&self, name: &str) {
        let mut c = ctr();
        c.args(["-n", &self.namespace, "images", "import", "--base-name", &format!("docker.io/{name}")]).arg(image_archive(name));
        let r = run_cmd(&mut c, None);
        assert_eq!(r.code, 0, "ctr images import {name}: {}", r.stderr);
    }

    /// The ids of every container the daemon knows, running or not.
    pub fn containers(&self) -> Vec<String> {
        self.docker(&["ps", "-aq", "--no-trunc"]).stdout.lines().map(str::to_string).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let ids = self.containers();
        for id in &ids {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = send_signal(self.child.id(), "TERM");
        let stopped = eventually(Duration::from_secs(30), || self.exited());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // Its images and namespaces in containerd go too (content is collected once unreferenced).
        let mut left_ns = Vec::new();
        for ns in [self.namespace.clone(), format!("{}-plugins", self.namespace)] {
            let images = run_cmd(ctr().args(["-n", &ns, "images", "ls", "-q"]), None).stdout;
            for image in images.lines() {
                let _ = run_cmd(ctr().args(["-n", &ns, "images", "rm", "--sync", image]), None);
            }
            // Snapshots a removed container or image left go too, children before their parents.
            let removed = eventually(Duration::from_secs(10), || {
                let snapshots = run_cmd(ctr().args(["-n", &ns, "snapshots", "ls"]), None).stdout;
                for key in snapshots.lines().skip(1).filter_map(|l| l.split_whitespace().next()) {
                    let _ = run_cmd(ctr().args(["-n", &ns, "snapshots", "rm", key]), None);
                }
                run_cmd(ctr().args(["namespaces", "rm", &ns]), None).code == 0
            });
            if !removed {
                left_ns.push(ns);
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.display().to_string();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir)).collect();
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if !std::thread::panicking() {
            assert!(stopped, "dockerd did not stop on SIGTERM within 30 s");
            assert!(left.is_empty(), "dockerd left mounts behind:\n{}", left.join("\n"));
            assert!(left_ns.is_empty(), "containerd namespaces left behind: {left_ns:?}");
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            crate::assert_no_leftovers(&ids);
        }
    }
}

fn send_signal(pid: u32, signal: &str) -> Run {
    run_cmd(Command::new("kill").args(["-s", signal, &pid.to_string()]), None)
}
