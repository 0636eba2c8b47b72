//! A container's usage for Stats (`ctr task metrics`, CRI ContainerStats): what `runsc events
//! --stats` reports, in containerd's cgroup v1 metrics type.

use containerd_shim::protos::{
    cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry as ProtoMemoryEntry, MemoryStat, Metrics, PidsStat},
    protobuf::{well_known_types::any::Any, MessageField},
};
use serde::Deserialize;

use crate::{
    container::Container,
    error::{Error, Result},
};

/// The container's usage as containerd's metrics.
pub async fn collect(c: &Container) -> Result<Any> {
    let s = c.stats().await?;
    let mut m = Metrics::new();
    m.cpu = MessageField::some(CPUStat {
        usage: MessageField::some(CPUUsage {
            total: s.cpu.usage.total,
            kernel: s.cpu.usage.kernel,
            user: s.cpu.usage.user,
            per_cpu: s.cpu.usage.percpu,
            ..Default::default()
        }),
        ..Default::default()
    });
    let entry = |e: &MemoryEntry| {
        MessageField::some(ProtoMemoryEntry { limit: e.limit, usage: e.usage, max: e.max, failcnt: e.failcnt, ..Default::default() })
    };
    m.memory = MessageField::some(MemoryStat {
        cache: s.memory.cache,
        usage: entry(&s.memory.usage),
        swap: entry(&s.memory.swap),
        kernel: entry(&s.memory.kernel),
        ..Default::default()
    });
    m.pids = MessageField::some(PidsStat { current: s.pids.current, limit: s.pids.limit, ..Default::default() });
    containerd_shim::util::convert_to_any(Box::new(m)).map_err(|e| Error::Other(format!("encode metrics: {e}")))
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Cpu {
    pub usage: CpuUsage,
}

/// Nanoseconds of CPU time.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CpuUsage {
    pub total: u64,
    pub kernel: u64,
    pub user: u64,
    pub percpu: Vec<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
}

/// Bytes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Pids {
    pub current: u64,
    pub limit: u64,
}

/// runsc prints one event: `{"type":"stats","id":"...","data":{...}}`.
pub fn parse(text: &str) -> Result<Stats> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        data: Stats,
    }
    let event: Event = serde_json::from_str(text.trim())
        .map_err(|e| Error::Other(format!("runsc events --stats: {e}: {}", text.trim())))?;
    if event.kind != "stats" {
        return Err(Error::Other(format!("runsc events --stats: unexpected event type {:?}", event.kind)));
    }
    Ok(event.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runsc_stats_event() {
        let s = parse(
            r#"{"type":"stats","id":"x","data":{"cpu":{"usage":{"kernel":5,"user":7,"total":12,"percpu":[12,0]}},
            "memory":{"cache":4096,"usage":{"limit":100,"usage":8192,"max":9000},"raw":{"rss":1}},"pids":{"current":3}}}"#,
        )
        .unwrap();
        assert_eq!(s.cpu.usage.total, 12);
        assert_eq!(s.cpu.usage.percpu, [12, 0]);
        assert_eq!(s.memory.usage.usage, 8192);
        assert_eq!(s.memory.cache, 4096);
        assert_eq!(s.pids.current, 3);
        assert!(parse(r#"{"type":"oom","id":"x"}"#).is_err());
        assert!(parse("sandbox is not running").is_err());
    }
}
