//! The OCI spec: what runsc is told from it, and checks runsc itself makes too late.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use contract::{args::AgentArgs, AGENT_PATH};
use oci_spec::runtime::{Capabilities, Capability, LinuxNamespaceType, MountBuilder, Spec};

use crate::error::{Error, Result};

/// CRI's annotations that runsc also reads: which kind of container, and which pod it joins.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A container's place in a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Its own sandbox, outside any pod (ctr, nerdctl).
    Single,
    /// The pod's first container (the pause): it boots the sandbox.
    PodSandbox,
    /// An app container that runs inside the pod's existing sandbox.
    PodContainer { sandbox_id: String },
}

pub fn role(spec: &Spec) -> Result<Role> {
    let get = |k: &str| spec.annotations().as_ref().and_then(|a| a.get(k)).map(String::as_str);
    match (get(CONTAINER_TYPE), get(SANDBOX_ID)) {
        (None, _) => Ok(Role::Single),
        (Some("sandbox"), _) => Ok(Role::PodSandbox),
        (Some("container"), Some(sb)) if !sb.is_empty() => Ok(Role::PodContainer { sandbox_id: sb.to_string() }),
        (Some("container"), _) => Err(Error::InvalidArgument(format!("annotation {CONTAINER_TYPE}=container needs {SANDBOX_ID}"))),
        (Some(other), _) => Err(Error::InvalidArgument(format!(
            "annotation {CONTAINER_TYPE}={other:?} is not a CRI container type (sandbox or container)"
        ))),
    }
}

/// The capabilities dockerd needs inside gVisor (gVisor's docker-in-gVisor guide).
pub const DOCKER_CAPABILITIES: [Capability; 17] = [
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Mknod,
    Capability::NetBindService,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysChroot,
    Capability::SysPtrace,
];

/// Adds `caps` to every capability set of the container's process.
pub fn add_capabilities(spec: &mut Spec, caps: &[Capability]) -> Result<()> {
    let process = spec.process_mut().as_mut().ok_or_else(|| Error::InvalidArgument("the spec has no process".into()))?;
    let mut sets = process.capabilities().clone().unwrap_or_default();
    let add = |set: &Option<Capabilities>| -> Option<Capabilities> {
        let mut set = set.clone().unwrap_or_default();
        set.extend(caps.iter().copied());
        Some(set)
    };
    // Root has them through these; the inheritable and ambient sets stay as the spec gives them,
    // or every process of a non-root user would carry them too (CVE-2022-24769's lesson).
    sets.set_bounding(add(sets.bounding()));
    sets.set_effective(add(sets.effective()));
    sets.set_permitted(add(sets.permitted()));
    process.set_capabilities(Some(sets));
    Ok(())
}

/// Makes the agent the container's PID 1: a read-only bind mount of the host binary, and the
/// process args rewritten to run the agent with the original command after `--`.
pub fn inject_agent(spec: &mut Spec, agent: &Path, agent_args: &AgentArgs) -> Result<()> {
    mount_read_only(spec, agent, AGENT_PATH)?;
    let process = spec.process_mut().as_mut().ok_or_else(|| Error::InvalidArgument("the spec has no process".into()))?;
    let agent_args = AgentArgs { command: process.args().clone().unwrap_or_default(), ..agent_args.clone() };
    let mut args = vec![AGENT_PATH.to_string()];
    args.extend(agent_args.to_argv());
    process.set_args(Some(args));
    Ok(())
}

/// A host file, read-only at `destination` in the container.
fn mount_read_only(spec: &mut Spec, source: &Path, destination: &str) -> Result<()> {
    let mount = MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_string(), "ro".to_string()])
        .build()
        .map_err(|e| Error::Other(format!("mount of {destination}: {e}")))?;
    spec.mounts_mut().get_or_insert_with(Vec::new).push(mount);
    Ok(())
}

/// What exec'd processes need to run behind the container's seccomp program (see seccomp.rs):
/// the program, and the agent that installs it (mounted already when it is PID 1).
pub fn mount_exec_seccomp(spec: &mut Spec, agent: &Path, agent_mounted: bool, program: &Path) -> Result<()> {
    if !agent_mounted {
        mount_read_only(spec, agent, AGENT_PATH)?;
    }
    mount_read_only(spec, program, contract::args::SECCOMP_PROGRAM)
}

/// Runs the container's command behind its seccomp program (the agent installs it, then execs
/// the command), and takes the profile out of runsc's sight.
pub fn run_behind_seccomp(spec: &mut Spec) -> Result<()> {
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_seccomp(None);
    }
    let process = spec.process_mut().as_mut().ok_or_else(|| Error::InvalidArgument("the spec has no process".into()))?;
    let command = process.args().clone().unwrap_or_default();
    if !command.is_empty() {
        let mut args = vec![AGENT_PATH.to_string()];
        args.extend(contract::args::seccomp_argv(contract::args::SECCOMP_PROGRAM, &command));
        process.set_args(Some(args));
    }
    Ok(())
}

/// Refuses what gVisor cannot do as asked, before anything runs. A user namespace with uid/gid
/// mappings (Kubernetes' `hostUsers: false`) would half-run: runsc puts its own processes in
/// it, but inside the sandbox every process sees the identity mapping.
pub fn check_supported(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let userns = linux.and_then(|l| l.namespaces().as_ref()).is_some_and(|nss| nss.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let mapped = linux.is_some_and(|l| l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()) || l.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()));
    if userns || mapped {
        return Err(Error::InvalidArgument(
            "user namespaces (uid/gid mappings, Kubernetes' hostUsers: false) are not supported: gVisor's runsc \
ignores the mappings inside the sandbox, where every process would see the host's ids; the sandbox itself \
already isolates the workload from the host's kernel"
                .into(),
        ));
    }
    Ok(())
}

/// The process's `terminal` as the request wired its stdio. Clients may set one and not the other
/// (containerd's Go client takes them from two options); runc's shim then gives the process the
/// terminal the request asked for. runsc must be told the same as its console socket: a terminal
/// it does not know as one reaches the process as a plain file, its stdin, stdout and stderr one
/// open file that gVisor makes non-blocking, so a full terminal fails the process's writes with
/// EAGAIN (output lost, `seq` exits 255). Returns whether the spec changed.
pub fn match_terminal(spec: &mut Spec, terminal: bool) -> bool {
    let Some(process) = spec.process_mut().as_mut() else { return false };
    if process.terminal().unwrap_or(false) == terminal {
        return false;
    }
    process.set_terminal(Some(terminal));
    true
}

/// An exec's process (OCI JSON, as containerd sends it) with `terminal` as its request wired it
/// (see `match_terminal`) and, with `seccomp`, behind the container's seccomp program; the rest
/// is passed through untouched.
pub fn exec_process(raw: &[u8], terminal: bool, seccomp: bool) -> Result<Vec<u8>> {
    let mut process: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| Error::InvalidArgument(format!("the exec's process spec is not valid JSON: {e}")))?;
    let Some(fields) = process.as_object_mut() else {
        return Err(Error::InvalidArgument("the exec's process spec is not a JSON object".into()));
    };
    fields.insert("terminal".into(), terminal.into());
    if seccomp {
        let command: Vec<String> = fields
            .get("args")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .filter(|a: &Vec<String>| !a.is_empty())
            .ok_or_else(|| Error::InvalidArgument("the exec's process has no args".into()))?;
        let mut args = vec![AGENT_PATH.to_string()];
        args.extend(contract::args::seccomp_argv(contract::args::SECCOMP_PROGRAM, &command));
        fields.insert("args".into(), args.into());
    }
    serde_json::to_vec(&process).map_err(|e| Error::Other(format!("the exec's process spec: {e}")))
}

/// Where runsc keeps the writes to the container's root filesystem (`--overlay2`). By default
/// in a file inside the rootfs (`root:self`), which a read-only rootfs mount cannot hold: there
/// the writes go to the sandbox's memory (`root:memory`) and count as its memory. A spec that
/// asks for a read-only root gets no overlay from runsc at all.
pub fn overlay_medium(spec: &Spec, rootfs_read_only: bool) -> Option<String> {
    if spec.root().as_ref().is_some_and(|r| r.readonly().unwrap_or(false)) {
        return None;
    }
    rootfs_read_only.then(|| "root:memory".to_string())
}

/// runsc ignores the spec's maskedPaths and readonlyPaths, so the shim turns those that name
/// something in the image into mounts, as runc would mask and remount them: a masked directory
/// gets an empty read-only tmpfs, a masked file /dev/null, a read-only path a read-only bind of
/// itself. Paths under /proc and /sys are gVisor's own synthetic files, which do not show the
/// host's (and are not in the image): they are left to gVisor.
pub fn mount_masked_and_readonly_paths(spec: &mut Spec, rootfs: &Path) -> Result<()> {
    let Some(linux) = spec.linux_mut().as_mut() else { return Ok(()) };
    let masked = linux.masked_paths_mut().take().unwrap_or_default();
    let readonly = linux.readonly_paths_mut().take().unwrap_or_default();
    let in_image = |p: &str| {
        let p = Path::new(p);
        if !p.is_absolute() || p.starts_with("/proc") || p.starts_with("/sys") {
            return None;
        }
        let host = resolve_in_root(rootfs, p)?;
        let meta = std::fs::symlink_metadata(&host).ok()?;
        Some((host, meta.is_dir()))
    };
    let mount = |destination: &str, typ: &str, source: &Path, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .map_err(|e| Error::Other(format!("mount for {destination}: {e}")))
    };
    let mut added = Vec::new();
    for p in &masked {
        match in_image(p) {
            Some((_, true)) => added.push(mount(p, "tmpfs", Path::new("tmpfs"), &["ro", "nosuid", "nodev", "noexec"])?),
            Some((_, false)) => added.push(mount(p, "bind", Path::new("/dev/null"), &["rbind", "ro"])?),
            None => {}
        }
    }
    for p in &readonly {
        if let Some((host, _)) = in_image(p) {
            added.push(mount(p, "bind", &host, &["rbind", "ro"])?);
        }
    }
    spec.mounts_mut().get_or_insert_with(Vec::new).extend(added);
    Ok(())
}

/// A read-only recursive bind (`rbind,ro`, not `rro`) is read-only at its top only: under
/// Linux its submounts keep their own mode. runsc's gofer crosses a bind's submounts as one
/// read-only mount, so each submount under such a source becomes a mount of its own here, with
/// its own mode, right after its parent.
pub fn split_readonly_bind_submounts(spec: &mut Spec, mountinfo: &str) {
    let Some(mounts) = spec.mounts_mut().as_mut() else { return };
    let host_mounts = mount_points(mountinfo);
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts.drain(..) {
        let split = is_readonly_rbind(&m);
        let source = m.source().clone();
        let destination = m.destination().clone();
        out.push(m);
        let Some(source) = source.filter(|_| split) else { continue };
        for (point, read_only) in host_mounts.iter().filter(|(p, _)| p != &source && p.starts_with(&source)) {
            let Ok(rel) = point.strip_prefix(&source) else { continue };
            let mode = if *read_only { "ro" } else { "rw" };
            if let Ok(sub) = MountBuilder::default()
                .destination(destination.join(rel))
                .typ("bind")
                .source(point)
                .options(vec!["rbind".to_string(), mode.to_string()])
                .build()
            {
                out.push(sub);
            }
        }
    }
    *mounts = out;
}

/// Whether the spec has a read-only recursive bind, whose submounts `split_readonly_bind_submounts`
/// must look up (so the host's mount table is read only then).
pub fn has_readonly_rbind(spec: &Spec) -> bool {
    spec.mounts().as_deref().unwrap_or_default().iter().any(is_readonly_rbind)
}

fn is_readonly_rbind(m: &oci_spec::runtime::Mount) -> bool {
    let opts = m.options().as_deref().unwrap_or_default();
    let has = |o: &str| opts.iter().any(|x| x == o);
    has("rbind") && has("ro") && !has("rro")
}

/// Mount points and whether each is read-only, from /proc/self/mountinfo.
fn mount_points(mountinfo: &str) -> Vec<(PathBuf, bool)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (point, options) = (f.get(4)?, f.get(5)?);
            Some((crate::mountinfo::unescape(point), options.split(',').any(|o| o == "ro")))
        })
        .collect()
}

/// Removes the spec's seccomp profile.
pub fn drop_seccomp(spec: &mut Spec) {
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_seccomp(None);
    }
}

pub fn save(spec: &Spec, bundle: &Path) -> Result<()> {
    spec.save(bundle.join("config.json"))
        .map_err(|e| Error::Other(format!("writing {}/config.json: {e}", bundle.display())))
}

/// One runsc root per sandbox, short enough that runsc's `runsc-<id>.sock` in it stays under
/// the 108-byte unix socket limit even for 64-character CRI ids.
pub fn runsc_root(base: &Path, containerd_address: &str, namespace: &str, sandbox_id: &str) -> PathBuf {
    let mut h = DefaultHasher::new();
    (containerd_address, namespace, sandbox_id).hash(&mut h);
    base.join(format!("{:016x}", h.finish()))
}

pub fn load(bundle: &Path) -> Result<Spec> {
    Spec::load(bundle.join("config.json"))
        .map_err(|e| Error::InvalidArgument(format!("reading {}/config.json: {e}", bundle.display())))
}

/// Checks that a program a feature needs is in the image, on the process's PATH.
pub fn check_image_has(spec: &Spec, rootfs: &Path, program: &str, feature: &str) -> Result<()> {
    let path_env = process_path(spec);
    let cwd = spec.process().as_ref().map(|p| p.cwd().clone()).unwrap_or_else(|| "/".into());
    if find_executable(rootfs, program, &path_env, &cwd).is_some() {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "{program} was not found in the image (PATH={path_env}); {feature}=true needs an image with Docker installed"
    )))
}

fn process_path(spec: &Spec) -> String {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string()
}

/// Checks that the process binary exists in the image. runsc only finds out at start, and
/// clients expect a missing binary to fail create.
pub fn check_process_binary(spec: &Spec, rootfs: &Path) -> Result<()> {
    let Some(process) = spec.process() else {
        return Err(Error::InvalidArgument("the spec has no process".into()));
    };
    let Some(arg0) = process.args().as_ref().and_then(|a| a.first()) else {
        return Ok(()); // nothing to run: only valid for a keepalive sandbox, checked by the caller
    };
    let path_env = process_path(spec);
    let cwd = process.cwd();
    if find_executable(rootfs, arg0, &path_env, cwd).is_some() || may_come_from_a_mount(spec, arg0, &path_env, cwd) {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "exec: \"{arg0}\": executable file not found in the container image (PATH={path_env})"
    )))
}

/// Whether the program may be in one of the spec's mounts (a volume), which the image check
/// cannot see: runsc is left to find it there.
fn may_come_from_a_mount(spec: &Spec, name: &str, path_env: &str, cwd: &Path) -> bool {
    let dirs: Vec<PathBuf> = if name.contains('/') {
        vec![cwd.join(name)]
    } else {
        path_env.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(name)).collect()
    };
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    dirs.iter().any(|d| mounts.iter().any(|m| m.destination() != Path::new("/") && d.starts_with(m.destination())))
}

/// Looks `name` up the way a shell would, inside `rootfs`, following symlinks within it.
pub fn find_executable(rootfs: &Path, name: &str, path_env: &str, cwd: &Path) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![cwd.join(name)]
    } else {
        path_env.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(name)).collect()
    };
    candidates.into_iter().find(|c| {
        resolve_in_root(rootfs, c)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Resolves `path` as if `root` were `/`: absolute symlinks and `..` never leave `root`.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut comps = p.components();
        while let Some(c) = comps.next() {
            match c {
                Component::RootDir => resolved = PathBuf::from("/"),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(n) => {
                    let next = resolved.join(n);
                    let host = root.join(next.strip_prefix("/").unwrap());
                    match std::fs::read_link(&host) {
                        Ok(target) => {
                            hops += 1;
                            if hops > 40 {
                                return None;
                            }
                            let rest: PathBuf = comps.collect();
                            if !rest.as_os_str().is_empty() {
                                pending.push(rest);
                            }
                            pending.push(target);
                            break;
                        }
                        Err(_) => resolved = next,
                    }
                }
            }
        }
    }
    Some(root.join(resolved.strip_prefix("/").unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};
    use std::os::unix::fs::symlink;

    #[test]
    fn role_comes_from_the_cri_annotations() {
        let with = |kv: &[(&str, &str)]| {
            let mut s = Spec::default();
            s.set_annotations(Some(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
            role(&s)
        };
        assert_eq!(with(&[]).unwrap(), Role::Single);
        assert_eq!(with(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "p")]).unwrap(), Role::PodSandbox);
        assert_eq!(
            with(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "p")]).unwrap(),
            Role::PodContainer { sandbox_id: "p".into() }
        );
        assert!(with(&[(CONTAINER_TYPE, "container")]).unwrap_err().to_string().contains(SANDBOX_ID));
        assert!(with(&[(CONTAINER_TYPE, "podsandbox")]).unwrap_err().to_string().contains("podsandbox"));
    }

    #[test]
    fn runsc_root_is_short_and_distinct() {
        let id = "a".repeat(64);
        let r = runsc_root(Path::new("/run/beta9"), "/run/containerd/containerd.sock", "k8s.io", &id);
        assert!(r.join(format!("runsc-{id}.sock")).as_os_str().len() < 108);
        let r1 = runsc_root(Path::new("/run/beta9"), "/a.sock", "default", "x-1");
        let r10 = runsc_root(Path::new("/run/beta9"), "/a.sock", "default", "x-10");
        assert_ne!(r1, r10);
        assert_eq!(r1, runsc_root(Path::new("/run/beta9"), "/a.sock", "default", "x-1"));
    }

    #[test]
    fn finds_executables_through_absolute_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/busybox"), b"").unwrap();
        std::fs::set_permissions(r.join("usr/bin/busybox"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/usr/bin/busybox", r.join("usr/bin/sh")).unwrap();
        std::fs::write(r.join("usr/bin/data"), b"").unwrap();
        let cwd = Path::new("/");
        assert!(find_executable(r, "sh", "/bin", cwd).is_some());
        assert!(find_executable(r, "/bin/sh", "", cwd).is_some());
        assert!(find_executable(r, "../../bin/sh", "", cwd).is_some(), ".. stays inside the root");
        assert!(find_executable(r, "data", "/usr/bin", cwd).is_none(), "not executable");
        assert!(find_executable(r, "nope", "/bin:/usr/bin", cwd).is_none());
    }

    #[test]
    fn agent_injection_mounts_the_binary_read_only_and_wraps_the_args() {
        let mut spec = SpecBuilder::default()
            .process(ProcessBuilder::default().args(vec!["sh".to_string(), "-c".to_string(), "exit 7".to_string()]).build().unwrap())
            .build()
            .unwrap();
        inject_agent(&mut spec, Path::new("/opt/beta9/agent"), &AgentArgs { keepalive: true, ..Default::default() }).unwrap();
        let args = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, ["/.beta9/agent", "--keepalive", "--", "sh", "-c", "exit 7"]);
        let m = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new(AGENT_PATH)).unwrap();
        assert_eq!(m.source().as_deref(), Some(Path::new("/opt/beta9/agent")));
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));

        let mut plain = SpecBuilder::default()
            .process(ProcessBuilder::default().args(vec!["true".to_string()]).build().unwrap())
            .build()
            .unwrap();
        inject_agent(&mut plain, Path::new("/a"), &AgentArgs::default()).unwrap();
        assert_eq!(plain.process().as_ref().unwrap().args().clone().unwrap(), ["/.beta9/agent", "--", "true"]);

        let mut docker = SpecBuilder::default().process(ProcessBuilder::default().args(Vec::<String>::new()).build().unwrap()).build().unwrap();
        let docker_args = contract::args::Docker { args: vec!["--debug".into()], ..Default::default() };
        let agent_args = AgentArgs { keepalive: true, docker: Some(docker_args.clone()), command: vec!["ignored".into()] };
        inject_agent(&mut docker, Path::new("/a"), &agent_args).unwrap();
        let args = docker.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args[0], AGENT_PATH);
        let parsed = AgentArgs::parse(&args[1..]).unwrap();
        assert_eq!(parsed, AgentArgs { keepalive: true, docker: Some(docker_args), command: vec![] }, "the spec's command, not the caller's");
    }

    #[test]
    fn docker_capabilities_reach_roots_sets_only() {
        let mut spec = Spec::default();
        add_capabilities(&mut spec, &DOCKER_CAPABILITIES).unwrap();
        let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.as_ref().unwrap();
            assert!(DOCKER_CAPABILITIES.iter().all(|c| set.contains(c)), "{set:?}");
        }
        let default = Spec::default().process().as_ref().unwrap().capabilities().clone().unwrap();
        assert_eq!((caps.inheritable(), caps.ambient()), (default.inheritable(), default.ambient()), "as the spec gave them");
        // What the spec already had is kept.
        assert!(caps.bounding().as_ref().unwrap().contains(&Capability::AuditWrite));
    }

    #[test]
    fn user_namespaces_are_refused_with_the_reason() {
        use oci_spec::runtime::{LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder};
        let userns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).build().unwrap();
        let map = LinuxIdMappingBuilder::default().host_id(100000u32).container_id(0u32).size(65536u32).build().unwrap();
        let linux = LinuxBuilder::default().namespaces(vec![userns]).uid_mappings(vec![map]).gid_mappings(vec![map]).build().unwrap();
        let spec = SpecBuilder::default().linux(linux).build().unwrap();
        let e = check_supported(&spec).unwrap_err().to_string();
        assert!(e.contains("user namespaces") && e.contains("hostUsers: false"), "{e}");
        assert!(check_supported(&Spec::default()).is_ok());
    }

    #[test]
    fn the_request_decides_whether_the_process_has_a_terminal() {
        let mut spec = SpecBuilder::default().process(ProcessBuilder::default().terminal(false).build().unwrap()).build().unwrap();
        assert!(!match_terminal(&mut spec, false));
        assert!(match_terminal(&mut spec, true));
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
        assert!(match_terminal(&mut spec, false));
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(false));

        let raw = br#"{"terminal":false,"args":["seq"],"cwd":"/","ioPriority":{"class":"IOPRIO_CLASS_IDLE"}}"#;
        let out: serde_json::Value = serde_json::from_slice(&exec_process(raw, true, false).unwrap()).unwrap();
        assert_eq!(out["terminal"], true);
        assert_eq!(out["ioPriority"]["class"], "IOPRIO_CLASS_IDLE", "fields the shim does not know pass through");
        let out: serde_json::Value = serde_json::from_slice(&exec_process(br#"{"args":["sh"]}"#, false, false).unwrap()).unwrap();
        assert_eq!(out["terminal"], false);
        assert!(exec_process(b"[1]", true, false).unwrap_err().to_string().contains("not a JSON object"));
        assert!(exec_process(b"{", true, false).unwrap_err().to_string().contains("not valid JSON"));
        // Behind the container's seccomp program: the agent installs it, then execs the command.
        let out: serde_json::Value = serde_json::from_slice(&exec_process(br#"{"args":["sh","-c","x"]}"#, false, true).unwrap()).unwrap();
        let args: Vec<String> = serde_json::from_value(out["args"].clone()).unwrap();
        assert_eq!(args[0], AGENT_PATH);
        assert_eq!(contract::args::parse_seccomp_argv(&args[2..]).unwrap().1, ["sh", "-c", "x"]);
    }

    #[test]
    fn overlay_goes_to_memory_only_for_a_read_only_rootfs_mount() {
        let with_root = |readonly: bool| {
            let mut s = Spec::default();
            s.set_root(Some(oci_spec::runtime::RootBuilder::default().path("rootfs").readonly(readonly).build().unwrap()));
            s
        };
        assert_eq!(overlay_medium(&with_root(false), false), None, "a writable rootfs keeps runsc's default");
        assert_eq!(overlay_medium(&with_root(false), true).as_deref(), Some("root:memory"));
        assert_eq!(overlay_medium(&with_root(true), true), None, "a read-only root gets no overlay from runsc at all");
    }

    #[test]
    fn masked_and_readonly_paths_in_the_image_become_mounts() {
        use oci_spec::runtime::LinuxBuilder;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("tmp")).unwrap();
        std::fs::write(r.join("bin/ls"), b"").unwrap();
        let linux = LinuxBuilder::default()
            .masked_paths(vec!["/bin/ls".to_string(), "/tmp".to_string(), "/proc/kcore".to_string(), "/nope".to_string()])
            .readonly_paths(vec!["/tmp".to_string(), "/proc/sys".to_string()])
            .build()
            .unwrap();
        let mut spec = SpecBuilder::default().linux(linux).mounts(vec![]).build().unwrap();
        mount_masked_and_readonly_paths(&mut spec, r).unwrap();
        let mounts: Vec<String> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| format!("{} {} {}", m.destination().display(), m.typ().as_deref().unwrap_or(""), m.source().as_ref().unwrap().display()))
            .collect();
        assert_eq!(
            mounts,
            [
                "/bin/ls bind /dev/null".to_string(),
                "/tmp tmpfs tmpfs".to_string(),
                format!("/tmp bind {}", r.join("tmp").display()),
            ],
            "/proc, /sys and what the image lacks are left alone"
        );
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none(), "taken out of runsc's sight");
    }

    #[test]
    fn submounts_of_a_read_only_bind_keep_their_own_mode() {
        let bind = |dst: &str, src: &str, opts: &[&str]| {
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src)
                .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap()
        };
        let mut spec = SpecBuilder::default()
            .mounts(vec![
                bind("/mnt", "/tmp/vol", &["rbind", "ro"]),
                bind("/rro", "/tmp/vol", &["rbind", "ro", "rro"]),
                bind("/rw", "/tmp/vol", &["rbind", "rw"]),
            ])
            .build()
            .unwrap();
        let mountinfo = "36 35 98:0 / /tmp rw,relatime - ext4 /dev/vda rw\n\
40 36 0:50 / /tmp/vol/tmpfs rw,relatime - tmpfs none rw\n\
41 36 0:51 / /tmp/vol/ro\\040dir ro,relatime - tmpfs none rw\n\
42 36 0:52 / /tmp/volume-other rw - tmpfs none rw\n";
        split_readonly_bind_submounts(&mut spec, mountinfo);
        let got: Vec<String> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| format!("{} {} {}", m.destination().display(), m.source().as_ref().unwrap().display(), m.options().as_ref().unwrap().join(",")))
            .collect();
        assert_eq!(
            got,
            [
                "/mnt /tmp/vol rbind,ro",
                "/mnt/tmpfs /tmp/vol/tmpfs rbind,rw",
                "/mnt/ro dir /tmp/vol/ro dir rbind,ro",
                "/rro /tmp/vol rbind,ro,rro",
                "/rw /tmp/vol rbind,rw",
            ]
        );
    }

    #[test]
    fn missing_binary_is_reported_at_create() {
        let root = tempfile::tempdir().unwrap();
        let spec = SpecBuilder::default()
            .process(ProcessBuilder::default().args(vec!["/no/such".to_string()]).build().unwrap())
            .build()
            .unwrap();
        let err = check_process_binary(&spec, root.path()).unwrap_err().to_string();
        assert!(err.contains("/no/such") && err.contains("not found"), "{err}");
    }

    #[test]
    fn a_binary_in_a_volume_is_left_to_runsc() {
        let root = tempfile::tempdir().unwrap();
        let volume = MountBuilder::default().destination("/tools").typ("bind").source("/host/tools").build().unwrap();
        let spec = SpecBuilder::default()
            .process(ProcessBuilder::default().args(vec!["/tools/run".to_string()]).build().unwrap())
            .mounts(vec![volume])
            .build()
            .unwrap();
        check_process_binary(&spec, root.path()).unwrap();
    }
}
