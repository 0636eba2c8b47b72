//! Docker by annotation, from the host's side: what the agent is told to run, and Start's wait
//! for the sandbox's dockerd to answer (asked of the agent, which owns the daemon).

use std::time::Duration;

use contract::{args, status::Report, AGENT_PATH};
use oci_spec::runtime::Spec;

use crate::{
    annotations::DockerAnnotations,
    config::Config,
    error::{Error, Result},
    runsc::{Network, Runsc},
};

/// The share of the container's memory limit that /var/lib/docker's tmpfs may fill by default.
/// Its pages are the sandbox's memory (gVisor keeps a tmpfs in the sentry's memory file, charged
/// to the sandbox's cgroup), so without a size a full store is an OOM kill of the whole
/// sandbox; with one it is ENOSPC for the writer. Half, as Linux sizes a tmpfs from RAM; the
/// other half holds dockerd, containerd and the nested containers' processes (dockerd and
/// containerd take about 100 MiB here, README: Docker inside the sandbox).
pub const STORE_SHARE_PERCENT: i64 = 50;

/// The agent's Docker instructions: the operator's arguments first, then the annotation's, and
/// the size of /var/lib/docker (`store_size`) from `spec`'s memory limit.
pub fn agent_docker(network: Network, config: &Config, annotated: &DockerAnnotations, spec: &Spec) -> args::Docker {
    let asked = annotated.tmpfs_size.as_deref().or(config.docker.tmpfs_size.as_deref());
    let limit = memory_limit(spec);
    let tmpfs_size = store_size(asked, limit);
    log::info!("/var/lib/docker: tmpfs size {} (asked: {asked:?}, memory limit: {limit:?})", tmpfs_size.as_deref().unwrap_or("tmpfs's default"));
    args::Docker { args: config.docker.extra_args.iter().chain(&annotated.args).cloned().collect(), tmpfs_size, network }
}

/// The memory limit of the Docker container: a container of its own has its sandbox's cgroup
/// sized to it; in a pod it is the container's share of the pod sandbox's (the shim adds each
/// app container's limit to the pod's).
pub fn memory_limit(spec: &Spec) -> Option<i64> {
    spec.linux().as_ref()?.resources().as_ref()?.memory().as_ref()?.limit().filter(|l| *l > 0)
}

/// The tmpfs `size=` of /var/lib/docker: what was asked (the annotation, else `[docker]
/// tmpfs_size`), a percentage taken of the memory limit; unasked, `STORE_SHARE_PERCENT` of the
/// limit. Without a limit, a percentage goes to tmpfs (of the memory gVisor sees: the host's),
/// and unasked it is tmpfs's own default, half of that.
pub fn store_size(asked: Option<&str>, memory_limit: Option<i64>) -> Option<String> {
    let share = |percent: i64, limit: i64| Some((limit as i128 * percent as i128 / 100).to_string());
    match (asked, memory_limit) {
        (Some(a), Some(limit)) if a.ends_with('%') => share(a.trim_end_matches('%').parse().ok()?, limit),
        (Some(a), _) => Some(a.to_string()),
        (None, Some(limit)) => share(STORE_SHARE_PERCENT, limit),
        (None, None) => None,
    }
}

/// Waits until the agent reports the sandbox's dockerd answering, at most `wait`.
/// `restored`: the sandbox came back from a checkpoint, and the agent first starts dockerd again
/// on bridges made anew (gVisor restores no interface made in the sandbox).
pub async fn wait_ready(runsc: &Runsc, id: &str, wait: Duration, restored: bool) -> Result<()> {
    let mut argv = vec![AGENT_PATH.to_string()];
    argv.extend(if restored { args::restored_argv(wait) } else { args::status_argv(Some(wait)) });
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let query = runsc.exec_output(id, &argv);
    // The agent answers by itself at `wait`; this bound only covers a sandbox that hangs.
    match tokio::time::timeout(wait.saturating_add(Duration::from_secs(10)), query).await {
        Err(_) => Err(Error::DeadlineExceeded(format!("dockerd did not answer within {wait:?} (the agent did not reply)"))),
        Ok(Err(e)) => Err(e),
        Ok(Ok((contract::status::EXIT_READY, _))) => Ok(()),
        Ok(Ok((_, status))) => Err(Error::FailedPrecondition(not_ready_message(&status, wait))),
    }
}

/// One line for the client from the agent's report: what went wrong and dockerd's own last words.
pub fn not_ready_message(status: &str, wait: Duration) -> String {
    let Some(report) = Report::parse(status) else {
        return format!("the agent's status could not be read: {}", status.trim());
    };
    let cause = match (&report.error, report.phase) {
        (Some(error), _) => error.clone(),
        (None, contract::status::Phase::Starting) => format!("dockerd did not answer /_ping within {wait:?}"),
        (None, phase) => format!("dockerd is {}", phase.as_str()),
    };
    let tail: Vec<&str> = report.tail.iter().map(|l| l.trim()).collect();
    let tail = &tail[tail.len().saturating_sub(10)..];
    if tail.is_empty() {
        return cause;
    }
    format!("{cause}; dockerd's last log lines: {}", tail.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::status::Phase;

    fn report(phase: Phase, error: Option<&str>, tail: &[&str]) -> String {
        Report {
            phase,
            pid: None,
            restarts: 0,
            iptables: "off".into(),
            network: "none".into(),
            storage: "not set up yet".into(),
            works: "-".into(),
            does_not_work: "-".into(),
            log: "/var/log/beta9/dockerd.log".into(),
            error: error.map(str::to_string),
            tail: tail.iter().map(|s| s.to_string()).collect(),
        }
        .render()
    }

    #[test]
    fn not_ready_message_carries_the_cause_and_dockerds_words() {
        let status = report(
            Phase::Failed,
            Some("dockerd exited with status 125 before it was ready"),
            &["unknown flag: --no-such-flag", "See 'dockerd --help'."],
        );
        assert_eq!(
            not_ready_message(&status, Duration::from_secs(60)),
            "dockerd exited with status 125 before it was ready; dockerd's last log lines: unknown flag: --no-such-flag | See 'dockerd --help'."
        );
        let starting = report(Phase::Starting, None, &[]);
        assert_eq!(not_ready_message(&starting, Duration::from_secs(2)), "dockerd did not answer /_ping within 2s");
        assert!(not_ready_message("garbage", Duration::ZERO).contains("garbage"));
    }

    fn spec_with_memory(limit: Option<i64>) -> Spec {
        let mut spec = Spec::default();
        let memory = oci_spec::runtime::LinuxMemoryBuilder::default().limit(limit.unwrap_or(0)).build().unwrap();
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default().memory(memory).build().unwrap();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn operator_arguments_come_before_the_annotations() {
        let config = Config::parse("[docker]\nextra_args = [\"--debug\"]\ntmpfs_size = \"1g\"", std::path::Path::new("/c.toml")).unwrap();
        let annotated = DockerAnnotations { wait: None, args: vec!["--mtu=1400".to_string()], tmpfs_size: None };
        let d = agent_docker(Network::Sandbox, &config, &annotated, &Spec::default());
        assert_eq!(d.args, ["--debug", "--mtu=1400"]);
        assert_eq!((d.tmpfs_size.as_deref(), d.network), (Some("1g"), Network::Sandbox));
        let annotated = DockerAnnotations { tmpfs_size: Some("25%".into()), ..annotated };
        let d = agent_docker(Network::None, &config, &annotated, &spec_with_memory(Some(512 << 20)));
        assert_eq!(d.tmpfs_size.as_deref(), Some((128 << 20).to_string().as_str()), "the annotation wins over the config");
    }

    #[test]
    fn the_store_is_a_share_of_the_memory_limit() {
        const MIB: i64 = 1 << 20;
        assert_eq!(memory_limit(&spec_with_memory(Some(512 * MIB))), Some(512 * MIB));
        assert_eq!(memory_limit(&spec_with_memory(None)), None, "0 is no limit");
        assert_eq!(memory_limit(&Spec::default()), None);
        assert_eq!(store_size(None, Some(512 * MIB)), Some((256 * MIB).to_string()), "half by default");
        assert_eq!(store_size(Some("10%"), Some(1000 * MIB)), Some((100 * MIB).to_string()));
        assert_eq!(store_size(Some("2g"), Some(512 * MIB)), Some("2g".into()), "a size is taken as it is");
        assert_eq!(store_size(Some("30%"), None), Some("30%".into()), "no limit: tmpfs's own percentage");
        assert_eq!(store_size(None, None), None, "no limit: tmpfs's default");
    }
}
