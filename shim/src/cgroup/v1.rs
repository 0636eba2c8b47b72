//! cgroup v1: the files runc writes for the spec's limits, in an order the kernel accepts, and
//! the memory threshold event that tells when a lower limit can be set.

use std::{io, path::Path, time::Duration};

use super::{
    limits::{cpuset_and_pids, Limits, Write},
    read,
};

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

/// Waits until a v1 memory cgroup's usage is below `limit`, told by a threshold event
/// (cgroup.event_control), for at most `within`.
pub(super) fn wait_usage_below(dir: &Path, limit: i64, within: Duration) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory: Option<i64>, swap: Option<i64>) -> Limits {
        Limits { memory, swap, ..Default::default() }
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
}
