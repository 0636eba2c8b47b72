//! What dockerd needs from the sandbox and cannot do for itself in gVisor, done before it
//! starts: cgroup v1 hierarchies, a sized tmpfs for its store, the legacy iptables for its own
//! iptables calls, its iptables mode, and the network stack nested containers use (netstack.rs).

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use contract::args::Network;

use super::{
    netstack::{self, Legacy},
    supervise::LogFile,
    Supervisor, LOG, STORE,
};
use crate::{
    children::{find_in_path, DEFAULT_PATH},
    nested,
    uplink::{self, Uplink},
};

/// gVisor implements these cgroup v1 controllers (it has no blkio); dockerd needs devices.
const CGROUPS: [&str; 7] = ["cpu", "cpuacct", "cpuset", "devices", "memory", "pids", "job"];
/// Where dockerd finds `iptables` & co. as links to the legacy ones, first on its PATH.
const LEGACY_BIN: &str = "/run/beta9/legacy-iptables";
/// The iptables programs dockerd and its helpers run, by the names they run them.
const IPTABLES_TOOLS: [&str; 6] = ["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"];

/// The agent's rules for nested networks: being set up beside dockerd's start, or what they are.
pub(super) enum Rules {
    Pending(std::thread::JoinHandle<String>),
    Done(String),
}

impl Supervisor {
    /// Everything dockerd needs from the sandbox; returns its arguments.
    pub(super) fn prepare(&mut self) -> Result<Vec<String>, String> {
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
        let dockerd = find_in_path("dockerd", &path).ok_or_else(|| format!("dockerd was not found in the image (PATH={path})"))?;
        if let Some(dir) = Path::new(LOG).parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let log = LogFile::open(Path::new(LOG)).map_err(|e| format!("open {LOG}: {e}"))?;
        self.log = Some(std::sync::Arc::new(std::sync::Mutex::new(log)));
        self.mount_cgroups()?;
        let storage = self.mount_store()?;
        self.note(&format!("storage {storage}"));
        self.status.update(|s| s.storage = storage);
        // Debian's /var/run is a symlink to /run, which the image may not have.
        ensure_dir(Path::new("/run")).map_err(|e| format!("create /run: {e}"))?;
        ensure_dir(Path::new("/var/run")).map_err(|e| format!("create /var/run: {e}"))?;

        self.legacy = Legacy::find(&path);
        // dockerd runs `iptables` for its embedded DNS (NAT rules in every container's namespace
        // on a user-defined network, whatever --iptables says), and the image's may be the nft
        // one, which gVisor refuses: its calls go to the legacy one.
        let legacy_first = self.legacy.as_ref().and_then(|l| legacy_bin(&path, l).transpose()).transpose()?;
        if let Some(dir) = &legacy_first {
            self.env.push(("PATH", format!("{}:{path}", dir.display())));
        }
        let mut args = vec![dockerd.to_string_lossy().into_owned()];
        let iptables = if self.opts.args.iter().any(|a| a.starts_with("--iptables")) {
            "as given in the dockerd arguments".to_string()
        } else {
            match self.probe_iptables() {
                Ok(()) => "on (the sandbox's netstack supports NAT with MASQUERADE and addrtype)".to_string(),
                Err(why) => {
                    args.push("--iptables=false".into());
                    format!("off, --iptables=false ({why})")
                }
            }
        };
        let iptables = match &self.legacy {
            Some(_) => format!("{iptables}; dockerd's own iptables calls (its embedded DNS) go to iptables-legacy"),
            None => format!("{iptables}; the image has no legacy iptables: dockerd's embedded DNS cannot set up its rules"),
        };
        self.note(&format!("iptables {iptables}"));
        self.status.update(|s| s.iptables = iptables);
        let network = match self.opts.network {
            // gVisor lets dockerd neither make a bridge nor turn on forwarding on the host's stack.
            Network::Host => {
                args.extend(["--bridge=none".to_string(), "--ip-forward=false".to_string()]);
                "host: no bridge (--bridge=none --ip-forward=false); nested containers use --network host".to_string()
            }
            Network::None => {
                self.clear_leftovers();
                self.set_up_rules(None);
                "none: loopback only; nested containers reach each other on Docker's bridges".to_string()
            }
            Network::Sandbox => {
                // Before the uplink is looked for: a bridge left behind has an address too.
                self.clear_leftovers();
                match uplink::find() {
                    Ok(up) => {
                        args.push(format!("--mtu={}", up.mtu));
                        self.set_up_rules(Some(up.clone()));
                        format!("sandbox: {} {} mtu {}", up.device, up.address, up.mtu)
                    }
                    Err(e) => {
                        self.set_up_rules(None);
                        format!("sandbox: nested containers reach no other host: no uplink: {e}")
                    }
                }
            }
        };
        self.note(&format!("network {network}"));
        let mode = self.opts.network;
        self.status.update(|s| {
            s.network = network;
            s.works = nested::works(mode, true);
            s.does_not_work = nested::does_not_work(mode, true);
        });
        args.extend(self.opts.args.iter().cloned());
        Ok(args)
    }

    /// Clears what a previous dockerd left in the netstack (a container started again in its
    /// pod): netstack::reset, when the netstack holds dockerd's interfaces.
    fn clear_leftovers(&self) {
        match netstack::docker_links() {
            Ok(left) if !left.is_empty() => {
                self.note(&format!("the sandbox's network stack holds a previous dockerd's interfaces ({}): removing them", left.join(", ")));
                match netstack::reset(&self.children, self.legacy.as_ref()) {
                    Ok(removed) => self.note(&format!("removed {}", removed.join(", "))),
                    Err(e) => self.note(&format!("cannot remove all a previous dockerd left: {e}")),
                }
            }
            Ok(_) => {}
            Err(e) => self.note(&format!("cannot list the sandbox's interfaces: {e}")),
        }
    }

    /// Sets up the agent's rules (netstack.rs) while dockerd starts: they are needed by the
    /// first nested container, not by dockerd, and each iptables run costs 60-110 ms here.
    /// `rules_ready` waits for them before dockerd is called ready.
    fn set_up_rules(&mut self, up: Option<Uplink>) {
        self.uplink = up.clone();
        let Some(legacy) = self.legacy.clone() else {
            self.rules = Some(Rules::Done(
                "the image has no iptables-legacy (gVisor's netstack refuses the nft backend): no SNAT, and packets \
                 forwarded between nested containers may arrive twice"
                    .into(),
            ));
            return;
        };
        let children = self.children.clone();
        let install = move || match netstack::install(&children, &legacy, up.as_ref()) {
            Ok(()) => match &up {
                Some(up) => format!("forwarding on, SNAT (tcp, udp) to {}; no forwarding from a Docker bridge back into one", up.address),
                None => "no forwarding from a Docker bridge back into one".into(),
            },
            Err(e) => format!("the rules for nested networks failed: {e}"),
        };
        self.rules = Some(match std::thread::Builder::new().name("netstack".into()).spawn(install) {
            Ok(handle) => Rules::Pending(handle),
            Err(e) => Rules::Done(format!("the rules for nested networks could not be set up: {e}")),
        });
    }

    /// Waits for the rules `set_up_rules` started, and says in the status what they are.
    pub(super) fn rules_ready(&mut self) {
        let text = match self.rules.take() {
            None => return,
            Some(Rules::Done(text)) => text,
            Some(Rules::Pending(handle)) => handle.join().unwrap_or_else(|_| "the rules for nested networks failed".into()),
        };
        self.note(&format!("network rules: {text}"));
        self.status.update(|s| s.network = format!("{}: {text}", s.network));
    }

    /// A tmpfs on /var/lib/docker, so the storage driver is overlay2 (on the sandbox's root
    /// overlay, or a host directory through the gofer, overlay2 fails and dockerd takes vfs),
    /// sized as the shim says (docker::store_size there); returns what it is, for the status.
    fn mount_store(&self) -> Result<String, String> {
        if is_mountpoint(STORE) {
            return Ok(format!("{STORE}: a mount of the image's or the spec's, left as it is"));
        }
        let size = self.opts.tmpfs_size.as_ref().map(|s| format!("size={s}"));
        let options = [Some("mode=711".to_string()), size].into_iter().flatten().collect::<Vec<_>>().join(",");
        mount_tmpfs(STORE, &options)?;
        let mib = nix::sys::statvfs::statvfs(STORE).map(|s| s.blocks() as u64 * s.fragment_size() as u64 >> 20).unwrap_or(0);
        let how = match &self.opts.tmpfs_size {
            Some(_) => "",
            None => " (no memory limit: tmpfs's default, half of the memory the sandbox sees)",
        };
        Ok(format!("{STORE}: tmpfs of {mib} MiB{how}, in the sandbox's memory (full: no space left on device)"))
    }

    /// cgroup v1 hierarchies, unless the sandbox already has cgroups mounted.
    fn mount_cgroups(&self) -> Result<(), String> {
        const ROOT: &str = "/sys/fs/cgroup";
        if is_mountpoint(ROOT) {
            return Ok(());
        }
        mount_tmpfs(ROOT, "mode=755")?;
        let mut missing = Vec::new();
        for c in CGROUPS {
            let dir = Path::new(ROOT).join(c);
            let r = ensure_dir(&dir)
                .map_err(|e| e.to_string())
                .and_then(|_| mount(Some("cgroup"), &dir, Some("cgroup"), MsFlags::empty(), Some(c)).map_err(|e| e.to_string()));
            if let Err(e) = r {
                missing.push(format!("{c}: {e}"));
            }
        }
        if !missing.is_empty() {
            // dockerd says which controller it cannot do without; the rest is noted only.
            self.note(&format!("cgroup controllers not mounted: {}", missing.join(", ")));
        }
        Ok(())
    }

    /// dockerd's default iptables setup needs a nat table with MASQUERADE and `-m addrtype`:
    /// tried in one transaction on a scratch chain with the legacy iptables, the backend
    /// gVisor's netstack speaks (refused, nothing of it stays).
    fn probe_iptables(&self) -> Result<(), String> {
        let Some(legacy) = &self.legacy else {
            return Err("the image has no iptables-legacy, the only backend gVisor's netstack speaks".into());
        };
        let chain = "BETA9-PROBE";
        // Declared (made, or emptied if something left it), so only the rules can be refused.
        let probe = format!("*nat\n:{chain} - [0:0]\n-A {chain} -m addrtype --dst-type LOCAL -j RETURN\n-A {chain} -j MASQUERADE\nCOMMIT\n");
        legacy.apply(&self.children, "nat", &probe).map_err(|e| format!("the sandbox's netstack refuses dockerd's NAT rules (MASQUERADE, -m addrtype): {e}"))?;
        let _ = legacy.apply(&self.children, "nat", &format!("*nat\n-F {chain}\n-X {chain}\nCOMMIT\n"));
        Ok(())
    }
}

/// A directory of links named like the iptables tools, to the image's legacy ones, for the
/// front of dockerd's PATH; none when the image's `iptables` is the legacy one already.
fn legacy_bin(path: &str, legacy: &Legacy) -> Result<Option<PathBuf>, String> {
    let Some(iptables) = find_in_path("iptables", path) else { return Ok(None) };
    if std::fs::canonicalize(&iptables).ok() == std::fs::canonicalize(&legacy.iptables).ok() {
        return Ok(None);
    }
    let dir = Path::new(LEGACY_BIN);
    std::fs::create_dir_all(dir).map_err(|e| format!("create {LEGACY_BIN}: {e}"))?;
    for tool in IPTABLES_TOOLS {
        let Some(target) = find_in_path(&format!("{tool}-legacy"), path) else { continue };
        let link = dir.join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).map_err(|e| format!("link {} to {}: {e}", link.display(), target.display()))?;
    }
    Ok(Some(dir.to_path_buf()))
}

fn mount_tmpfs(target: &str, options: &str) -> Result<(), String> {
    if is_mountpoint(target) {
        return Ok(());
    }
    ensure_dir(Path::new(target)).map_err(|e| format!("create {target}: {e}"))?;
    mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options))
        .map_err(|e| format!("mount a tmpfs on {target} ({options}): {e}"))
}

/// Creates a directory unless it exists: on a read-only filesystem gVisor answers mkdir of an
/// existing directory with EROFS, not EEXIST.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
}

fn is_mountpoint(path: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}
