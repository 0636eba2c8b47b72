//! `check`: what the node has and lacks, one line each, before anything is installed.

use crate::{
    host::{self, Host},
    schema::{self, Version},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// The runtime cannot work without it: install refuses.
    Missing,
    /// Pods (with any runtime) need it; containerd and ctr work without, so install goes on.
    Warn,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub what: &'static str,
    pub level: Level,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = match self.level {
            Level::Ok => "ok",
            Level::Missing => "missing",
            Level::Warn => "warn",
        };
        write!(f, "{l:<8}{}: {}", self.what, self.detail)
    }
}

/// The oldest runsc that runs Docker inside (bookworm's own 20221219 has no devices cgroup and
/// no cgroup2: dockerd cannot start); a release date.
pub const MIN_RUNSC: u32 = 20240729;
/// runsc's systrap platform needs Linux 4.14 or later.
pub const MIN_KERNEL: (u32, u32) = (4, 14);

/// runsc's release date from `runsc --version` (`runsc version 0.0~20240729.0`, or `release-20240729.0`).
pub fn runsc_date(version_output: &str) -> Option<u32> {
    let line = version_output.lines().next()?;
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 8)
        .find_map(|w| w.parse().ok())
}

pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn containerd(version: Result<Version, String>) -> Finding {
    let (level, detail) = match version {
        Ok(v) if v.supported() => (
            Level::Ok,
            format!(
                "{v} (its config schema {})",
                if v.major >= 2 { 3 } else { 2 }
            ),
        ),
        Ok(v) => (
            Level::Missing,
            format!("{v} is not supported: 1.6, 1.7 and 2.x are"),
        ),
        Err(e) => (Level::Missing, e),
    };
    Finding {
        what: "containerd",
        level,
        detail,
    }
}

pub fn runsc(host: &Host) -> Finding {
    let what = "runsc";
    let Some(path) = host.find("runsc") else {
        return Finding {
            what,
            level: Level::Missing,
            detail: format!(
                "not found on {} (Debian: apt install runsc, from bookworm-backports on bookworm)",
                host::NODE_PATH
            ),
        };
    };
    let (level, detail) = match host.output("runsc", &["--version"]) {
        Ok(out) => match runsc_date(&out) {
            Some(d) if d >= MIN_RUNSC => (Level::Ok, format!("{} ({path})", out.lines().next().unwrap_or("").trim())),
            Some(d) => (Level::Missing, format!("{path} is release {d}, older than {MIN_RUNSC}, which Docker inside needs (bookworm: apt install -t bookworm-backports runsc)")),
            None => (Level::Missing, format!("{path}: cannot read a release date from `runsc --version`: {}", out.trim())),
        },
        Err(e) => (Level::Missing, e),
    };
    Finding {
        what,
        level,
        detail,
    }
}

pub fn kernel(release: &str) -> Finding {
    let ok = kernel_version(release).is_some_and(|v| v >= MIN_KERNEL);
    Finding {
        what: "kernel",
        level: if ok { Level::Ok } else { Level::Missing },
        detail: if ok {
            release.into()
        } else {
            format!(
                "{release}: runsc needs Linux {}.{} or later",
                MIN_KERNEL.0, MIN_KERNEL.1
            )
        },
    }
}

/// The cgroup layout (the shim makes each sandbox's cgroup with its limits): v2's controllers,
/// or v1's hierarchies, at the node's /sys/fs/cgroup.
pub fn cgroups(host: &Host) -> Finding {
    let node = host.path("/sys/fs/cgroup");
    let dir = if node.is_dir() {
        node
    } else {
        "/sys/fs/cgroup".into()
    };
    let need = ["memory", "cpu", "pids"];
    let (version, have): (&str, Vec<&str>) =
        match std::fs::read_to_string(dir.join("cgroup.controllers")) {
            Ok(list) => (
                "v2",
                need.iter()
                    .copied()
                    .filter(|c| list.split_whitespace().any(|x| x == *c))
                    .collect(),
            ),
            Err(_) => (
                "v1",
                need.iter()
                    .copied()
                    .filter(|c| dir.join(c).is_dir())
                    .collect(),
            ),
        };
    let missing: Vec<&str> = need.iter().copied().filter(|c| !have.contains(c)).collect();
    Finding {
        what: "cgroups",
        level: if missing.is_empty() {
            Level::Ok
        } else {
            Level::Missing
        },
        detail: if missing.is_empty() {
            format!("{version} ({})", have.join(", "))
        } else {
            format!(
                "{version} at {} lacks the {} controller(s) the shim sets limits with",
                dir.display(),
                missing.join(", ")
            )
        },
    }
}

/// CNI for pods: a network config, and every plugin it names (and loopback, which CRI always
/// runs) in the plugin directories the config gives containerd.
pub fn cni(host: &Host, bin_dirs: &[String], conf_dir: &str) -> Finding {
    let what = "cni";
    let mut confs: Vec<_> = std::fs::read_dir(host.path(conf_dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    confs.sort();
    let Some(first) = confs.first() else {
        return Finding { what, level: Level::Warn, detail: format!("no network config in {conf_dir}: pods (of any runtime) cannot start until a CNI plugin installs one; ctr is unaffected") };
    };
    // containerd uses the first config by name, as CNI's libcni sorts them.
    let types = std::fs::read_to_string(first)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| {
            let plugins = v
                .get("plugins")
                .and_then(|p| p.as_array())
                .cloned()
                .unwrap_or_else(|| vec![v.clone()]);
            plugins
                .iter()
                .filter_map(|p| p.get("type").and_then(|t| t.as_str()).map(str::to_string))
                .collect::<Vec<_>>()
        });
    let Some(mut types) = types else {
        return Finding {
            what,
            level: Level::Warn,
            detail: format!("{} is not a CNI network config (JSON)", first.display()),
        };
    };
    types.push("loopback".into());
    types.dedup();
    let missing: Vec<&String> = types
        .iter()
        .filter(|t| {
            !bin_dirs
                .iter()
                .any(|d| host.path(&format!("{d}/{t}")).is_file())
        })
        .collect();
    if missing.is_empty() {
        Finding {
            what,
            level: Level::Ok,
            detail: format!(
                "{} ({}) in {}",
                first.display(),
                types.join(", "),
                bin_dirs.join(":")
            ),
        }
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        Finding { what, level: Level::Warn, detail: format!("plugins {} are missing from {} (pods of any runtime fail; Debian: apt install containernetworking-plugins)", names.join(", "), bin_dirs.join(":")) }
    }
}

pub fn oom(can_lower: bool, config_sets_it: bool) -> Finding {
    let what = "oom_score_adj";
    match (can_lower, config_sets_it) {
        (true, _) => Finding { what, level: Level::Ok, detail: "root may lower OOM scores (CRI gives pod sandboxes -998)".into() },
        (false, true) => Finding { what, level: Level::Ok, detail: "root may not lower OOM scores here, and CRI's restrict_oom_score_adj is set".into() },
        (false, false) => Finding {
            what,
            level: Level::Warn,
            detail: "root may not lower OOM scores here (no CAP_SYS_RESOURCE), so every CRI pod fails: install sets CRI's restrict_oom_score_adj = true".into(),
        },
    }
}

/// Every finding for a node, in the order a person fixes them.
pub fn all(
    host: &Host,
    version: Result<Version, String>,
    doc: &toml_edit::DocumentMut,
) -> Vec<Finding> {
    let (bins, conf) = schema::cni_dirs(doc);
    vec![
        containerd(version),
        runsc(host),
        kernel(&host::kernel_release()),
        cgroups(host),
        cni(host, &bins, &conf),
        oom(host::can_lower_oom_score(), schema::sets_restrict_oom(doc)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runsc_release_dates_and_kernel_versions_parse() {
        assert_eq!(
            runsc_date("runsc version 0.0~20240729.0\nspec: 1.0.2-dev\n"),
            Some(20240729)
        );
        assert_eq!(
            runsc_date("runsc version release-20221219.0\n"),
            Some(20221219)
        );
        assert_eq!(runsc_date("runsc version\n"), None);
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(kernel(&"4.9.0".to_string()).level, Level::Missing);
        assert_eq!(kernel(&"5.10.0-28-amd64".to_string()).level, Level::Ok);
    }

    #[test]
    fn containerd_findings_say_what_is_supported() {
        assert_eq!(
            containerd(Ok(Version { major: 1, minor: 5 })).level,
            Level::Missing
        );
        assert_eq!(
            containerd(Ok(Version { major: 2, minor: 1 })).level,
            Level::Ok
        );
        let f = containerd(Err("containerd: not found".into()));
        assert_eq!(
            (f.level, f.to_string()),
            (
                Level::Missing,
                "missing containerd: containerd: not found".into()
            )
        );
    }

    #[test]
    fn cni_names_each_missing_plugin_and_an_empty_config_dir() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        assert_eq!(
            cni(&host, &["/opt/cni/bin".into()], "/etc/cni/net.d").level,
            Level::Warn
        );
        std::fs::create_dir_all(t.path().join("etc/cni/net.d")).unwrap();
        std::fs::create_dir_all(t.path().join("opt/cni/bin")).unwrap();
        std::fs::write(
            t.path().join("etc/cni/net.d/10-x.conflist"),
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(t.path().join("opt/cni/bin/bridge"), "").unwrap();
        let f = cni(&host, &["/opt/cni/bin".into()], "/etc/cni/net.d");
        assert_eq!(f.level, Level::Warn);
        assert!(f.detail.contains("portmap, loopback"), "{f}");
        for p in ["portmap", "loopback"] {
            std::fs::write(t.path().join("opt/cni/bin").join(p), "").unwrap();
        }
        assert_eq!(
            cni(&host, &["/opt/cni/bin".into()], "/etc/cni/net.d").level,
            Level::Ok
        );
    }

    #[test]
    fn cgroups_need_memory_cpu_and_pids() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(
            t.path().join("sys/fs/cgroup/cgroup.controllers"),
            "cpuset cpu io memory\n",
        )
        .unwrap();
        let f = cgroups(&Host::new(t.path()));
        assert_eq!(f.level, Level::Missing);
        assert!(f.detail.contains("v2") && f.detail.contains("pids"), "{f}");
        std::fs::write(
            t.path().join("sys/fs/cgroup/cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        assert_eq!(cgroups(&Host::new(t.path())).level, Level::Ok);
    }

    #[test]
    fn a_missing_runsc_is_named_with_the_way_to_get_it() {
        let t = tempfile::tempdir().unwrap();
        let f = runsc(&Host::new(t.path()));
        assert_eq!(f.level, Level::Missing);
        assert!(f.detail.contains("bookworm-backports"), "{f}");
    }
}
