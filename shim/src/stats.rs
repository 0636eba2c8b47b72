//! A container's usage for Stats (`ctr task metrics`, CRI ContainerStats): the sandbox's cgroup's
//! own numbers in containerd's metrics type for the host's cgroup version, or without a cgroup
//! (`[cgroups] enforce = false`) what `runsc events --stats` reports, in the v1 type.

use containerd_shim::protos::{
    cgroups::metrics::{
        CPUStat, CPUUsage, MemoryEntry as ProtoMemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
    },
    cgroups_v2::metrics as v2,
    protobuf::{
        reflect::{ReflectValueBox, RuntimeFieldType, RuntimeType},
        well_known_types::any::Any,
        MessageDyn, MessageField,
    },
};
use serde::Deserialize;

use crate::{
    cgroup::{keyed, SandboxCgroup},
    error::{Error, Result},
};

/// The usage of a sandbox's cgroup as containerd's metrics, in the type of the host's cgroup
/// version. A pod's containers share one sandbox and so one cgroup: each reports the sandbox's.
pub fn from_cgroup(cg: &SandboxCgroup) -> Result<Any> {
    let read = |file: &str| cg.read(file);
    let metrics: Box<dyn MessageDyn> = if cg.is_v2() { Box::new(v2_metrics(read)) } else { Box::new(v1_metrics(read)) };
    encode(metrics)
}

/// What `runsc events --stats` reported, in the v1 type.
pub fn from_runsc(s: &Stats) -> Result<Any> {
    encode(Box::new(runsc_metrics(s)))
}

fn encode(metrics: Box<dyn MessageDyn>) -> Result<Any> {
    containerd_shim::util::convert_to_any(metrics).map_err(|e| Error::Other(format!("encode metrics: {e}")))
}

fn runsc_metrics(s: &Stats) -> Metrics {
    let mut m = Metrics::new();
    m.cpu = MessageField::some(CPUStat {
        usage: MessageField::some(CPUUsage {
            total: s.cpu.usage.total,
            kernel: s.cpu.usage.kernel,
            user: s.cpu.usage.user,
            per_cpu: s.cpu.usage.percpu.clone(),
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
    m
}

/// A number file; "max" (v2's unlimited) reads as `max`.
fn number(text: Option<String>, max: u64) -> u64 {
    text.map(|t| t.trim().to_string()).map(|t| if t == "max" { max } else { t.parse().unwrap_or(0) }).unwrap_or(0)
}

/// Copies a `key value` stats file into the message's fields of the same names (`rename`
/// maps a kernel name onto the proto's where they differ).
fn copy_keyed(text: &str, m: &mut dyn MessageDyn, rename: impl Fn(&str) -> String) {
    let d = m.descriptor_dyn();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else { continue };
        let (Some(f), Ok(v)) = (d.field_by_name(&rename(k)), v.trim().parse::<u64>()) else { continue };
        // Only counters: memory.stat's "swap" is a number, the proto's a message.
        if matches!(f.runtime_field_type(), RuntimeFieldType::Singular(RuntimeType::U64)) {
            f.set_singular_field(m, ReflectValueBox::U64(v));
        }
    }
}

/// cgroup v1: memory, cpuacct, cpu (throttling) and pids, as containerd's v1 `Metrics`.
pub fn v1_metrics(read: impl Fn(&str) -> Option<String>) -> Metrics {
    let n = |file: &str| number(read(file), 0);
    let mut memory = MemoryStat::new();
    // memory.stat says pgpgin where the proto says pg_pg_in.
    let rename = |k: &str| k.replace("pgpg", "pg_pg_").replace("pgfault", "pg_fault").replace("pgmajfault", "pg_maj_fault");
    copy_keyed(&read("memory.stat").unwrap_or_default(), &mut memory, rename);
    let entry = |prefix: &str| {
        let f = |name: &str| n(&format!("{prefix}.{name}"));
        MessageField::some(ProtoMemoryEntry {
            limit: f("limit_in_bytes"),
            usage: f("usage_in_bytes"),
            max: f("max_usage_in_bytes"),
            failcnt: f("failcnt"),
            ..Default::default()
        })
    };
    memory.usage = entry("memory");
    memory.swap = entry("memory.memsw");
    memory.kernel = entry("memory.kmem");
    memory.kernel_tcp = entry("memory.kmem.tcp");
    // USER_HZ ticks (100 a second on Linux) to nanoseconds.
    let acct = read("cpuacct.stat").unwrap_or_default();
    let usage = CPUUsage {
        total: n("cpuacct.usage"),
        user: keyed(&acct, "user") * 10_000_000,
        kernel: keyed(&acct, "system") * 10_000_000,
        per_cpu: read("cpuacct.usage_percpu").unwrap_or_default().split_whitespace().filter_map(|v| v.parse().ok()).collect(),
        ..Default::default()
    };
    let stat = read("cpu.stat").unwrap_or_default();
    let throttling = Throttle {
        periods: keyed(&stat, "nr_periods"),
        throttled_periods: keyed(&stat, "nr_throttled"),
        throttled_time: keyed(&stat, "throttled_time"),
        ..Default::default()
    };
    let oom = read("memory.oom_control").unwrap_or_default();
    Metrics {
        memory: MessageField::some(memory),
        cpu: MessageField::some(CPUStat { usage: MessageField::some(usage), throttling: MessageField::some(throttling), ..Default::default() }),
        pids: MessageField::some(PidsStat { current: n("pids.current"), limit: n("pids.max"), ..Default::default() }),
        memory_oom_control: MessageField::some(MemoryOomControl {
            oom_kill_disable: keyed(&oom, "oom_kill_disable"),
            under_oom: keyed(&oom, "under_oom"),
            oom_kill: keyed(&oom, "oom_kill"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// cgroup v2: memory, cpu and pids, as containerd's v2 `Metrics` (io.containerd.cgroups.v2).
pub fn v2_metrics(read: impl Fn(&str) -> Option<String>) -> v2::Metrics {
    let n = |file: &str| number(read(file), u64::MAX);
    let mut memory = v2::MemoryStat::new();
    copy_keyed(&read("memory.stat").unwrap_or_default(), &mut memory, str::to_string);
    memory.usage = n("memory.current");
    memory.usage_limit = n("memory.max");
    memory.max_usage = n("memory.peak");
    memory.swap_usage = n("memory.swap.current");
    memory.swap_limit = n("memory.swap.max");
    memory.swap_max_usage = n("memory.swap.peak");
    let mut events = v2::MemoryEvents::new();
    copy_keyed(&read("memory.events").unwrap_or_default(), &mut events, str::to_string);
    let mut cpu = v2::CPUStat::new();
    copy_keyed(&read("cpu.stat").unwrap_or_default(), &mut cpu, str::to_string);
    let pids_max = number(read("pids.max"), 0);
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat { current: n("pids.current"), limit: pids_max, ..Default::default() }),
        cpu: MessageField::some(cpu),
        memory: MessageField::some(memory),
        memory_events: MessageField::some(events),
        ..Default::default()
    }
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
    use std::collections::HashMap;

    use super::*;

    fn files(kv: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |f: &str| m.get(f).cloned()
    }

    #[test]
    fn v1_metrics_from_cgroup_files() {
        let m = v1_metrics(files(&[
            ("memory.usage_in_bytes", "8192\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.max_usage_in_bytes", "9000\n"),
            ("memory.failcnt", "3\n"),
            ("memory.stat", "cache 4096\nswap 0\nrss 100\npgpgin 7\npgmajfault 2\ntotal_inactive_file 50\ntotal_pgpgout 9\nunknown_key 1\n"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"),
            ("cpuacct.usage", "1500000000\n"),
            ("cpuacct.usage_percpu", "1000000000 500000000 \n"),
            ("cpuacct.stat", "user 100\nsystem 50\n"),
            ("cpu.stat", "nr_periods 40\nnr_throttled 30\nthrottled_time 2000000000\n"),
            ("pids.current", "21\n"),
            ("pids.max", "max\n"),
        ]));
        let mem = m.memory.unwrap();
        assert_eq!((mem.usage.usage, mem.usage.limit, mem.usage.max, mem.usage.failcnt), (8192, 67108864, 9000, 3));
        assert_eq!((mem.cache, mem.rss, mem.pg_pg_in, mem.pg_maj_fault, mem.total_inactive_file, mem.total_pg_pg_out), (4096, 100, 7, 2, 50, 9));
        let cpu = m.cpu.unwrap();
        assert_eq!((cpu.usage.total, cpu.usage.user, cpu.usage.kernel), (1500000000, 1000000000, 500000000));
        assert_eq!(cpu.usage.per_cpu, [1000000000, 500000000]);
        assert_eq!((cpu.throttling.periods, cpu.throttling.throttled_periods, cpu.throttling.throttled_time), (40, 30, 2000000000));
        assert_eq!((m.pids.current, m.pids.limit), (21, 0));
        assert_eq!(m.memory_oom_control.oom_kill, 1);
    }

    #[test]
    fn v2_metrics_from_cgroup_files() {
        let m = v2_metrics(files(&[
            ("memory.current", "8192\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "9000\n"),
            ("memory.stat", "anon 100\nfile 200\ninactive_file 50\npgfault 4\n"),
            ("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"),
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 3\nthrottled_usec 20\n"),
            ("pids.current", "21\n"),
            ("pids.max", "64\n"),
        ]));
        let mem = m.memory.unwrap();
        assert_eq!((mem.usage, mem.usage_limit, mem.max_usage, mem.anon, mem.inactive_file, mem.pgfault), (8192, u64::MAX, 9000, 100, 50, 4));
        assert_eq!((m.memory_events.max, m.memory_events.oom_kill), (5, 1));
        let cpu = m.cpu.unwrap();
        assert_eq!((cpu.usage_usec, cpu.user_usec, cpu.system_usec, cpu.nr_throttled, cpu.throttled_usec), (1500, 1000, 500, 3, 20));
        assert_eq!((m.pids.current, m.pids.limit), (21, 64));
    }

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
