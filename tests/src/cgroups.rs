//! The host's cgroups as the tests see them: where a controller's files are, which cgroups
//! carry a test's name (the leak check), and cgroups a test makes itself, as a kubelet would.

use std::path::{Path, PathBuf};

/// Mount points of the cgroup filesystems, with their controllers (empty for cgroup2).
fn mounts() -> Vec<(PathBuf, Vec<String>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = PathBuf::from(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            match (r.next()?, r.nth(1)?) {
                ("cgroup", opts) => Some((mount, opts.split(',').map(str::to_string).collect())),
                ("cgroup2", _) => Some((mount, Vec::new())),
                _ => None,
            }
        })
        .collect()
}

/// Whether the host runs cgroup v2 alone (the shim then uses the v2 tree).
pub fn v2() -> bool {
    mounts().iter().any(|(m, c)| c.is_empty() && m == Path::new("/sys/fs/cgroup"))
}

/// The directory of cgroup `path` (cgroupfs form, e.g. `/default/c1`) that holds `controller`'s files.
pub fn dir(controller: &str, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if v2() {
        return Path::new("/sys/fs/cgroup").join(rel);
    }
    let (mount, _) = mounts()
        .into_iter()
        .find(|(_, c)| c.iter().any(|x| x == controller))
        .unwrap_or_else(|| panic!("no cgroup v1 hierarchy has the {controller} controller"));
    mount.join(rel)
}

/// A file of cgroup `path`, found by its controller (the part of its name before the dot).
pub fn read(path: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(dir(file.split('.').next().unwrap(), path).join(file)).ok()
}

pub fn read_u64(path: &str, file: &str) -> u64 {
    read(path, file).and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| panic!("cannot read {file} of cgroup {path}"))
}

/// The value of `key` in a `key value` file of cgroup `path` (cpu.stat, memory.events, ...).
pub fn keyed(path: &str, file: &str, key: &str) -> u64 {
    read(path, file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The cgroup (cgroupfs form) that `pid` is in for `controller`.
pub fn of_process(pid: u32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if v2() { ctrls.is_empty() } else { ctrls.split(',').any(|c| c == controller) };
        hit.then(|| path.to_string())
    })
}

/// Every cgroup on the host whose directory name holds `name`, in every hierarchy.
pub fn named(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().contains(name) {
                    out.push(e.path());
                }
                if depth < 12 {
                    walk(&e.path(), name, depth + 1, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (mount, _) in mounts() {
        walk(&mount, name, 0, &mut out);
    }
    out
}

/// A cgroup the test makes in every hierarchy (as the kubelet makes a pod's), with `files`
/// written; removed when dropped, which fails the test if anything is left in it.
pub struct Made {
    pub path: String,
    dirs: Vec<PathBuf>,
}

impl Made {
    pub fn new(path: &str, files: &[(&str, &str)]) -> Made {
        let mut dirs = Vec::new();
        let roots: Vec<PathBuf> = if v2() { vec!["/sys/fs/cgroup".into()] } else { mounts().into_iter().map(|(m, _)| m).collect() };
        for root in roots {
            let d = root.join(path.trim_start_matches('/'));
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("make cgroup {}: {e}", d.display()));
            if !v2() && root.ends_with("cpuset") {
                // A new v1 cpuset has no CPUs or memory nodes; a kubelet copies them down.
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    std::fs::write(d.join(f), std::fs::read_to_string(root.join(f)).unwrap().trim()).unwrap();
                }
            }
            dirs.push(d);
        }
        for (file, value) in files {
            let f = dir(file.split('.').next().unwrap(), path).join(file);
            std::fs::write(&f, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", f.display()));
        }
        Made { path: path.into(), dirs }
    }

    /// Only in the cpuset hierarchy, and with nothing in cpuset.cpus: a cgroup no process can join.
    pub fn empty_cpuset(path: &str) -> Made {
        let d = dir("cpuset", path);
        std::fs::create_dir(&d).unwrap();
        Made { path: path.into(), dirs: vec![d] }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let left: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::remove_dir(d).err().filter(|e| e.kind() != std::io::ErrorKind::NotFound).map(|e| format!("{}: {e}", d.display())))
            .collect();
        if !left.is_empty() && !std::thread::panicking() {
            let inside: Vec<PathBuf> = self.dirs.iter().flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir())).collect();
            panic!("cgroup {} could not be removed: {left:?}; cgroups left in it: {inside:?}", self.path);
        }
    }
}
