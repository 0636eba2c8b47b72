//! The sandbox's network: which stack runsc gives it, from the spec and the config.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::{
    config::Config,
    error::{Error, Result},
    runsc::Network,
};

/// The network namespace the spec names: `None` for none at all (the host's network), a path
/// or none for one of its own.
fn spec_netns(spec: &Spec) -> Option<Option<PathBuf>> {
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|nss| nss.iter().find(|n| n.typ() == LinuxNamespaceType::Network).cloned())?;
    Some(ns.path().clone().filter(|p| !p.as_os_str().is_empty()))
}

/// The network runsc gives a sandbox for `spec`: a namespace with a path is a real one to join
/// (`sandbox`); one without a path (ctr's default) gets none; no namespace is the host's.
pub fn network_for(spec: &Spec) -> Network {
    match spec_netns(spec) {
        None => Network::Host,
        Some(Some(_)) => Network::Sandbox,
        Some(None) => Network::None,
    }
}

pub struct Netns {
    mode: Network,
    /// The namespace joined with `sandbox`.
    path: Option<PathBuf>,
}

impl Netns {
    pub async fn plan(spec: &Spec, config: &Config, _runsc: &Path) -> Result<Netns> {
        let mode = config.network()?.unwrap_or_else(|| network_for(spec));
        if mode == Network::Host && !config.policy.allow_host_network {
            return Err(Error::InvalidArgument(format!(
                "the host's network is not allowed by the runtime's policy: [policy] allow_host_network = false ({}); give the container a network namespace",
                config.origin()
            )));
        }
        let path = spec_netns(spec).flatten().filter(|_| mode == Network::Sandbox);
        Ok(Netns { mode, path })
    }

    pub fn mode(&self) -> Network {
        self.mode
    }

    pub fn needs_private_proc_sys_net(&self) -> bool {
        false
    }

    pub fn prepare(&self) -> Result<()> {
        let _ = &self.path;
        Ok(())
    }

    pub async fn release(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    fn spec_with_netns(netns: Option<Option<&str>>) -> Spec {
        let mut nss = vec![LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid).build().unwrap()];
        if let Some(path) = netns {
            let mut b = LinuxNamespaceBuilder::default();
            b = b.typ(LinuxNamespaceType::Network);
            if let Some(p) = path {
                b = b.path(p);
            }
            nss.push(b.build().unwrap());
        }
        SpecBuilder::default().linux(LinuxBuilder::default().namespaces(nss).build().unwrap()).build().unwrap()
    }

    #[test]
    fn network_follows_the_spec() {
        assert_eq!(network_for(&spec_with_netns(Some(Some("/var/run/netns/x")))), Network::Sandbox);
        assert_eq!(network_for(&spec_with_netns(Some(None))), Network::None);
        assert_eq!(network_for(&spec_with_netns(None)), Network::Host);
    }
}

/// The runsc calls that set up the sandbox's network.
pub const SETS_UP_NETWORK: &[&str] = &[];

pub fn hide_proc_sys_net(_cmd: &mut std::process::Command) {}
