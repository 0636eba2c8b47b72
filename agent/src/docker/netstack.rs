//! What nested Docker keeps in the sandbox's network stack, which outlives dockerd and the
//! container that ran it (a pod's app containers share the sandbox's netstack): dockerd's
//! interfaces (docker0, user-defined bridges `br-*`, the host ends of containers' veth pairs,
//! with their addresses and routes) and the agent's iptables chains for them.
//!
//! The rules, in chains of their own so they can be found, refilled and removed as a whole:
//! - `BETA9-DOCKER-FWD` (filter, jumped to first from FORWARD): gVisor's netstack both bridges
//!   and routes a packet between two containers on one Docker bridge once forwarding is on
//!   (dockerd turns it on; the agent too, for egress): `ping` shows DUP! replies with ttl 63, and
//!   TCP between containers is reset. Dropping what is forwarded from a Docker bridge back into a
//!   Docker bridge leaves the bridged copy alone. (Between two user-defined bridges dockerd
//!   isolates networks the same way.) Egress (bridge to uplink) and `-p` (docker-proxy, a local
//!   socket) do not cross the FORWARD chain from bridge to bridge.
//! - `BETA9-DOCKER-SNAT` (nat, from POSTROUTING), in a sandbox with an uplink: SNAT for TCP and
//!   UDP to the uplink's address (uplink.rs; gVisor has no MASQUERADE).
//!
//! Every iptables call here is one `iptables-legacy-restore` (gVisor speaks the legacy backend
//! only): each costs 60-110 ms in gVisor, so one call per table.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::{
    children::{find_in_path, Children},
    uplink::{self, Uplink},
};

pub const FORWARD_CHAIN: &str = "BETA9-DOCKER-FWD";
pub const SNAT_CHAIN: &str = "BETA9-DOCKER-SNAT";
/// Where the agent writes the rules it hands to iptables-restore.
const RULES_DIR: &str = "/run/beta9";

/// Whether an interface is one dockerd makes: its default bridge, a user-defined bridge, the
/// host end of a container's veth pair, or swarm's gateway bridge.
pub fn is_dockers(name: &str) -> bool {
    name == "docker0" || name == "docker_gwbridge" || name.starts_with("br-") || name.starts_with("veth")
}

/// The sandbox's interfaces that dockerd made.
pub fn docker_links() -> io::Result<Vec<String>> {
    let names = nix::net::if_::if_nameindex()?;
    Ok(names.iter().map(|i| i.name().to_string_lossy().into_owned()).filter(|n| is_dockers(n)).collect())
}

/// The image's legacy iptables, the backend gVisor's netstack speaks.
#[derive(Clone, Debug)]
pub struct Legacy {
    /// `iptables-legacy`, or an `iptables` that is the legacy one itself.
    pub iptables: PathBuf,
    pub restore: PathBuf,
}

impl Legacy {
    pub fn find(path: &str) -> Option<Legacy> {
        let iptables = uplink::legacy_iptables(path)?;
        let restore = find_in_path("iptables-legacy-restore", path)
            .or_else(|| find_in_path("iptables-restore", path).filter(|r| !canonical_name(r).contains("nft")))?;
        Some(Legacy { iptables, restore })
    }

    /// Applies one table's rules (iptables-restore's format, one `*table` ... `COMMIT`) and
    /// leaves the rest of the table as it is; returns the tool's words when it refuses. The
    /// whole table's change is one transaction: refused, nothing of it is applied.
    pub fn apply(&self, children: &Children, table: &str, rules: &str) -> Result<(), String> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        std::fs::create_dir_all(RULES_DIR).map_err(|e| format!("create {RULES_DIR}: {e}"))?;
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = Path::new(RULES_DIR).join(format!("{table}-{n}.rules"));
        std::fs::write(&file, rules).map_err(|e| format!("write {}: {e}", file.display()))?;
        let argv = [self.restore.to_string_lossy().into_owned(), "--noflush".into(), "-w".into(), "10".into(), file.to_string_lossy().into_owned()];
        let result = super::run_helper(children, &argv);
        let _ = std::fs::remove_file(&file);
        match result {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(format!("{} (exit {code}): {}", argv[0], one_line(&out))),
            Err(e) => Err(format!("cannot run {}: {e}", argv[0])),
        }
    }
}

fn canonical_name(p: &Path) -> String {
    let target = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn one_line(out: &str) -> String {
    out.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// A chain of the agent's, jumped to from a built-in chain of `table`, with its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub table: &'static str,
    pub name: &'static str,
    pub hook: &'static str,
    pub rules: Vec<String>,
}

impl Chain {
    /// The chain that drops forwarding from a Docker bridge back into a Docker bridge.
    pub fn forward() -> Chain {
        let rules = ["-i docker0 -o docker0 -j DROP", "-i br-+ -o br-+ -j DROP"];
        Chain { table: "filter", name: FORWARD_CHAIN, hook: "FORWARD", rules: rules.iter().map(|r| format!("-A {FORWARD_CHAIN} {r}")).collect() }
    }

    /// The chain that gives nested containers the uplink's address on their way out.
    pub fn snat(up: &Uplink) -> Chain {
        let rules = ["tcp", "udp"]
            .iter()
            .map(|proto| format!("-A {SNAT_CHAIN} -o {} -p {proto} -j SNAT --to-source {}", up.device, up.address))
            .collect();
        Chain { table: "nat", name: SNAT_CHAIN, hook: "POSTROUTING", rules }
    }

    /// Makes the chain, fills it and jumps to it first from its hook, in one transaction: it
    /// fails at its first line (`-N`) when the chain is there already, and then nothing changed.
    pub fn create(&self) -> String {
        let mut s = format!("*{}\n-N {}\n", self.table, self.name);
        self.rules.iter().for_each(|r| s += &format!("{r}\n"));
        s + &format!("-I {} -j {}\nCOMMIT\n", self.hook, self.name)
    }

    /// Empties the chain that is there (a declared chain is flushed even with --noflush) and
    /// fills it again; its jump stays (the chain and its jump are only ever made together).
    pub fn refill(&self) -> String {
        let mut s = format!("*{}\n:{} - [0:0]\n", self.table, self.name);
        self.rules.iter().for_each(|r| s += &format!("{r}\n"));
        s + "COMMIT\n"
    }

    /// The chain as it should be, whether it was there or not (one call when it was not).
    pub fn install(&self, children: &Children, legacy: &Legacy) -> Result<(), String> {
        match legacy.apply(children, self.table, &self.create()) {
            Err(e) if refused_at_line_2(&e) => legacy.apply(children, self.table, &self.refill()),
            other => other,
        }
    }
}

/// The agent's chains: table, chain, the built-in chain that jumps to it.
const CHAINS: [(&str, &str, &str); 2] = [("filter", FORWARD_CHAIN, "FORWARD"), ("nat", SNAT_CHAIN, "POSTROUTING")];

/// Removes a chain's jump and the chain; fails at the jump's line (2) when there is no chain.
fn removal(table: &str, chain: &str, hook: &str) -> String {
    format!("*{table}\n-D {hook} -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n")
}

/// iptables-restore refused the first command of a script (`iptables-restore: line 2 failed`):
/// the `-N` of a chain that exists, the `-D` of a jump that does not.
fn refused_at_line_2(error: &str) -> bool {
    error.contains("line 2 failed")
}

/// What nested containers need from the sandbox's netstack, set up whatever a previous dockerd
/// or agent left (each chain is made, or emptied and filled again): forwarding on and SNAT to
/// the uplink when there is one, and no forwarding from a Docker bridge back into one.
pub fn install(children: &Children, legacy: &Legacy, up: Option<&Uplink>) -> Result<(), String> {
    if let Some(up) = up {
        std::fs::write(uplink::IP_FORWARD, "1").map_err(|e| format!("cannot turn on forwarding ({}): {e}", uplink::IP_FORWARD))?;
        Chain::snat(up).install(children, legacy)?;
    }
    Chain::forward().install(children, legacy)
}

/// Removes what a previous dockerd, and this agent for it, left in the sandbox's network stack,
/// so that a new dockerd starts as in a fresh sandbox; returns what it removed.
///
/// Contract (the snapshot/restore work calls it too):
/// - It removes dockerd's interfaces (`is_dockers`: docker0, br-*, veth*, docker_gwbridge;
///   their addresses and routes go with them) and the agent's iptables chains with their jumps
///   (`FORWARD_CHAIN`, `SNAT_CHAIN`, when `legacy` is given). The uplink, loopback, the pod's
///   own addresses and routes and every other rule stay.
/// - No dockerd may be running: it would lose its networks under it. Call it before starting
///   one: at the agent's start when a container that ran before in this pod left them (a
///   restart in place, where the next dockerd would stop at `existing interface docker0 is not
///   a bridge`: gVisor does not report a bridge as one), after a dockerd crash, and after a
///   restore from a snapshot (gVisor restores no interface made inside the sandbox: docker0 is
///   gone while dockerd still names it, and the uplink may have another address), with
///   dockerd's network store (`NETWORK_STORE`) removed too, then `install` and a new dockerd.
/// - It is idempotent and cheap when nothing is left (one netlink dump, plus one
///   iptables-restore per table); an error names what could not go, in the kernel's or
///   iptables' words, after trying the rest.
pub fn reset(children: &Children, legacy: Option<&Legacy>) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    // Bridges, then veths (one whose peer went first is gone already: nothing to do).
    let mut links = docker_links().map_err(|e| format!("list the sandbox's interfaces: {e}"))?;
    links.sort_by_key(|n| n.starts_with("veth"));
    for link in links {
        match crate::netlink::delete_link(&link) {
            Ok(()) => removed.push(format!("interface {link}")),
            Err(e) => errors.push(format!("delete interface {link}: {e}")),
        }
    }
    if let Some(legacy) = legacy {
        for (table, chain, hook) in CHAINS {
            match legacy.apply(children, table, &removal(table, chain, hook)) {
                Ok(()) => removed.push(format!("iptables chain {chain} ({table})")),
                // No jump to remove: there was no such chain.
                Err(e) if refused_at_line_2(&e) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_interfaces_are_known_by_name() {
        for name in ["docker0", "br-936e3e99d1b8", "vethe877dcc", "docker_gwbridge"] {
            assert!(is_dockers(name), "{name}");
        }
        for name in ["lo", "eth0", "eth1", "docker1", "bridge0"] {
            assert!(!is_dockers(name), "{name}");
        }
    }

    #[test]
    fn a_chain_is_made_with_its_jump_refilled_without_it_and_removed_with_it() {
        let fwd = Chain::forward();
        assert_eq!(
            fwd.create(),
            "*filter\n-N BETA9-DOCKER-FWD\n-A BETA9-DOCKER-FWD -i docker0 -o docker0 -j DROP\n\
             -A BETA9-DOCKER-FWD -i br-+ -o br-+ -j DROP\n-I FORWARD -j BETA9-DOCKER-FWD\nCOMMIT\n"
        );
        assert_eq!(
            fwd.refill(),
            "*filter\n:BETA9-DOCKER-FWD - [0:0]\n-A BETA9-DOCKER-FWD -i docker0 -o docker0 -j DROP\n\
             -A BETA9-DOCKER-FWD -i br-+ -o br-+ -j DROP\nCOMMIT\n"
        );
        assert!(fwd.create().lines().nth(1).unwrap().starts_with("-N "), "install reads line 2 refused as: it is there");
        let (table, chain, hook) = CHAINS[0];
        assert_eq!((table, chain, hook), (fwd.table, fwd.name, fwd.hook));
        assert_eq!(
            removal(table, chain, hook),
            "*filter\n-D FORWARD -j BETA9-DOCKER-FWD\n-F BETA9-DOCKER-FWD\n-X BETA9-DOCKER-FWD\nCOMMIT\n"
        );
        assert!(refused_at_line_2("iptables-restore (exit 1): iptables-restore: line 2 failed"));
        assert!(!refused_at_line_2("iptables-restore (exit 1): iptables-restore: line 12 failed"));
    }

    #[test]
    fn snat_for_tcp_and_udp_to_the_uplinks_address() {
        let (table, chain, hook) = CHAINS[1];
        let up = Uplink { device: "eth0".into(), address: std::net::Ipv4Addr::new(10, 88, 90, 5), mtu: 1500 };
        let snat = Chain::snat(&up);
        assert_eq!((snat.table, snat.name, snat.hook), (table, chain, hook));
        assert_eq!(
            snat.rules,
            [
                "-A BETA9-DOCKER-SNAT -o eth0 -p tcp -j SNAT --to-source 10.88.90.5",
                "-A BETA9-DOCKER-SNAT -o eth0 -p udp -j SNAT --to-source 10.88.90.5"
            ]
        );
        assert!(snat.create().ends_with("-I POSTROUTING -j BETA9-DOCKER-SNAT\nCOMMIT\n"));
    }
}
