//! The agent's report on dockerd, as `agent status` prints it and the shim reads it back.
//!
//! ```text
//! dockerd: ready
//! pid: 57
//! restarts: 0
//! iptables: off, --iptables=false (...)
//! network: sandbox, eth0 10.88.0.5 mtu 1500: forwarding on, SNAT to 10.88.0.5
//! storage: /var/lib/docker: tmpfs of 256 MiB; storage driver overlay2
//! works: nested containers on bridge networks, compose (names, TCP, UDP), ...
//! does not work: docker exec into a nested container (...)
//! log: /var/log/beta9/dockerd.log
//! error: ...            (only when there is one)
//! last log lines:       (only when there are some)
//!   ...
//! ```

/// `agent status` exits 0 when dockerd is ready, 1 when it is not, 2 when no agent answered.
pub const EXIT_READY: i32 = 0;
pub const EXIT_NOT_READY: i32 = 1;
pub const EXIT_UNREACHABLE: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Restarting,
    Failed,
    Stopping,
}

const PHASES: [Phase; 5] = [Phase::Starting, Phase::Ready, Phase::Restarting, Phase::Failed, Phase::Stopping];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Restarting => "restarting",
            Phase::Failed => "failed",
            Phase::Stopping => "stopping",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        PHASES.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether a waiter has its answer: only starting and restarting may still become ready.
    pub fn settled(self) -> bool {
        !matches!(self, Phase::Starting | Phase::Restarting)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub phase: Phase,
    pub pid: Option<i32>,
    pub restarts: u32,
    /// The iptables mode chosen, and why.
    pub iptables: String,
    /// How dockerd's networks reach other hosts, and why.
    pub network: String,
    /// Where dockerd keeps images and containers, how large it may grow, and its storage driver.
    pub storage: String,
    /// What Docker can do in this sandbox, and what it cannot (and why).
    pub works: String,
    pub does_not_work: String,
    pub log: String,
    /// Why the daemon failed or last crashed.
    pub error: Option<String>,
    /// dockerd's last output lines.
    pub tail: Vec<String>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = format!("dockerd: {}\n", self.phase.as_str());
        out += &format!("pid: {}\n", self.pid.map_or("-".to_string(), |p| p.to_string()));
        out += &format!("restarts: {}\n", self.restarts);
        out += &format!("iptables: {}\n", one_line(&self.iptables));
        out += &format!("network: {}\n", one_line(&self.network));
        out += &format!("storage: {}\n", one_line(&self.storage));
        out += &format!("works: {}\n", one_line(&self.works));
        out += &format!("does not work: {}\n", one_line(&self.does_not_work));
        out += &format!("log: {}\n", self.log);
        if let Some(e) = &self.error {
            out += &format!("error: {}\n", one_line(e));
        }
        if !self.tail.is_empty() {
            out += "last log lines:\n";
            for l in &self.tail {
                out += &format!("  {}\n", one_line(l));
            }
        }
        out
    }

    /// Reads a rendered report back; `None` if the text is not one.
    pub fn parse(text: &str) -> Option<Report> {
        let mut lines = text.lines();
        let mut field = |name: &str| lines.next()?.strip_prefix(name).map(|v| v.trim().to_string());
        let phase = Phase::parse(&field("dockerd:")?)?;
        let pid = field("pid:")?.parse().ok();
        let restarts = field("restarts:")?.parse().ok()?;
        let iptables = field("iptables:")?;
        let network = field("network:")?;
        let storage = field("storage:")?;
        let works = field("works:")?;
        let does_not_work = field("does not work:")?;
        let log = field("log:")?;
        let rest: Vec<&str> = lines.collect();
        let error = rest.first().and_then(|l| l.strip_prefix("error:")).map(|e| e.trim().to_string());
        let tail = rest
            .iter()
            .skip_while(|l| **l != "last log lines:")
            .skip(1)
            .map(|l| l.strip_prefix("  ").unwrap_or(l).to_string())
            .collect();
        Some(Report { phase, pid, restarts, iptables, network, storage, works, does_not_work, log, error, tail })
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            phase: Phase::Failed,
            pid: None,
            restarts: 2,
            iptables: "off, --iptables=false (`iptables -t nat -N X` failed: Protocol not supported)".into(),
            network: "host: no bridge".into(),
            storage: "/var/lib/docker: tmpfs of 256 MiB; storage driver overlay2".into(),
            works: "nested containers with --network host".into(),
            does_not_work: "docker exec into a nested container (gVisor: setns)".into(),
            log: "/var/log/beta9/dockerd.log".into(),
            error: Some("dockerd exited with status 1 before it was ready".into()),
            tail: vec!["unknown flag: --no-such-flag".into(), "  indented".into()],
        }
    }

    #[test]
    fn report_round_trip() {
        let r = report();
        assert_eq!(Report::parse(&r.render()), Some(r.clone()));
        let ready = Report { phase: Phase::Ready, pid: Some(7), error: None, tail: vec![], ..r };
        assert_eq!(Report::parse(&ready.render()), Some(ready.clone()));
        assert!(ready.render().starts_with("dockerd: ready\npid: 7\n"));
    }

    #[test]
    fn multi_line_values_stay_on_their_line() {
        let r = Report { error: Some("a\nb".into()), ..report() };
        assert_eq!(Report::parse(&r.render()).unwrap().error.as_deref(), Some("a b"));
    }

    #[test]
    fn other_text_is_not_a_report() {
        assert_eq!(Report::parse(""), None);
        assert_eq!(Report::parse("dockerd: dancing\n"), None);
        assert_eq!(Report::parse("runsc: container not found"), None);
    }

    #[test]
    fn only_starting_and_restarting_are_unsettled() {
        for p in PHASES {
            assert_eq!(p.settled(), !matches!(p, Phase::Starting | Phase::Restarting), "{p:?}");
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
    }
}
