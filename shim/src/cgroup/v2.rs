//! cgroup v2: OCI's v1-shaped limits converted to v2 files, and the controllers turned on for
//! the sandbox's cgroup.

use std::path::Path;

use log::warn;

use super::{
    limits::{cpuset_and_pids, max_or, Limits, Write},
    read,
};
use crate::error::{Error, Result};

/// The v2 controllers the shim uses, enabled down to the sandbox's cgroup where the parent has them.
const V2_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

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

/// runc's mapping of cgroup v1 shares (2..262144) onto v2 weights (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
}

/// Turns on the controllers the shim uses for `dir`'s children, where `dir` has them; a
/// controller that cannot be turned on shows later as the limit that cannot be set.
pub(super) fn enable_controllers(dir: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory: Option<i64>, swap: Option<i64>) -> Limits {
        Limits { memory, swap, ..Default::default() }
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
}
