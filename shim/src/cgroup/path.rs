//! The cgroup a spec names (`linux.cgroupsPath`, in cgroupfs or systemd form), as a path below
//! each hierarchy's root.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

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
/// `systemd`: the runtime option SystemdCgroup, under which the spec's path must be in systemd's
/// form (runc's systemd driver refuses any other).
pub fn sandbox_path(spec: &Spec, parent: &Path, namespace: &str, id: &str, systemd: bool) -> Result<PathBuf> {
    match spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned()) {
        Some(p) if !p.is_empty() => {
            if systemd && systemd_path(&p).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "linux.cgroupsPath {p:?}: the runtime option SystemdCgroup asks for systemd's slice:prefix:name form"
                )));
            }
            cgroupfs_path(&p, parent)
        }
        _ => cgroupfs_path(&format!("{namespace}/{id}"), parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            sandbox_path(&spec, Path::new("/beta9"), "default", "c1", false).unwrap()
        };
        assert_eq!(with(None), PathBuf::from("beta9/default/c1"));
        assert_eq!(with(Some("")), PathBuf::from("beta9/default/c1"));
        assert_eq!(with(Some("/k8s.io/p1")), PathBuf::from("k8s.io/p1"));
        // SystemdCgroup: systemd's form only.
        let spec = |p: &str| {
            let linux = LinuxBuilder::default().cgroups_path(p).build().unwrap();
            oci_spec::runtime::SpecBuilder::default().linux(linux).build().unwrap()
        };
        let e = sandbox_path(&spec("/k8s.io/p1"), Path::new("/beta9"), "default", "c1", true).unwrap_err().to_string();
        assert!(e.contains("SystemdCgroup") && e.contains("slice:prefix:name"), "{e}");
        let p = sandbox_path(&spec("system.slice:beta9:c1"), Path::new("/beta9"), "default", "c1", true).unwrap();
        assert_eq!(p, PathBuf::from("system.slice/beta9-c1.scope"));
    }
}
