//! A pod whose network namespace a later bind mount of /run/netns hides, as the first `ip netns
//! add` on a machine makes one (iproute2 bind-mounts the directory over itself, recursively, when
//! it is no mount point yet). hack/containerd.sh makes /run/netns a shared mount point before any
//! pod exists, so containerd's unmount through the upper mount reaches the pod's own mount below,
//! and the shim holds the namespace itself from Create on. A test binary of its own: the only
//! test that mounts over /run/netns, so no other test's pod lives under it meanwhile.

use std::process::Command;

use beta9_e2e::{
    cri::{Cri, Spec},
    net::{httpd, strs, wait_for_http},
    *,
};

/// A recursive bind mount of a directory over itself, unmounted when dropped.
struct Shadow(&'static str);

impl Shadow {
    fn over(dir: &'static str) -> Shadow {
        let before = mounts_at(dir);
        let r = run_cmd(Command::new("mount").args(["--rbind", dir, dir]), None);
        assert_eq!(r.code, 0, "mount --rbind {dir}: {}", r.stderr);
        assert_eq!(mounts_at(dir), before + 1, "a second mount at {dir}");
        Shadow(dir)
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // Lazily only if something is still mounted under it (a failed removal).
        if run_cmd(Command::new("umount").arg(self.0), None).code != 0 {
            let _ = run_cmd(Command::new("umount").args(["-l", self.0]), None);
        }
    }
}

fn mounts_at(dir: &str) -> usize {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().filter(|l| l.split_whitespace().nth(4) == Some(dir)).count()
}

#[test]
fn a_pod_is_removed_after_a_later_bind_mount_of_run_netns_hid_its_namespace() {
    let cri = Cri::connect();
    let mut pod = cri.run_pod("shadowed", &[], false).expect("RunPodSandbox of a networked pod");
    assert!(pod.network().netns.starts_with("/var/run/netns/") || pod.network().netns.starts_with("/run/netns/"));
    pod.run(&Spec { name: "before", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    let shadow = Shadow::over("/run/netns");
    // The pod goes on: a container joins it and serves on its address.
    pod.run(&Spec { name: "web", image: BUSYBOX, command: &strs(&httpd("under-the-shadow")), ..Default::default() });
    let ip = pod.network().ip.clone();
    assert_eq!(wait_for_http(&format!("{ip}:8080"), "/f").trim(), "under-the-shadow");
    // StopPodSandbox and RemovePodSandbox succeed, and the namespace, its mount, the veth and
    // the address reservation are gone (the pod's drop asserts it).
    drop(pod);
    drop(shadow);
    assert_eq!(mounts_at("/run/netns"), 1, "/run/netns is one mount again");
}
