//! Docker by annotation, from the host's side: what the agent is told to run, and Start's wait
//! for the sandbox's dockerd to answer (asked of the agent, which owns the daemon).

use std::time::Duration;

use contract::{args, status::Report, AGENT_PATH};

use crate::{
    config::Config,
    error::{Error, Result},
    runsc::{Network, Runsc},
};

/// The agent's Docker instructions: the operator's arguments first, then the annotation's.
pub fn agent_docker(network: Network, config: &Config, annotated: &[String]) -> args::Docker {
    args::Docker {
        args: config.docker.extra_args.iter().chain(annotated).cloned().collect(),
        tmpfs_size: config.docker.tmpfs_size.clone(),
        network,
    }
}

/// Waits until the agent reports the sandbox's dockerd answering, at most `wait`.
pub async fn wait_ready(runsc: &Runsc, id: &str, wait: Duration) -> Result<()> {
    let mut argv = vec![AGENT_PATH.to_string()];
    argv.extend(args::status_argv(Some(wait)));
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

    #[test]
    fn operator_arguments_come_before_the_annotations() {
        let config = Config::parse("[docker]\nextra_args = [\"--debug\"]\ntmpfs_size = \"1g\"", std::path::Path::new("/c.toml")).unwrap();
        let d = agent_docker(Network::Sandbox, &config, &["--mtu=1400".to_string()]);
        assert_eq!(d.args, ["--debug", "--mtu=1400"]);
        assert_eq!((d.tmpfs_size.as_deref(), d.network), (Some("1g"), Network::Sandbox));
    }
}
