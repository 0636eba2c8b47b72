//! The sandbox's cgroup. runsc runs with `--ignore-cgroups` (so that a sandbox ends the moment
//! its init does), so the shim does what runsc would: it makes the cgroup the spec names with the
//! spec's limits, starts runsc's sandbox and gofers inside it, reads OOM kills and usage from it,
//! rewrites its limits on Update, and removes what it made.
//!
//! cgroups-rs 0.5 and containerd-shim's helpers (in the tree) were read and not used: on v2 they
//! write v1 values as they are (shares into cpu.weight, memory+swap into memory.swap.max) and
//! watch memory.oom_control, which v2 has not; they create with create_dir_all, so nothing tells
//! what was made, and remove with sleeps between retries; their errors do not name the file.

use std::{
    ffi::CString,
    io,
    os::unix::process::CommandExt,
    path::{Component, Path, PathBuf},
    process::Command,
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use log::{info, warn};
use oci_spec::runtime::{LinuxResources, Spec};

use crate::{
    config::Config,
    container::Container,
    error::{Error, Result},
    spec::Role,
};

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The v2 controllers the shim uses, enabled down to the sandbox's cgroup where the parent has them.
const V2_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

/// Where the cgroup filesystems are: one hierarchy per v1 controller set, or the v2 tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    V1(Vec<Hierarchy>),
    V2(PathBuf),
}

/// A mounted v1 hierarchy and its controllers (`name=systemd` for a named one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    pub controllers: Vec<String>,
}

impl Layout {
    /// From `/proc/self/mountinfo`: cgroup2 on /sys/fs/cgroup is a v2 host; otherwise every v1
    /// hierarchy (a hybrid host's controller-less cgroup2 is left alone, as runc's fs driver does).
    pub fn parse(mountinfo: &str) -> Option<Layout> {
        let mut v1 = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mount = left.split(' ').nth(4).map(unescape);
            let mut r = right.split(' ');
            let (Some(mount), Some(fstype), Some(opts)) = (mount, r.next(), r.nth(1)) else { continue };
            match fstype {
                "cgroup2" if mount == Path::new("/sys/fs/cgroup") => return Some(Layout::V2(mount)),
                "cgroup" => {
                    let controllers: Vec<String> = opts
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro" | "noprefix" | "xattr" | "clone_children") && !o.contains('=') || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    v1.push(Hierarchy { mount, controllers });
                }
                _ => {}
            }
        }
        (!v1.is_empty()).then_some(Layout::V1(v1))
    }

    fn current() -> Result<Layout> {
        let text = std::fs::read_to_string(MOUNTINFO).map_err(Error::io(format!("read {MOUNTINFO}")))?;
        Layout::parse(&text).ok_or_else(|| Error::FailedPrecondition(format!(
            "no cgroup filesystem is mounted (see {MOUNTINFO}); mount them, or set [cgroups] enforce = false"
        )))
    }

    /// The roots the cgroup `path` lives under: one per v1 hierarchy, or the v2 root.
    fn roots(&self) -> Vec<&Path> {
        match self {
            Layout::V1(hs) => hs.iter().map(|h| h.mount.as_path()).collect(),
            Layout::V2(root) => vec![root.as_path()],
        }
    }

    /// The directory of `path` that holds `controller`'s files.
    fn dir_of(&self, controller: &str, path: &Path) -> Option<PathBuf> {
        match self {
            Layout::V1(hs) => hs.iter().find(|h| h.controllers.iter().any(|c| c == controller)).map(|h| h.mount.join(path)),
            Layout::V2(root) => Some(root.join(path)),
        }
    }

    fn is_v2(&self) -> bool {
        matches!(self, Layout::V2(_))
    }
}

/// Mount points escape spaces and the like as octal (`\040`).
pub(crate) fn unescape(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// The cgroupfs path (relative to each hierarchy's root) of a spec's `linux.cgroupsPath`: a
/// cgroupfs path as it is, a relative one under `parent`, and systemd's `slice:prefix:name` as
/// runc and runsc expand it without systemd.
pub fn cgroupfs_path(cgroups_path: &str, parent: &Path) -> Result<PathBuf> {
    let bad = |why: &str| Error::InvalidArgument(format!("linux.cgroupsPath {cgroups_path:?}: {why}"));
    let path = match systemd_path(cgroups_path) {
        Some(p) => p.map_err(|e| bad(&e))?,
        None if cgroups_path.starts_with('/') => PathBuf::from(cgroups_path),
        None => parent.join(cgroups_path),
    };
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(bad("must not contain ..")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("is the root cgroup, which holds the whole host"));
    }
    Ok(out)
}

/// `slice:prefix:name` (the kubelet's systemd driver): `a-b.slice:cri-containerd:id` is
/// `/a.slice/a-b.slice/cri-containerd-id.scope`. None when `s` is not in that form.
fn systemd_path(s: &str) -> Option<std::result::Result<PathBuf, String>> {
    let parts: Vec<&str> = s.split(':').collect();
    let [slice, prefix, name] = parts[..] else { return None };
    if !slice.is_empty() && !slice.ends_with(".slice") {
        return None;
    }
    Some((|| {
        let mut path = expand_slice(if slice.is_empty() { "system.slice" } else { slice })?;
        if name.is_empty() {
            return Err("the unit name is empty".to_string());
        }
        path.push(if name.ends_with(".slice") { name.to_string() } else { format!("{prefix}-{name}.scope") });
        Ok(path)
    })())
}

/// systemd's slice nesting: each `-` opens a level, `-.slice` is the root.
fn expand_slice(slice: &str) -> std::result::Result<PathBuf, String> {
    let stem = slice.strip_suffix(".slice").ok_or_else(|| format!("{slice:?} is not a slice"))?;
    let mut path = PathBuf::from("/");
    if stem == "-" {
        return Ok(path);
    }
    if stem.is_empty() || stem.contains('/') || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(format!("{slice:?} is not a valid slice name"));
    }
    let mut prefix = String::new();
    for part in stem.split('-') {
        prefix = if prefix.is_empty() { part.to_string() } else { format!("{prefix}-{part}") };
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

/// The sandbox's cgroup (cgroupfs form): the spec's, or `<parent>/<namespace>/<id>` when it names none.
pub fn sandbox_path(spec: &Spec, parent: &Path, namespace: &str, id: &str) -> Result<PathBuf> {
    match spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned()) {
        Some(p) if !p.is_empty() => cgroupfs_path(&p, parent),
        _ => cgroupfs_path(&format!("{namespace}/{id}"), parent),
    }
}

/// The limits the shim applies, from the spec's `linux.resources`; zeros are unset, as runc reads
/// them. Devices, hugepages, block I/O, network and `unified` are not applied (see the README).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<i64>,
    /// Memory plus swap, as OCI has it.
    pub swap: Option<i64>,
    pub reservation: Option<i64>,
    pub shares: Option<u64>,
    pub quota: Option<i64>,
    pub period: Option<u64>,
    pub cpus: Option<String>,
    pub mems: Option<String>,
    pub pids: Option<i64>,
}

impl From<&LinuxResources> for Limits {
    fn from(r: &LinuxResources) -> Limits {
        let nz = |v: Option<i64>| v.filter(|v| *v != 0);
        let m = r.memory().as_ref();
        let c = r.cpu().as_ref();
        let s = |v: Option<&String>| v.filter(|v| !v.is_empty()).cloned();
        Limits {
            memory: nz(m.and_then(|m| m.limit())),
            swap: nz(m.and_then(|m| m.swap())),
            reservation: nz(m.and_then(|m| m.reservation())),
            shares: c.and_then(|c| c.shares()).filter(|v| *v != 0),
            quota: nz(c.and_then(|c| c.quota())),
            period: c.and_then(|c| c.period()).filter(|v| *v != 0),
            cpus: s(c.and_then(|c| c.cpus().as_ref())),
            mems: s(c.and_then(|c| c.mems().as_ref())),
            pids: nz(r.pids().as_ref().map(|p| p.limit())),
        }
    }
}

/// One file write: `file` (its controller is the part before the dot) gets `value`.
pub type Write = (&'static str, String);

fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// The v1 writes for `l`, in an order the kernel accepts: memory+swap may never be below
/// memory, so when both change the one that grows goes first (runc's order). `current` is
/// memory.limit_in_bytes now; `swap_accounting` whether memory.memsw.* exists.
pub fn v1_writes(l: &Limits, current: i64, swap_accounting: bool) -> Vec<Write> {
    let mut w: Vec<Write> = Vec::new();
    let mut swap = l.swap.filter(|_| swap_accounting);
    // An unlimited memory frees swap too, or the old memsw limit would still hold it.
    if l.memory == Some(-1) && swap.is_none() && swap_accounting {
        swap = Some(-1);
    }
    let (mem, memsw) = (l.memory.map(|m| ("memory.limit_in_bytes", m.to_string())), swap.map(|s| ("memory.memsw.limit_in_bytes", s.to_string())));
    match (mem, memsw) {
        (Some(m), Some(s)) if l.swap == Some(-1) || swap == Some(-1) || (current >= 0 && current < swap.unwrap_or(0)) => w.extend([s, m]),
        (m, s) => w.extend(m.into_iter().chain(s)),
    }
    if let Some(r) = l.reservation {
        w.push(("memory.soft_limit_in_bytes", r.to_string()));
    }
    if let Some(s) = l.shares {
        w.push(("cpu.shares", s.to_string()));
    }
    if let Some(p) = l.period {
        w.push(("cpu.cfs_period_us", p.to_string()));
    }
    if let Some(q) = l.quota {
        w.push(("cpu.cfs_quota_us", q.to_string()));
    }
    w.extend(cpuset_and_pids(l));
    w
}

/// The v2 writes for `l` (Documentation/admin-guide/cgroup-v2.rst): memory.swap.max is swap
/// alone, cpu.weight is 1..10000 (runc's mapping from shares), cpu.max is "$MAX $PERIOD".
/// `cpu_max` is cpu.max now, for a period changed without a quota.
pub fn v2_writes(l: &Limits, cpu_max: &str, swap_accounting: bool) -> Result<Vec<Write>> {
    let mut w: Vec<Write> = Vec::new();
    if let Some(m) = l.memory {
        w.push(("memory.max", max_or(m)));
    }
    if let Some(s) = l.swap.filter(|_| swap_accounting) {
        let swap_only = match (s, l.memory) {
            (-1, _) => -1,
            (_, Some(m)) if m > 0 && s >= m => s - m,
            (_, Some(m)) if m > 0 => {
                return Err(Error::InvalidArgument(format!("memory+swap limit {s} is below the memory limit {m}")))
            }
            _ => return Err(Error::InvalidArgument("a swap limit needs a memory limit on cgroup v2".into())),
        };
        w.push(("memory.swap.max", max_or(swap_only)));
    }
    if let Some(r) = l.reservation {
        w.push(("memory.low", max_or(r)));
    }
    if let Some(s) = l.shares {
        w.push(("cpu.weight", shares_to_weight(s).to_string()));
    }
    if l.quota.is_some() || l.period.is_some() {
        let max = match l.quota {
            Some(q) => max_or(q),
            None => cpu_max.split_whitespace().next().unwrap_or("max").to_string(),
        };
        w.push(("cpu.max", match l.period {
            Some(p) => format!("{max} {p}"),
            None => max,
        }));
    }
    w.extend(cpuset_and_pids(l));
    Ok(w)
}

fn cpuset_and_pids(l: &Limits) -> Vec<Write> {
    let mut w: Vec<Write> = Vec::new();
    if let Some(c) = &l.cpus {
        w.push(("cpuset.cpus", c.clone()));
    }
    if let Some(m) = &l.mems {
        w.push(("cpuset.mems", m.clone()));
    }
    if let Some(p) = l.pids {
        w.push(("pids.max", max_or(p)));
    }
    w
}

/// runc's mapping of cgroup v1 shares (2..262144) onto v2 weights (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
}

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

/// The memory limit of a pod's sandbox: what the sandbox used on its own (sentry, gofer, pause)
/// plus every app container's limit, as the kubelet sizes a pod's cgroup (the sum of its
/// containers' limits plus the RuntimeClass overhead); unlimited (-1) while any app container
/// has no limit, or none is there.
pub fn pod_memory_limit(baseline: i64, limits: &BTreeMap<String, Option<i64>>) -> i64 {
    if limits.is_empty() {
        return -1;
    }
    limits.values().try_fold(baseline, |sum, l| l.map(|l| sum + l)).unwrap_or(-1)
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
                    enable_controllers(&parent);
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
                v1_writes(l, current, swap("memory.memsw.limit_in_bytes", ""))
            }
            Layout::V2(_) => v2_writes(l, &self.read("cpu.max").unwrap_or_default(), swap("", "memory.swap.max"))?,
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
    pub fn update(&self, l: &Limits) -> Result<()> {
        if self.limits.is_none() {
            info!("update of pod sandbox cgroup {} ignored: the pod's limits are its cgroup's, which the kubelet sets", self.path());
            return Ok(());
        }
        self.apply(l)
    }

    /// A pod's app container `id` joins with its memory limit: the sandbox's cgroup grows by it
    /// (`pod_memory_limit`). gVisor runs a pod's containers in one sandbox, so a container's
    /// limit holds for the pod as a whole, and an OOM kill ends the pod's sandbox.
    pub fn admit(&self, id: &str, resources: Option<&LinuxResources>) -> Result<()> {
        if self.limits.is_some() {
            return Ok(());
        }
        let memory = resources.map(Limits::from).and_then(|l| l.memory).filter(|m| *m > 0);
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.baseline.is_none() {
            let file = if self.is_v2() { "memory.current" } else { "memory.usage_in_bytes" };
            members.baseline = self.read(file).and_then(|s| s.trim().parse().ok());
        }
        members.limits.insert(id.to_string(), memory);
        let Some(baseline) = members.baseline else { return Ok(()) };
        let limit = pod_memory_limit(baseline, &members.limits);
        let applied = self.apply(&Limits { memory: Some(limit), ..Default::default() });
        if applied.is_err() {
            members.limits.remove(id);
        }
        applied
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
const MEMORY_SETTLE: Duration = Duration::from_secs(2);

/// Update: `resources` is containerd's `LinuxResources` as JSON (what `typeurl` makes of it).
pub async fn update(c: &Container, resources: &[u8]) -> Result<()> {
    let r: LinuxResources = serde_json::from_slice(resources)
        .map_err(|e| Error::InvalidArgument(format!("Update: resources are not OCI LinuxResources: {e}")))?;
    let sandbox = c.sandbox();
    let Some(cg) = sandbox.cgroup() else {
        return Err(Error::FailedPrecondition(
            "Update needs the shim to manage the sandbox's cgroup, which [cgroups] enforce = false turned off".into(),
        ));
    };
    if !c.is_first() {
        // One sandbox, one cgroup: an app container's new memory limit resizes the pod's.
        return cg.admit(c.id(), Some(&r));
    }
    let limits = Limits::from(&r);
    match cg.update(&limits) {
        // v1 refuses (EBUSY) a memory limit below what the cgroup holds, and gVisor's sentry gives
        // freed memory back to the host a moment after the workload frees it: wait for the
        // kernel's word that the usage fell below the limit, then set it again.
        Err(Error::Io { source, context }) if source.raw_os_error() == Some(libc::EBUSY) && !cg.is_v2() => {
            let (Some(limit), Some(dir)) = (limits.memory, cg.layout.dir_of("memory", &cg.path)) else {
                return Err(Error::Io { source, context });
            };
            let waited = tokio::task::spawn_blocking(move || wait_usage_below(&dir, limit, MEMORY_SETTLE)).await;
            if let Ok(Err(e)) = waited {
                warn!("waiting for cgroup {} to free memory: {e}", cg.path());
            }
            cg.update(&limits)
        }
        other => other,
    }
}

/// Waits until a v1 memory cgroup's usage is below `limit`, told by a threshold event
/// (cgroup.event_control), for at most `within`.
fn wait_usage_below(dir: &Path, limit: i64, within: Duration) -> io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let usage_file = dir.join("memory.usage_in_bytes");
    let usage = std::fs::File::open(&usage_file)?;
    // SAFETY: eventfd returns a new descriptor or -1, checked before it is owned.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    std::fs::write(dir.join("cgroup.event_control"), format!("{} {} {limit}", efd.as_raw_fd(), usage.as_raw_fd()))?;
    // The event fires on a crossing only: below already, nothing is to come.
    let now = || read(&usage_file).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(i64::MAX);
    if now() < limit {
        return Ok(());
    }
    let mut fds = [nix::poll::PollFd::new(efd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = u16::try_from(within.as_millis()).unwrap_or(u16::MAX);
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).map_err(io::Error::from)?;
    Ok(())
}

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

/// Turns on the controllers the shim uses for `dir`'s children, where `dir` has them; a
/// controller that cannot be turned on shows later as the limit that cannot be set.
fn enable_controllers(dir: &Path) {
    let available = read(&dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in V2_CONTROLLERS {
        let has = |s: &str| s.split_whitespace().any(|x| x == c);
        if has(&available) && !has(&enabled) {
            if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                warn!("enable the {c} controller in {}: {e}", dir.display());
            }
        }
    }
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

    const V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn layout_is_read_from_mountinfo() {
        let Some(Layout::V1(hs)) = Layout::parse(V1) else { panic!("v1 expected") };
        let names: Vec<_> = hs.iter().map(|h| (h.mount.to_str().unwrap(), h.controllers.join(","))).collect();
        assert_eq!(
            names,
            [
                ("/sys/fs/cgroup/cpu", "cpu".to_string()),
                ("/sys/fs/cgroup/cpuset", "cpuset".into()),
                ("/sys/fs/cgroup/memory", "memory".into()),
                ("/sys/fs/cgroup/systemd", "name=systemd".into())
            ]
        );
        let layout = Layout::V1(hs);
        assert_eq!(layout.dir_of("memory", Path::new("default/c")), Some("/sys/fs/cgroup/memory/default/c".into()));
        assert_eq!(layout.dir_of("pids", Path::new("default/c")), None);

        let v2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(Layout::parse(v2), Some(Layout::V2("/sys/fs/cgroup".into())));
        assert_eq!(Layout::parse("22 1 0:5 / /proc rw - proc proc rw\n"), None);
        assert_eq!(unescape(r"/a\040b"), PathBuf::from("/a b"));
    }

    #[test]
    fn cgroups_path_in_both_forms() {
        let p = |s: &str| cgroupfs_path(s, Path::new("/beta9")).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(p("/default/c1").unwrap(), "default/c1");
        assert_eq!(p("k8s.io/c1").unwrap(), "beta9/k8s.io/c1");
        assert_eq!(
            p("kubepods-burstable-pod1.slice:cri-containerd:abc").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
        );
        assert_eq!(p("machine.slice:libpod:x").unwrap(), "machine.slice/libpod-x.scope");
        assert_eq!(p(":cri-containerd:abc").unwrap(), "system.slice/cri-containerd-abc.scope");
        assert_eq!(p("-.slice:p:a.slice").unwrap(), "a.slice");
        // A colon in a cgroupfs path is just a name.
        assert_eq!(p("/a:b").unwrap(), "a:b");
        for bad in ["/", "/a/../b", "a--b.slice:p:n", "-a.slice:p:n", "a-.slice:p:n", "a.slice:p:"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("linux.cgroupsPath") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_spec_without_a_cgroup_goes_under_the_default_parent() {
        use oci_spec::runtime::LinuxBuilder;
        let with = |path: Option<&str>| {
            let mut linux = LinuxBuilder::default();
            if let Some(p) = path {
                linux = linux.cgroups_path(p);
            }
            let spec = oci_spec::runtime::SpecBuilder::default().linux(linux.build().unwrap()).build().unwrap();
            sandbox_path(&spec, Path::new("/beta9"), "default", "c1").unwrap()
        };
        assert_eq!(with(None), PathBuf::from("beta9/default/c1"));
        assert_eq!(with(Some("")), PathBuf::from("beta9/default/c1"));
        assert_eq!(with(Some("/k8s.io/p1")), PathBuf::from("k8s.io/p1"));
    }

    fn limits(memory: Option<i64>, swap: Option<i64>) -> Limits {
        Limits { memory, swap, ..Default::default() }
    }

    #[test]
    fn pod_memory_is_the_sandboxs_own_plus_its_containers_limits() {
        let mut m = BTreeMap::new();
        assert_eq!(pod_memory_limit(30, &m), -1);
        m.insert("a".to_string(), Some(15));
        m.insert("b".to_string(), Some(10));
        assert_eq!(pod_memory_limit(30, &m), 55);
        m.insert("c".to_string(), None);
        assert_eq!(pod_memory_limit(30, &m), -1);
    }

    #[test]
    fn v1_writes_keep_memsw_above_memory() {
        let files = |w: Vec<Write>| w.into_iter().map(|(f, v)| format!("{f}={v}")).collect::<Vec<_>>();
        // Growing: memsw first; shrinking: memory first.
        assert_eq!(
            files(v1_writes(&limits(Some(200), Some(400)), 100, true)),
            ["memory.memsw.limit_in_bytes=400", "memory.limit_in_bytes=200"]
        );
        assert_eq!(
            files(v1_writes(&limits(Some(50), Some(50)), 100, true)),
            ["memory.limit_in_bytes=50", "memory.memsw.limit_in_bytes=50"]
        );
        // No swap accounting: swap is not written; unlimited memory frees memsw too.
        assert_eq!(files(v1_writes(&limits(Some(50), Some(50)), 100, false)), ["memory.limit_in_bytes=50"]);
        assert_eq!(files(v1_writes(&limits(Some(-1), None), 100, true)), ["memory.memsw.limit_in_bytes=-1", "memory.limit_in_bytes=-1"]);
        let all = Limits {
            reservation: Some(10),
            shares: Some(512),
            quota: Some(25000),
            period: Some(100000),
            cpus: Some("0".into()),
            mems: Some("0".into()),
            pids: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            files(v1_writes(&all, -1, true)),
            [
                "memory.soft_limit_in_bytes=10",
                "cpu.shares=512",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=25000",
                "cpuset.cpus=0",
                "cpuset.mems=0",
                "pids.max=max"
            ]
        );
    }

    #[test]
    fn v2_writes_convert_from_oci() {
        let files = |w: Result<Vec<Write>>| w.unwrap().into_iter().map(|(f, v)| format!("{f}={v}")).collect::<Vec<_>>();
        assert_eq!(files(v2_writes(&limits(Some(64), Some(96)), "max 100000", true)), ["memory.max=64", "memory.swap.max=32"]);
        assert_eq!(files(v2_writes(&limits(Some(-1), Some(-1)), "", true)), ["memory.max=max", "memory.swap.max=max"]);
        assert_eq!(files(v2_writes(&limits(Some(64), Some(64)), "", false)), ["memory.max=64"]);
        assert!(v2_writes(&limits(None, Some(64)), "", true).is_err());
        assert!(v2_writes(&limits(Some(64), Some(32)), "", true).is_err());
        let cpu = |quota, period, now| files(v2_writes(&Limits { quota, period, shares: Some(1024), ..Default::default() }, now, true));
        assert_eq!(cpu(Some(25000), Some(100000), "max 100000"), ["cpu.weight=39", "cpu.max=25000 100000"]);
        assert_eq!(cpu(Some(-1), None, "50000 100000"), ["cpu.weight=39", "cpu.max=max"]);
        assert_eq!(cpu(None, Some(50000), "20000 100000"), ["cpu.weight=39", "cpu.max=20000 50000"]);
        assert_eq!((shares_to_weight(2), shares_to_weight(1024), shares_to_weight(262144)), (1, 39, 10000));
        assert_eq!(files(v2_writes(&Limits { pids: Some(64), ..Default::default() }, "", true)), ["pids.max=64"]);
    }

    #[test]
    fn limits_read_zeros_as_unset() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864,"swap":0},"cpu":{"shares":0,"quota":25000,"period":100000,"cpus":""},"pids":{"limit":0},
                "devices":[{"allow":false,"access":"rwm"}]}"#,
        )
        .unwrap();
        assert_eq!(Limits::from(&r), Limits { memory: Some(67108864), quota: Some(25000), period: Some(100000), ..Default::default() });
    }

    #[test]
    fn keyed_files() {
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), 2);
        assert_eq!(keyed("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "max"), 3);
        assert_eq!(keyed("max 0\n", "oom_kill"), 0);
    }
}
