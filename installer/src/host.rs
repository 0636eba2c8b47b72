//! The node as the installer sees it: a root directory (`/`, or a DaemonSet's `/host`), its
//! programs run inside that root, and the processes of this machine that belong to it.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

/// The PATH containerd gets from systemd, and the one the node's programs are run with.
pub const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone, Debug)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    pub fn is_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// An absolute path of the node, as this process reaches it.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// A program of the node, run inside its root (its own libraries and config), on its PATH.
    pub fn command(&self, program: &str) -> Command {
        let mut c = if self.is_root() {
            Command::new(program)
        } else {
            let mut c = Command::new("chroot");
            c.arg(&self.root).arg(program);
            c.env("PATH", NODE_PATH);
            c
        };
        c.stdin(std::process::Stdio::null());
        c
    }

    /// Where a program lies on the node's PATH, as a node path.
    pub fn find(&self, program: &str) -> Option<String> {
        NODE_PATH
            .split(':')
            .map(|d| format!("{d}/{program}"))
            .find(|p| self.path(p).is_file())
    }

    /// Runs a node program; its stdout, or its words when it fails.
    pub fn output(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{program} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }

    /// systemctl for the node's systemd. From a root mounted elsewhere (a DaemonSet's /host),
    /// through PID 1's mount namespace (hostPID): systemctl in a chroot ignores its requests.
    pub fn systemctl(&self, args: &[&str]) -> Result<Command, String> {
        if self.is_root() {
            let mut c = Command::new("systemctl");
            c.args(args);
            return Ok(c);
        }
        let init_root = identity(Path::new("/proc/1/root"));
        if init_root.is_none() || init_root != identity(&self.root) {
            return Err(format!("PID 1 is not the init of the node at {}: run with the host's PID namespace (hostPID), or restart containerd yourself", self.root.display()));
        }
        let mut c = Command::new("nsenter");
        c.args(["--target", "1", "--mount", "--", "systemctl"]).args(args);
        Ok(c)
    }

    /// systemd runs the node (its runtime directory exists, as `sd_booted` checks).
    pub fn systemd(&self) -> bool {
        self.path("/run/systemd/system").is_dir()
    }
}

/// (device, inode) of a file, to tell whether two paths (seen from two roots) are one file.
pub fn identity(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// One process of this machine: pid and arguments.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub args: Vec<String>,
}

impl Process {
    /// The value after `flag` (`-id X`, `--config X`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    pub fn program(&self) -> &str {
        self.args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// A path as this process sees it (through its root, so chroots and mount namespaces count).
    pub fn sees(&self, path: &str) -> PathBuf {
        let proc_root = PathBuf::from(format!("/proc/{}/root", self.pid));
        if path.starts_with('/') {
            proc_root.join(path.trim_start_matches('/'))
        } else {
            PathBuf::from(format!("/proc/{}/cwd", self.pid)).join(path)
        }
    }
}

pub fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.is_empty() {
            out.push(Process { pid, args });
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The containerd daemons that read this node's main config (so a restart message can name
/// them): the file they were given is this one, or, where it does not exist (uninstall removed
/// it), they live in this node's root.
pub fn containerds(host: &Host, main_config: &str) -> Vec<Process> {
    let ours = identity(&host.path(main_config));
    let root = identity(&host.root);
    processes()
        .into_iter()
        .filter(|p| p.program() == "containerd" && !p.args.iter().any(|a| a == "config" || a == "--version"))
        .filter(|p| {
            let config = p.flag("--config").or_else(|| p.flag("-c")).unwrap_or(main_config);
            match (identity(&p.sees(config)), ours) {
                (Some(theirs), Some(ours)) => theirs == ours,
                (None, None) => identity(&p.sees("/")) == root,
                _ => false,
            }
        })
        .collect()
}

/// A sandbox of ours: the long-running shim containerd started for a container or a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub pid: u32,
    pub namespace: String,
    pub id: String,
}

pub const SHIM: &str = "containerd-shim-beta9-sandbox";

/// Whether a shim serves this node's containerd: the socket it calls back is this node's
/// containerd socket; where its socket cannot be found (its containerd stopped), it was given
/// the same socket path and lives in this node's root.
pub fn serves_node(theirs: Option<(u64, u64)>, ours: Option<(u64, u64)>, same_address: bool, same_root: bool) -> bool {
    match (theirs, ours) {
        (Some(t), Some(o)) => t == o,
        (Some(_), None) => false,
        (None, _) => same_address && same_root,
    }
}

/// The shims of ours that serve this node's containerd.
pub fn sandboxes(host: &Host, address: &str) -> Vec<Sandbox> {
    let socket = identity(&host.path(address));
    let root = identity(&host.root);
    processes()
        .into_iter()
        .filter(|p| p.program() == SHIM && !p.args.iter().any(|a| a == "start" || a == "delete"))
        .filter(|p| {
            let Some(addr) = p.flag("-address") else { return false };
            serves_node(identity(&p.sees(addr)), socket, addr == address, identity(&p.sees("/")) == root)
        })
        .map(|p| Sandbox { pid: p.pid, namespace: p.flag("-namespace").unwrap_or("default").into(), id: p.flag("-id").unwrap_or("?").into() })
        .collect()
}

/// The running kernel's release (the node's, whatever root it is mounted at).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether this host's root may lower an OOM score (CAP_SYS_RESOURCE): containerd's CRI gives
/// a pod's sandbox -998, which fails every pod, with any runtime, where it may not.
pub fn can_lower_oom_score() -> bool {
    let path = "/proc/self/oom_score_adj";
    let Ok(cur) = std::fs::read_to_string(path).map(|s| s.trim().parse::<i32>().unwrap_or(0))
    else {
        return true;
    };
    if cur <= -1000 {
        return true;
    }
    match std::fs::write(path, (cur - 1).to_string()) {
        Ok(()) => {
            let _ = std::fs::write(path, cur.to_string());
            true
        }
        Err(e) => e.raw_os_error() != Some(libc::EPERM) && e.raw_os_error() != Some(libc::EACCES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_map_below_the_root() {
        let h = Host::new("/host");
        assert_eq!(
            h.path("/etc/containerd/config.toml"),
            PathBuf::from("/host/etc/containerd/config.toml")
        );
        assert!(!h.is_root());
        assert_eq!(Host::new("/").path("/etc/x"), PathBuf::from("/etc/x"));
        let c = h.command("runsc");
        assert_eq!(c.get_program(), "chroot");
        assert_eq!(c.get_args().collect::<Vec<_>>(), vec!["/host", "runsc"]);
        // This test's PID 1 is not the init of a node at /host.
        assert!(h.systemctl(&["restart", "containerd"]).unwrap_err().contains("hostPID"));
        let c = Host::new("/").systemctl(&["restart", "containerd"]).unwrap();
        assert_eq!(c.get_program(), "systemctl");
        assert_eq!(c.get_args().collect::<Vec<_>>(), vec!["restart", "containerd"]);
    }

    #[test]
    fn process_flags_and_program_names() {
        let p = Process {
            pid: 1,
            args: [
                "/usr/bin/containerd-shim-beta9-sandbox",
                "-namespace",
                "k8s.io",
                "-id",
                "abc",
                "-address",
                "/run/c.sock",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert_eq!(p.program(), SHIM);
        assert_eq!(p.flag("-id"), Some("abc"));
        assert_eq!(p.flag("-nope"), None);
        assert_eq!(
            p.sees("/run/c.sock"),
            PathBuf::from("/proc/1/root/run/c.sock")
        );
    }

    #[test]
    fn a_shim_is_ours_only_if_it_calls_this_nodes_containerd() {
        let (a, b) = (Some((1, 2)), Some((1, 3)));
        assert!(serves_node(a, a, false, false), "the same socket, whatever path or root");
        assert!(!serves_node(a, b, true, true), "another containerd's socket");
        assert!(!serves_node(a, None, true, true), "its containerd runs, ours does not: another's");
        assert!(serves_node(None, None, true, true), "both stopped: same path in the same root");
        assert!(!serves_node(None, None, false, true) && !serves_node(None, a, true, false));
    }

    #[test]
    fn this_process_is_found_with_its_arguments() {
        let me = std::process::id();
        assert!(processes()
            .iter()
            .any(|p| p.pid == me && !p.args.is_empty()));
        assert!(!kernel_release().is_empty());
    }
}
