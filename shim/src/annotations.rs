//! The `io.beta9.sandbox.*` annotations: parsed and validated in one place into a typed value.

use std::collections::HashMap;

use crate::error::{Error, Result};

pub const PREFIX: &str = "io.beta9.sandbox.";
pub const AGENT: &str = "io.beta9.sandbox.agent";
pub const KEEPALIVE: &str = "io.beta9.sandbox.keepalive";

/// Every key this shim understands; anything else under the prefix is refused.
pub const KNOWN: [&str; 2] = [AGENT, KEEPALIVE];

/// What a container asked for through annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxAnnotations {
    /// Inject the agent as PID 1 (default true).
    pub agent: bool,
    /// Keep the sandbox up after its command ends (default false).
    pub keepalive: bool,
}

impl Default for SandboxAnnotations {
    fn default() -> Self {
        SandboxAnnotations { agent: true, keepalive: false }
    }
}

impl SandboxAnnotations {
    pub fn parse(annotations: &HashMap<String, String>) -> Result<Self> {
        let mut keys: Vec<&String> = annotations.keys().filter(|k| k.starts_with(PREFIX)).collect();
        keys.sort();
        if let Some(unknown) = keys.iter().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "unknown annotation {unknown}; known {PREFIX}* annotations: {}",
                KNOWN.join(", ")
            )));
        }
        let mut a = SandboxAnnotations::default();
        if let Some(v) = annotations.get(AGENT) {
            a.agent = boolean(AGENT, v)?;
        }
        if let Some(v) = annotations.get(KEEPALIVE) {
            a.keepalive = boolean(KEEPALIVE, v)?;
        }
        if a.keepalive && !a.agent {
            return Err(Error::InvalidArgument(format!(
                "{KEEPALIVE}=true needs the agent, but {AGENT}=false turns it off"
            )));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SandboxAnnotations> {
        SandboxAnnotations::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_inject_the_agent_without_keepalive() {
        assert_eq!(parse(&[("other.key", "x")]).unwrap(), SandboxAnnotations { agent: true, keepalive: false });
    }

    #[test]
    fn values_are_parsed() {
        let a = parse(&[(KEEPALIVE, "true")]).unwrap();
        assert!(a.agent && a.keepalive);
        assert!(!parse(&[(AGENT, "false")]).unwrap().agent);
    }

    #[test]
    fn malformed_values_name_the_key_and_the_accepted_values() {
        let e = parse(&[(KEEPALIVE, "yes")]).unwrap_err().to_string();
        assert!(e.contains(KEEPALIVE) && e.contains("true, false"), "{e}");
        assert!(parse(&[(AGENT, "TRUE")]).is_err());
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones_listed() {
        let e = parse(&[("io.beta9.sandbox.keeplive", "true")]).unwrap_err().to_string();
        assert!(e.contains("io.beta9.sandbox.keeplive") && e.contains(KEEPALIVE) && e.contains(AGENT), "{e}");
    }

    #[test]
    fn keepalive_without_the_agent_is_refused() {
        assert!(parse(&[(AGENT, "false"), (KEEPALIVE, "true")]).is_err());
    }
}
