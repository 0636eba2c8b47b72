//! Where the cgroup filesystems are mounted: the v2 tree, or one hierarchy per v1 controller set.

use std::path::{Path, PathBuf};

use crate::{
    error::{Error, Result},
    mountinfo::unescape,
};

const MOUNTINFO: &str = "/proc/self/mountinfo";

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

    pub fn current() -> Result<Layout> {
        let text = std::fs::read_to_string(MOUNTINFO).map_err(Error::io(format!("read {MOUNTINFO}")))?;
        Layout::parse(&text).ok_or_else(|| Error::FailedPrecondition(format!(
            "no cgroup filesystem is mounted (see {MOUNTINFO}); mount them, or set [cgroups] enforce = false"
        )))
    }

    /// The roots the cgroup `path` lives under: one per v1 hierarchy, or the v2 root.
    pub fn roots(&self) -> Vec<&Path> {
        match self {
            Layout::V1(hs) => hs.iter().map(|h| h.mount.as_path()).collect(),
            Layout::V2(root) => vec![root.as_path()],
        }
    }

    /// The directory of `path` that holds `controller`'s files.
    pub fn dir_of(&self, controller: &str, path: &Path) -> Option<PathBuf> {
        match self {
            Layout::V1(hs) => hs.iter().find(|h| h.controllers.iter().any(|c| c == controller)).map(|h| h.mount.join(path)),
            Layout::V2(root) => Some(root.join(path)),
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2(_))
    }
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
    }
}
