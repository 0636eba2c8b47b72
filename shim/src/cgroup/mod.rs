//! The sandbox's cgroup. runsc runs with `--ignore-cgroups` (so that a sandbox ends the moment
//! its init does), so the shim does what runsc would: it makes the cgroup the spec names with the
//! spec's limits, starts runsc's sandbox and gofers inside it, reads OOM kills and usage from it,
//! rewrites its limits on Update, and removes what it made.
//!
//! cgroups-rs 0.5 and containerd-shim's helpers (in the tree) were read and not used: on v2 they
//! write v1 values as they are (shares into cpu.weight, memory+swap into memory.swap.max) and
//! watch memory.oom_control, which v2 has not; they create with create_dir_all, so nothing tells
//! what was made, and remove with sleeps between retries; their errors do not name the file.

mod layout;
mod limits;
mod path;
mod v1;
mod v2;

use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use log::{info, warn};
use oci_spec::runtime::{LinuxResources, Spec};

pub use layout::{Hierarchy, Layout};
pub use limits::{pod_memory_limit, Limits};
pub use path::{cgroupfs_path, sandbox_path};

use crate::{
    config::Config,
    error::{Error, Result},
    spec::Role,
};

/// The sandbox's cgroup: the first container's own `linux.cgroupsPath` (for a pod the pause's,
/// below the pod's cgroup that the kubelet sizes), or one under `[cgroups] default_parent`.
pub struct SandboxCgroup {
    /// Below each hierarchy's root, e.g. `default/c1`.
    path: PathBuf,
    layout: Layout,
    /// A sandbox of its own gets its spec's limits; a pod's are the pod cgroup's, set by the kubelet.
    limits: Option<Limits>,
    /// The directories this sandbox makes (its cgroup and any missing parent), deepest first.
    made: Vec<PathBuf>,
    join: CgroupJoin,
    /// A pod's app containers' memory limits, which size the sandbox's cgroup (`admit`).
    members: Mutex<PodMembers>,
}

/// What a pod's sandbox cgroup is sized from: its own use before its first app container, and
/// each app container's memory limit (None: unlimited).
#[derive(Default)]
struct PodMembers {
    baseline: Option<i64>,
    limits: BTreeMap<String, Option<i64>>,
}

impl SandboxCgroup {
    /// Plans the sandbox's cgroup; nothing is made yet. None when `[cgroups] enforce = false`.
    pub fn plan(spec: &Spec, role: &Role, config: &Config, id: &str, namespace: &str) -> Result<Option<SandboxCgroup>> {
        if !config.cgroups.enforce {
            return Ok(None);
        }
        let path = sandbox_path(spec, &config.cgroups.default_parent, namespace, id)?;
        let linux = spec.linux().as_ref();
        let limits = match role {
            Role::Single => Some(linux.and_then(|l| l.resources().as_ref()).map(Limits::from).unwrap_or_default()),
            _ => None,
        };
        let layout = Layout::current()?;
        let mut made = Vec::new();
        for root in layout.roots() {
            // Deepest first, down to the first level that exists now.
            let mut dir = root.join(&path);
            while dir != root && !dir.exists() {
                made.push(dir.clone());
                dir.pop();
            }
        }
        let procs = layout.roots().iter().map(|r| r.join(&path).join("cgroup.procs")).collect();
        let join = CgroupJoin::new(&path, procs);
        Ok(Some(SandboxCgroup { path, layout, limits, made, join, members: Mutex::default() }))
    }

    /// The cgroup, as the spec names it in cgroupfs form.
    pub fn path(&self) -> String {
        format!("/{}", self.path.display())
    }

    /// What teardown (or the `delete` action, from the record) removes.
    pub fn created_paths(&self) -> Vec<PathBuf> {
        self.made.clone()
    }

    /// Makes the cgroup and sets its limits, before runsc runs: a cgroup that cannot be made or
    /// set fails Create with the path and the kernel's words.
    pub fn create(&self) -> Result<()> {
        let started = Instant::now();
        let mut attempt = 0;
        // A parent can go meanwhile (the teardown of the sandbox that made it): make it again.
        while let Err(e) = self.make() {
            attempt += 1;
            if attempt == 3 || !matches!(&e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound) {
                return Err(e);
            }
        }
        if let Some(limits) = &self.limits {
            self.apply(limits)?;
        }
        info!("cgroup {} ready in {:?} ({} directories made)", self.path(), started.elapsed(), self.made.len());
        Ok(())
    }

    /// Makes every missing level of the cgroup, from the top, in each hierarchy.
    fn make(&self) -> Result<()> {
        for root in self.layout.roots() {
            let mut dir = root.to_path_buf();
            for part in self.path.components() {
                let parent = dir.clone();
                dir.push(part);
                if dir.is_dir() {
                    continue;
                }
                if self.layout.is_v2() {
                    v2::enable_controllers(&parent);
                }
                match std::fs::create_dir(&dir) {
                    // Made meanwhile by another sandbox with the same parent.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    other => other.map_err(Error::io(format!("create cgroup {}", dir.display())))?,
                }
                if !self.layout.is_v2() && self.layout.dir_of("cpuset", Path::new("")).as_deref() == Some(root) {
                    // A new v1 cpuset has no CPUs and no memory nodes: nothing could join it.
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = read(&parent.join(file)).unwrap_or_default();
                        if !value.trim().is_empty() {
                            write(&dir.join(file), value.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts the processes of the runsc calls that start sandbox processes into the cgroup: the
    /// sandbox, its gofers and everything they start are born in it, with no byte or cycle
    /// counted elsewhere first.
    pub fn join(&self) -> CgroupJoin {
        self.join.clone()
    }

    fn apply(&self, l: &Limits) -> Result<()> {
        let swap = |v1: &str, v2: &str| {
            let file = if self.layout.is_v2() { v2 } else { v1 };
            self.file("memory", file).is_some_and(|f| f.exists())
        };
        let writes = match self.layout {
            Layout::V1(_) => {
                let current = self.read("memory.limit_in_bytes").and_then(|s| s.trim().parse().ok()).unwrap_or(-1);
                v1::v1_writes(l, current, swap("memory.memsw.limit_in_bytes", ""))
            }
            Layout::V2(_) => v2::v2_writes(l, &self.read("cpu.max").unwrap_or_default(), swap("", "memory.swap.max"))?,
        };
        for (file, value) in writes {
            let controller = file.split('.').next().unwrap_or_default();
            let path = self.file(controller, file).ok_or_else(|| {
                Error::FailedPrecondition(format!("{file}: the {controller} cgroup controller is not mounted on this host"))
            })?;
            write(&path, &value)?;
        }
        Ok(())
    }

    fn file(&self, controller: &str, file: &str) -> Option<PathBuf> {
        self.layout.dir_of(controller, &self.path).map(|d| d.join(file))
    }

    /// A file of the cgroup, found by its controller (the part of its name before the dot).
    pub fn read(&self, file: &str) -> Option<String> {
        let controller = file.split('.').next()?;
        read(&self.file(controller, file)?)
    }

    pub fn is_v2(&self) -> bool {
        self.layout.is_v2()
    }

    /// How many processes the kernel's OOM killer has killed in the cgroup. The kernel counts
    /// the kill before it sends SIGKILL, so the count is right by the time the exit is reaped.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.is_v2() { "memory.events" } else { "memory.oom_control" };
        self.read(file).map(|s| keyed(&s, "oom_kill")).unwrap_or(0)
    }

    /// Why runsc could not start the sandbox, when the cgroup's limits are the reason.
    pub fn explain(&self, e: Error) -> Error {
        let pids_refused = self.read("pids.events").map(|s| keyed(&s, "max")).unwrap_or(0);
        let hint = if self.oom_kills() > 0 {
            "the sandbox's memory limit was reached while runsc started it (gVisor's sandbox and gofer use about 15 MiB of their own)"
        } else if pids_refused > 0 {
            "the sandbox's pids limit was reached while runsc started it (its host processes and threads count, about 25 for the sandbox itself)"
        } else {
            return e;
        };
        Error::FailedPrecondition(format!("{e} ({hint}; cgroup {})", self.path()))
    }

    /// Sets new limits (Update). A pod's are the kubelet's, on the pod's cgroup.
    pub async fn update(&self, l: &Limits) -> Result<()> {
        if self.limits.is_none() {
            info!("update of pod sandbox cgroup {} ignored: the pod's limits are its cgroup's, which the kubelet sets", self.path());
            return Ok(());
        }
        self.apply_settled(l).await
    }

    /// Sets limits that may put memory below what the cgroup holds now. v1 refuses (EBUSY) such
    /// a limit, and gVisor's sentry gives memory its workload freed back to the host a moment
    /// later: wait (bounded) for the kernel's word that the usage fell below the limit, setting
    /// it again each time, and if it still holds more, say so.
    async fn apply_settled(&self, l: &Limits) -> Result<()> {
        let deadline = Instant::now() + MEMORY_SETTLE;
        loop {
            match self.apply(l) {
                Err(Error::Io { source, context }) if source.raw_os_error() == Some(libc::EBUSY) && !self.is_v2() => {
                    let (Some(limit), Some(dir)) = (l.memory, self.layout.dir_of("memory", &self.path)) else {
                        return Err(Error::Io { source, context });
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let usage = self.read("memory.usage_in_bytes").unwrap_or_default();
                        return Err(Error::FailedPrecondition(format!(
                            "the sandbox still holds {} bytes, more than the new memory limit of {limit}, {MEMORY_SETTLE:?} after asking: \
memory its workload freed is given back to the host by gVisor a moment later, and memory still in use stays; try again, or free memory \
in the sandbox first (cgroup {}: {context}: {source})",
                            usage.trim(),
                            self.path()
                        )));
                    }
                    let waited = tokio::task::spawn_blocking(move || v1::wait_usage_below(&dir, limit, left)).await;
                    if let Ok(Err(e)) = waited {
                        warn!("waiting for cgroup {} to free memory: {e}", self.path());
                    }
                }
                other => return other,
            }
        }
    }

    /// A pod's app container `id` joins with its memory limit: the sandbox's cgroup grows by it
    /// (`pod_memory_limit`). gVisor runs a pod's containers in one sandbox, so a container's
    /// limit holds for the pod as a whole, and an OOM kill ends the pod's sandbox.
    pub fn admit(&self, id: &str, resources: Option<&LinuxResources>) -> Result<()> {
        let Some((limit, before)) = self.size_for(id, resources) else { return Ok(()) };
        let applied = self.apply(&limit);
        if applied.is_err() {
            self.unsize(id, before);
        }
        applied
    }

    /// Update of a pod's app container: its new memory limit resizes the pod's sandbox cgroup,
    /// down too, right after the workload freed memory (`apply_settled`).
    pub async fn resize(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let Some((limit, before)) = self.size_for(id, Some(resources)) else { return Ok(()) };
        let applied = self.apply_settled(&limit).await;
        if applied.is_err() {
            self.unsize(id, before);
        }
        applied
    }

    /// Records `id`'s memory limit among the pod's; returns the sandbox's new limit and the
    /// member's limit before, or None where the pod's limits are the kubelet's or unknown.
    fn size_for(&self, id: &str, resources: Option<&LinuxResources>) -> Option<(Limits, Option<Option<i64>>)> {
        if self.limits.is_some() {
            return None;
        }
        let memory = resources.map(Limits::from).and_then(|l| l.memory).filter(|m| *m > 0);
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.baseline.is_none() {
            let file = if self.is_v2() { "memory.current" } else { "memory.usage_in_bytes" };
            members.baseline = self.read(file).and_then(|s| s.trim().parse().ok());
        }
        let before = members.limits.insert(id.to_string(), memory);
        let baseline = members.baseline?;
        Some((Limits { memory: Some(pod_memory_limit(baseline, &members.limits)), ..Default::default() }, before))
    }

    /// Puts a member's memory limit back as it was before a resize the kernel refused.
    fn unsize(&self, id: &str, before: Option<Option<i64>>) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        match before {
            Some(limit) => members.limits.insert(id.to_string(), limit),
            None => members.limits.remove(id),
        };
    }

    /// Removes the empty cgroup runsc makes for every app container (for cAdvisor's sake, even
    /// under --ignore-cgroups), which its delete leaves behind when the sandbox is already gone.
    pub fn remove_app_container_cgroup(&self, cgroups_path: &str) {
        let Ok(path) = cgroupfs_path(cgroups_path, Path::new("/")) else { return };
        if path.as_os_str().is_empty() || path == self.path {
            return;
        }
        for root in self.layout.roots() {
            // Empty or gone: anything else (a process in it) keeps it, as rmdir decides.
            let _ = std::fs::remove_dir(root.join(&path));
        }
    }

    /// A pod's app container is gone: the sandbox's cgroup shrinks back.
    pub fn leave(&self, id: &str) {
        if self.limits.is_some() {
            return;
        }
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.limits.remove(id).is_none() {
            return;
        }
        if let Some(baseline) = members.baseline {
            // Below the sandbox's use, v1 refuses (EBUSY): the larger limit stays.
            if let Err(e) = self.apply(&Limits { memory: Some(pod_memory_limit(baseline, &members.limits)), ..Default::default() }) {
                warn!("pod cgroup {}: {e}", self.path());
            }
        }
    }

    /// Removes what this sandbox made; false if something could not go yet.
    pub async fn remove(&self) -> bool {
        remove_recorded(&self.made).await
    }
}

/// Joins the cgroup in a child before it runs a program (`pre_exec`).
#[derive(Clone, Debug)]
pub struct CgroupJoin {
    path: String,
    procs: Arc<Vec<CString>>,
}

impl CgroupJoin {
    fn new(path: &Path, procs: Vec<PathBuf>) -> CgroupJoin {
        let procs = procs.iter().filter_map(|p| CString::new(p.as_os_str().as_encoded_bytes()).ok()).collect();
        CgroupJoin { path: format!("/{}", path.display()), procs: Arc::new(procs) }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The child writes "0" (itself) into each `cgroup.procs`; only async-signal-safe calls.
    pub fn apply(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the closure runs between fork and exec and only calls open, write and close.
        unsafe {
            cmd.pre_exec(move || {
                for f in procs.iter() {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
    }
}

/// How long Update waits for a v1 cgroup's memory usage to fall below a new, lower limit.
const MEMORY_SETTLE: Duration = Duration::from_secs(5);

/// Removes cgroups this shim made (from the record, after a shim crash too), deepest first,
/// once the sandbox is gone: a cgroup with children stays. Returns whether all are gone.
pub async fn remove_recorded(paths: &[PathBuf]) -> bool {
    let mut all = true;
    for dir in paths {
        if !remove_dir(dir).await {
            all = false;
        }
    }
    all
}

/// rmdir of a cgroup whose sandbox is gone. Processes still in it were born in it, so they are
/// what the sandbox left (a gofer or systrap stub still exiting): they are killed, and the
/// removal waits, boundedly, for them to be gone.
async fn remove_dir(dir: &Path) -> bool {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut killed = false;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => {
                if killed {
                    info!("cgroup {}: removed {:?} after killing what the sandbox left in it", dir.display(), started.elapsed());
                }
                return true;
            }
            // Nothing there (not even a directory: a path the kernel refused to make).
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => return true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline && !processes(dir).is_empty() => {
                if !killed {
                    for pid in processes(dir) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                    }
                    killed = true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                warn!("remove cgroup {}: {e}", dir.display());
                return false;
            }
        }
    }
}

fn processes(dir: &Path) -> Vec<i32> {
    read(&dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(Error::io(format!("write {value:?} to {}", path.display())))
}

/// The value of `key` in a flat-keyed file (`key value` lines: memory.events, cpu.stat, ...).
pub fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), 2);
        assert_eq!(keyed("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "max"), 3);
        assert_eq!(keyed("max 0\n", "oom_kill"), 0);
    }
}
