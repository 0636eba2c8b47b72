//! The agent's command line: `agent [OPTIONS] -- [COMMAND...]` as PID 1, and
//! `agent status [--wait SECONDS]` as a query run by `runsc exec`.

use std::time::Duration;

/// How the sandbox reaches other hosts, which decides how dockerd's networks are set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// Loopback only.
    #[default]
    None,
    /// gVisor's netstack on the interfaces of the sandbox's network namespace.
    Sandbox,
    /// The host's network stack.
    Host,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Sandbox => "sandbox",
            Network::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<Network> {
        [Network::None, Network::Sandbox, Network::Host].into_iter().find(|n| n.as_str() == s)
    }
}

/// What a supervised dockerd gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Docker {
    /// Extra dockerd arguments, after the agent's own.
    pub args: Vec<String>,
    /// Size of the tmpfs on /var/lib/docker (tmpfs's `size=`), if set.
    pub tmpfs_size: Option<String>,
    pub network: Network,
}

/// What the agent does as PID 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentArgs {
    /// Stay up after the command ends (or when there is none).
    pub keepalive: bool,
    /// Run and supervise dockerd.
    pub docker: Option<Docker>,
    /// The workload.
    pub command: Vec<String>,
}

impl AgentArgs {
    /// The arguments after the agent's path.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        if self.keepalive {
            argv.push("--keepalive".to_string());
        }
        if let Some(d) = &self.docker {
            argv.push("--docker".into());
            argv.extend(["--docker-network".into(), d.network.as_str().into()]);
            for a in &d.args {
                argv.extend(["--docker-arg".to_string(), a.clone()]);
            }
            if let Some(size) = &d.tmpfs_size {
                argv.extend(["--docker-tmpfs-size".to_string(), size.clone()]);
            }
        }
        argv.push("--".into());
        argv.extend(self.command.iter().cloned());
        argv
    }

    pub fn parse(argv: &[String]) -> Result<AgentArgs, String> {
        let mut a = AgentArgs::default();
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--keepalive" => a.keepalive = true,
                "--docker" => {
                    a.docker.get_or_insert_with(Docker::default);
                }
                "--docker-network" => {
                    let v = value(arg)?;
                    let n = Network::parse(&v).ok_or_else(|| format!("--docker-network {v:?}: none, sandbox or host"))?;
                    a.docker.get_or_insert_with(Docker::default).network = n;
                }
                "--docker-arg" => {
                    let v = value(arg)?;
                    a.docker.get_or_insert_with(Docker::default).args.push(v);
                }
                "--docker-tmpfs-size" => {
                    let v = value(arg)?;
                    a.docker.get_or_insert_with(Docker::default).tmpfs_size = Some(v);
                }
                "--" => break,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        a.command = it.cloned().collect();
        if a.command.is_empty() && !a.keepalive {
            return Err("nothing to run: give a command or --keepalive".into());
        }
        Ok(a)
    }
}

/// The status query's subcommand.
pub const STATUS: &str = "status";

/// What the shim runs in a Docker sandbox it restored from a checkpoint: the agent starts
/// dockerd again on what gVisor does not restore (interfaces made inside the sandbox: docker0
/// and the other bridges; the uplink's new address), then answers as `status --wait` does.
pub const RESTORED: &str = "restored";

/// `restored --wait SECONDS`: the arguments after the agent's path.
pub fn restored_argv(wait: Duration) -> Vec<String> {
    let mut argv = status_argv(Some(wait));
    argv[0] = RESTORED.to_string();
    argv
}

/// The subcommand that runs a command behind a seccomp program (`runsc exec` gives its
/// processes none): `seccomp PROGRAM -- COMMAND...`.
pub const SECCOMP: &str = "seccomp";

/// Where a container's compiled seccomp program appears inside the sandbox.
pub const SECCOMP_PROGRAM: &str = "/.beta9/seccomp.bpf";

/// The arguments after the agent's path that run `command` behind `program`.
pub fn seccomp_argv(program: &str, command: &[String]) -> Vec<String> {
    let mut argv = vec![SECCOMP.to_string(), program.to_string(), "--".to_string()];
    argv.extend(command.iter().cloned());
    argv
}

/// The arguments after `seccomp`: the program and the command.
pub fn parse_seccomp_argv(argv: &[String]) -> Result<(String, Vec<String>), String> {
    match argv {
        [program, dashes, command @ ..] if dashes == "--" && !command.is_empty() => Ok((program.clone(), command.to_vec())),
        _ => Err("usage: seccomp PROGRAM -- COMMAND [ARG...]".into()),
    }
}

/// `status`, or `status --wait SECONDS`: the arguments after the agent's path.
pub fn status_argv(wait: Option<Duration>) -> Vec<String> {
    let mut argv = vec![STATUS.to_string()];
    if let Some(w) = wait {
        argv.extend(["--wait".to_string(), format!("{:.3}", w.as_secs_f64())]);
    }
    argv
}

/// The arguments after `status`; `None` waits for nothing.
pub fn parse_status_argv(argv: &[String]) -> Result<Option<Duration>, String> {
    match argv {
        [] => Ok(None),
        [flag, secs] if flag == "--wait" => match secs.parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(format!("--wait {secs:?}: a number of seconds")),
        },
        _ => Err("usage: status [--wait SECONDS]".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn agent_args_round_trip() {
        let cases = [
            AgentArgs { keepalive: true, docker: None, command: vec![] },
            AgentArgs { keepalive: false, docker: None, command: strings(&["sh", "-c", "--keepalive"]) },
            AgentArgs {
                keepalive: true,
                docker: Some(Docker { args: strings(&["--debug", "--"]), tmpfs_size: Some("2g".into()), network: Network::Sandbox }),
                command: strings(&["docker", "ps"]),
            },
            AgentArgs { keepalive: true, docker: Some(Docker { network: Network::Host, ..Default::default() }), command: vec![] },
        ];
        for a in cases {
            assert_eq!(AgentArgs::parse(&a.to_argv()).unwrap(), a, "{:?}", a.to_argv());
        }
    }

    #[test]
    fn bad_agent_args_are_refused() {
        assert!(AgentArgs::parse(&strings(&["--"])).is_err(), "nothing to run");
        assert!(AgentArgs::parse(&strings(&["--bogus", "--", "true"])).is_err());
        assert!(AgentArgs::parse(&strings(&["--docker-arg"])).is_err(), "a value is needed");
        assert!(AgentArgs::parse(&strings(&["--docker-network", "bridge", "--", "x"])).is_err());
    }

    #[test]
    fn seccomp_argv_round_trip() {
        let command = strings(&["sh", "-c", "--"]);
        let argv = seccomp_argv(SECCOMP_PROGRAM, &command);
        assert_eq!(argv[0], SECCOMP);
        assert_eq!(parse_seccomp_argv(&argv[1..]).unwrap(), (SECCOMP_PROGRAM.to_string(), command));
        assert!(parse_seccomp_argv(&strings(&["/p", "--"])).is_err(), "a command is needed");
    }

    #[test]
    fn status_argv_round_trip() {
        for wait in [None, Some(Duration::from_millis(1500)), Some(Duration::ZERO)] {
            let argv = status_argv(wait);
            assert_eq!(argv[0], STATUS);
            assert_eq!(parse_status_argv(&argv[1..]).unwrap(), wait);
        }
        assert!(parse_status_argv(&strings(&["--wait", "-1"])).is_err());
        assert!(parse_status_argv(&strings(&["--wait"])).is_err());
    }
}
