//! The `io.beta9.sandbox.*` annotations: parsed and validated in one place into a typed value.
//! What the operator allows of them is the config's to decide (`Config::admit`).

use std::{collections::HashMap, time::Duration};

use crate::error::{Error, Result};

pub const PREFIX: &str = "io.beta9.sandbox.";
/// runsc 20240729 takes some of its flags from these spec annotations without
/// `--allow-flag-override` (host-uds, debug, strace, ...: runsc/config/flags.go's allowlist), so
/// a container's author could open host sockets to the sandbox. runsc's flags are the node's.
pub const RUNSC_FLAG_PREFIX: &str = "dev.gvisor.flag.";
pub const AGENT: &str = "io.beta9.sandbox.agent";
pub const KEEPALIVE: &str = "io.beta9.sandbox.keepalive";
pub const DOCKER: &str = "io.beta9.sandbox.docker";
pub const DOCKER_WAIT: &str = "io.beta9.sandbox.docker.wait";
pub const DOCKER_ARGS: &str = "io.beta9.sandbox.docker.args";
pub const DOCKER_TMPFS_SIZE: &str = "io.beta9.sandbox.docker.tmpfs-size";
pub const GPU: &str = "io.beta9.sandbox.gpu";

/// Every key this shim understands; anything else under the prefix is refused.
pub const KNOWN: [&str; 7] = [AGENT, KEEPALIVE, DOCKER, DOCKER_WAIT, DOCKER_ARGS, DOCKER_TMPFS_SIZE, GPU];

/// What a container asked for through annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxAnnotations {
    /// Inject the agent as PID 1; by default where it is needed (see `agent_for`).
    pub agent: Option<bool>,
    /// Keep the sandbox up after its command ends (default false; true with Docker).
    pub keepalive: bool,
    /// Run a supervised dockerd in the sandbox (default off).
    pub docker: Option<DockerAnnotations>,
    /// NVIDIA GPUs through runsc's nvproxy (default off).
    pub gpu: bool,
    /// The keys that were set, sorted.
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerAnnotations {
    /// How long Start waits for dockerd to answer (zero: it does not wait); the config's
    /// default when not given.
    pub wait: Option<Duration>,
    /// Extra dockerd arguments.
    pub args: Vec<String>,
    /// Size of /var/lib/docker's tmpfs (`512m`, or a share of the memory limit: `25%`).
    pub tmpfs_size: Option<String>,
}

impl Default for SandboxAnnotations {
    fn default() -> Self {
        SandboxAnnotations { agent: None, keepalive: false, docker: None, gpu: false, keys: Vec::new() }
    }
}

impl SandboxAnnotations {
    /// Whether the agent runs as PID 1 of a container in `role`. A container of its own gets it
    /// (it makes PID 1 reap, forward signals and exit like its command); in a pod, where the
    /// kubelet expects the command itself to be PID 1 as with runc, only Docker and keepalive
    /// bring it. The annotation decides where it is given.
    pub fn agent_for(&self, role: &crate::spec::Role) -> bool {
        use crate::spec::Role;
        self.agent.unwrap_or(match role {
            Role::Single => true,
            Role::PodSandbox => false,
            Role::PodContainer { .. } => self.docker.is_some() || self.keepalive,
        })
    }

    /// Parses and validates the annotations.
    pub fn parse(annotations: &HashMap<String, String>) -> Result<Self> {
        if let Some(flag) = annotations.keys().filter(|k| k.starts_with(RUNSC_FLAG_PREFIX)).min() {
            return Err(Error::InvalidArgument(format!(
                "annotation {flag} would set a runsc flag from the container's spec; runsc's flags are set on the node \
                 ([runsc] extra_flags in the shim's config)"
            )));
        }
        let mut keys: Vec<&String> = annotations.keys().filter(|k| k.starts_with(PREFIX)).collect();
        keys.sort();
        if let Some(unknown) = keys.iter().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "unknown annotation {unknown}; known {PREFIX}* annotations: {}",
                KNOWN.join(", ")
            )));
        }
        let get = |key: &str| annotations.get(key).map(String::as_str);
        let mut a = SandboxAnnotations { keys: keys.iter().map(|k| k.to_string()).collect(), ..Default::default() };
        if let Some(v) = get(AGENT) {
            a.agent = Some(boolean(AGENT, v)?);
        }
        let docker = get(DOCKER).map(|v| boolean(DOCKER, v)).transpose()?.unwrap_or(false);
        a.gpu = get(GPU).map(|v| boolean(GPU, v)).transpose()?.unwrap_or(false);
        if docker {
            let wait = get(DOCKER_WAIT).map(|v| duration(DOCKER_WAIT, v)).transpose()?;
            let args = get(DOCKER_ARGS).map(|v| words(DOCKER_ARGS, v)).transpose()?.unwrap_or_default();
            let tmpfs_size = get(DOCKER_TMPFS_SIZE).map(|v| size(DOCKER_TMPFS_SIZE, v)).transpose()?;
            a.docker = Some(DockerAnnotations { wait, args, tmpfs_size });
        } else if let Some(key) = [DOCKER_WAIT, DOCKER_ARGS, DOCKER_TMPFS_SIZE].into_iter().find(|k| annotations.contains_key(*k)) {
            return Err(Error::InvalidArgument(format!("annotation {key} needs {DOCKER}=true")));
        }
        // A Docker sandbox is a place to run docker commands in, not a command of its own.
        a.keepalive = get(KEEPALIVE).map(|v| boolean(KEEPALIVE, v)).transpose()?.unwrap_or(docker);
        for (on, key) in [(docker, DOCKER), (a.keepalive, KEEPALIVE)] {
            if on && a.agent == Some(false) {
                return Err(Error::InvalidArgument(format!("{key}=true needs the agent, but {AGENT}=false turns it off")));
            }
        }
        Ok(a)
    }
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidArgument(format!(
            "annotation {key}={value:?} is not valid; accepted values: true, false"
        ))),
    }
}

/// The longest Docker wait: Start holds a client's request that long.
pub const MAX_DOCKER_WAIT: Duration = Duration::from_secs(3600);

/// A Go-style duration (`60s`, `1m30s`, `500ms`, `0s`), at most `MAX_DOCKER_WAIT`.
pub fn duration(key: &str, value: &str) -> Result<Duration> {
    let bad = |why: String| {
        Error::InvalidArgument(format!(
            "annotation {key}={value:?} is not valid ({why}); accepted values: a duration up to 1h such as 60s, 1m30s, 500ms, or 0s for no wait"
        ))
    };
    let d = humantime::parse_duration(value.trim()).map_err(|e| bad(e.to_string()))?;
    if d > MAX_DOCKER_WAIT {
        return Err(bad("longer than 1h".into()));
    }
    Ok(d)
}

/// What a size of /var/lib/docker's tmpfs may be: a size as tmpfs takes it (`8g`, `512M`,
/// bytes), or a percentage of the sandbox's memory limit (`50%`).
pub const TMPFS_SIZES: &str = "a size such as 8g, 512m, 1048576, or a share of the memory limit such as 25%";

pub fn valid_tmpfs_size(s: &str) -> bool {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    let percent = s.ends_with('%');
    !digits.is_empty()
        && digits.len() + 1 >= s.len()
        && digits.chars().all(|c| c.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0 && (!percent || n <= 100))
}

fn size(key: &str, value: &str) -> Result<String> {
    if !valid_tmpfs_size(value) {
        return Err(Error::InvalidArgument(format!("annotation {key}={value:?} is not valid; accepted values: {TMPFS_SIZES}")));
    }
    Ok(value.to_string())
}

/// Arguments split like a shell would, quotes included.
fn words(key: &str, value: &str) -> Result<Vec<String>> {
    shell_words::split(value).map_err(|e| {
        Error::InvalidArgument(format!(
            "annotation {key}={value:?} is not valid ({e}); accepted values: dockerd arguments separated by spaces, quoted like in a shell"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn parse(pairs: &[(&str, &str)]) -> Result<SandboxAnnotations> {
        SandboxAnnotations::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn runsc_flags_from_the_spec_are_refused_and_gvisors_mount_hints_are_not() {
        for key in ["dev.gvisor.flag.host-uds", "dev.gvisor.flag.debug", "dev.gvisor.flag.oci-seccomp"] {
            let e = parse(&[(key, "all"), (KEEPALIVE, "true")]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("[runsc] extra_flags"), "{e}");
        }
        assert!(parse(&[("dev.gvisor.spec.mount.data.share", "pod")]).is_ok());
    }

    #[test]
    fn defaults_inject_the_agent_without_keepalive() {
        assert_eq!(parse(&[("other.key", "x")]).unwrap(), SandboxAnnotations::default());
    }

    #[test]
    fn values_are_parsed_and_the_keys_kept() {
        let a = parse(&[(KEEPALIVE, "true"), (GPU, "true")]).unwrap();
        assert!(a.keepalive && a.gpu);
        assert_eq!(a.keys, [GPU, KEEPALIVE]);
        assert_eq!(parse(&[(AGENT, "false")]).unwrap().agent, Some(false));
    }

    #[test]
    fn malformed_values_name_the_key_and_the_accepted_values() {
        let e = parse(&[(KEEPALIVE, "yes")]).unwrap_err().to_string();
        assert!(e.contains(KEEPALIVE) && e.contains("true, false"), "{e}");
        assert!(parse(&[(AGENT, "TRUE")]).is_err());
        assert!(parse(&[(GPU, "on")]).unwrap_err().to_string().contains(GPU));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones_listed() {
        let e = parse(&[("io.beta9.sandbox.keeplive", "true")]).unwrap_err().to_string();
        assert!(e.contains("io.beta9.sandbox.keeplive") && e.contains(KEEPALIVE) && e.contains(AGENT), "{e}");
    }

    #[test]
    fn the_agent_goes_where_it_is_needed_unless_asked() {
        use crate::spec::Role;
        let app = Role::PodContainer { sandbox_id: "p".into() };
        let plain = parse(&[]).unwrap();
        assert!(plain.agent_for(&Role::Single), "a container of its own");
        assert!(!plain.agent_for(&Role::PodSandbox) && !plain.agent_for(&app), "pods run their command as PID 1");
        assert!(parse(&[(DOCKER, "true")]).unwrap().agent_for(&app));
        assert!(parse(&[(KEEPALIVE, "true")]).unwrap().agent_for(&app));
        assert!(parse(&[(AGENT, "true")]).unwrap().agent_for(&app), "asked for");
        assert!(!parse(&[(AGENT, "false")]).unwrap().agent_for(&Role::Single));
    }

    #[test]
    fn keepalive_without_the_agent_is_refused() {
        assert!(parse(&[(AGENT, "false"), (KEEPALIVE, "true")]).is_err());
    }

    #[test]
    fn docker_turns_keepalive_on_and_takes_its_wait_and_args() {
        let a = parse(&[(DOCKER, "true")]).unwrap();
        assert!(a.keepalive);
        assert_eq!(a.docker, Some(DockerAnnotations { wait: None, args: vec![], tmpfs_size: None }));
        let a = parse(&[(DOCKER, "true"), (KEEPALIVE, "false"), (DOCKER_WAIT, "1m30s"), (DOCKER_ARGS, "--debug --label 'a b'")]).unwrap();
        assert!(!a.keepalive);
        let d = a.docker.unwrap();
        assert_eq!(d.wait, Some(Duration::from_secs(90)));
        assert_eq!(d.args, vec!["--debug", "--label", "a b"]);
        assert_eq!(parse(&[(DOCKER, "true"), (DOCKER_WAIT, "0s")]).unwrap().docker.unwrap().wait, Some(Duration::ZERO));
        assert_eq!(parse(&[(DOCKER, "true"), (DOCKER_WAIT, "500ms")]).unwrap().docker.unwrap().wait, Some(Duration::from_millis(500)));
        assert_eq!(parse(&[(DOCKER, "false")]).unwrap().docker, None);
        let a = parse(&[(DOCKER, "true"), (DOCKER_TMPFS_SIZE, "25%")]).unwrap();
        assert_eq!(a.docker.unwrap().tmpfs_size.as_deref(), Some("25%"));
    }

    #[test]
    fn tmpfs_sizes() {
        for ok in ["8g", "512M", "1048576", "50%", "100%"] {
            assert!(valid_tmpfs_size(ok), "{ok}");
        }
        for bad in ["", "g", "8gb", "-1", "8 g", "1.5g", "0", "0%", "101%", "99999999999999999999k"] {
            assert!(!valid_tmpfs_size(bad), "{bad}");
        }
        let e = parse(&[(DOCKER, "true"), (DOCKER_TMPFS_SIZE, "lots")]).unwrap_err().to_string();
        assert!(e.contains(DOCKER_TMPFS_SIZE) && e.contains("25%"), "{e}");
        let e = parse(&[(DOCKER_TMPFS_SIZE, "1g")]).unwrap_err().to_string();
        assert!(e.contains("docker=true"), "{e}");
    }

    #[test]
    fn docker_values_are_checked() {
        let e = parse(&[(DOCKER, "true"), (DOCKER_WAIT, "soon")]).unwrap_err().to_string();
        assert!(e.contains(DOCKER_WAIT) && e.contains("60s"), "{e}");
        let e = parse(&[(DOCKER, "true"), (DOCKER_ARGS, "--label 'open")]).unwrap_err().to_string();
        assert!(e.contains(DOCKER_ARGS), "{e}");
        let e = parse(&[(DOCKER_WAIT, "5s")]).unwrap_err().to_string();
        assert!(e.contains(DOCKER_WAIT) && e.contains("docker=true"), "{e}");
        let e = parse(&[(DOCKER, "true"), (AGENT, "false")]).unwrap_err().to_string();
        assert!(e.contains(DOCKER) && e.contains(AGENT), "{e}");
        assert!(parse(&[(DOCKER, "1")]).unwrap_err().to_string().contains("true, false"));
        let e = parse(&[(DOCKER, "true"), (DOCKER_WAIT, "18446744073709551615s")]).unwrap_err().to_string();
        assert!(e.contains("longer than 1h"), "{e}");
    }
}
