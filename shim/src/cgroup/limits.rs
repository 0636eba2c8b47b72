//! The limits the shim applies: read from OCI's `LinuxResources`, whatever the cgroup version.

use std::collections::BTreeMap;

use oci_spec::runtime::LinuxResources;

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

pub(super) fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

pub(super) fn cpuset_and_pids(l: &Limits) -> Vec<Write> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn limits_read_zeros_as_unset() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864,"swap":0},"cpu":{"shares":0,"quota":25000,"period":100000,"cpus":""},"pids":{"limit":0},
                "devices":[{"allow":false,"access":"rwm"}]}"#,
        )
        .unwrap();
        assert_eq!(Limits::from(&r), Limits { memory: Some(67108864), quota: Some(25000), period: Some(100000), ..Default::default() });
    }
}
