//! The sandbox's network: which stack runsc gives it, the workaround a packaged runsc needs to
//! run in a network namespace of its own on a recent kernel, and putting back what runsc took
//! from that namespace.
//!
//! runsc 20240729 (Debian's and Ubuntu's) refuses `--network=sandbox` in what it takes for the
//! host's namespace, and decides that by whether /proc/sys/net/core/rmem_default exists; since
//! Linux 6.8 it exists in every namespace. The check runs in the first container's `runsc start`
//! (which joins the namespace and hands its interfaces to the sandbox), so that one call runs in
//! a private mount namespace with a tmpfs over /proc/sys/net. `runsc start` leaves no process
//! behind, so nothing lives on in that mount namespace. Since the workaround blinds runsc's own
//! guard, the shim refuses the host's namespace itself. A runsc that checks another file
//! (release-20240807.0 and later) runs untouched.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::unix::{
        fs::{MetadataExt, OpenOptionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use log::{debug, info, warn};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::{
    address::{AddressMessage, AddressScope},
    route::{RouteAttribute, RouteMessage},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use contract::args::Network;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::{
    config::Config,
    error::{Error, Result},
};

/// The runsc calls that set up the sandbox's network (for its first container only): `start`,
/// or `restore`, which gives a saved sandbox the interfaces of the namespace it comes back in.
pub const SETS_UP_NETWORK: &[&str] = &["start", "restore"];

/// The file this runsc takes as the mark of the host's namespace, and the one later releases take.
const OLD_ROOT_MARK: &[u8] = b"/proc/sys/net/core/rmem_default";
const NEW_ROOT_MARK: &[u8] = b"/proc/sys/net/core/dev_weight";

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

/// What runsc takes from a namespace's interfaces and never gives back.
#[derive(Default)]
struct Snapshot {
    addresses: Vec<AddressMessage>,
    routes: Vec<RouteMessage>,
}

pub struct Netns {
    mode: Network,
    /// The namespace runsc joins with `sandbox`: its path, and the namespace itself, held from
    /// Create on so that what the shim reads and puts back is that one, whatever is mounted at
    /// the path later (a later bind mount of /run/netns hides the pod's mount under it).
    path: Option<PathBuf>,
    ns: Option<Arc<File>>,
    hide_proc_sys_net: bool,
    taken: Mutex<Option<Snapshot>>,
}

impl Netns {
    /// Decides the sandbox's network and checks its namespace; nothing changes yet.
    pub async fn plan(spec: &Spec, config: &Config, runsc: &Path) -> Result<Netns> {
        let mode = config.network()?.unwrap_or_else(|| network_for(spec));
        if mode == Network::Host && !config.policy.allow_host_network {
            return Err(Error::InvalidArgument(format!(
                "the host's network is not allowed by the runtime's policy: [policy] allow_host_network = false ({}); give the container a network namespace",
                config.origin()
            )));
        }
        let path = spec_netns(spec).flatten().filter(|_| mode == Network::Sandbox);
        let mut hide_proc_sys_net = false;
        let mut held = None;
        if let Some(path) = &path {
            let cannot = |e: io::Error| Error::InvalidArgument(format!("the spec's network namespace {} cannot be used: {e}", path.display()));
            // Non-blocking: a FIFO at the path must not hang the shim.
            let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(cannot)?;
            let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| cannot(e.into()))?;
            if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
                return Err(cannot(io::Error::other("it is not a namespace")));
            }
            let ns = file.metadata().map_err(cannot)?;
            // The shim runs in the host's namespace, as containerd does.
            let host = std::fs::metadata("/proc/self/ns/net").map_err(Error::io("stat /proc/self/ns/net"))?;
            if (ns.dev(), ns.ino()) == (host.dev(), host.ino()) {
                return Err(Error::InvalidArgument(format!(
                    "the spec's network namespace {} is the host's: runsc would take the host's addresses; give the container no network namespace to share the host's network",
                    path.display()
                )));
            }
            let file = Arc::new(file);
            hide_proc_sys_net = runsc_mistakes_namespaces(runsc, &config.runsc.root).await && looks_like_host(file.clone()).await;
            debug!("netns {}: hide /proc/sys/net from runsc start: {hide_proc_sys_net}", path.display());
            held = Some(file);
        }
        Ok(Netns { mode, path, ns: held, hide_proc_sys_net, taken: Mutex::new(None) })
    }

    pub fn mode(&self) -> Network {
        self.mode
    }

    /// Whether the first container's `runsc start` must not see /proc/sys/net.
    pub fn needs_private_proc_sys_net(&self) -> bool {
        self.hide_proc_sys_net
    }

    /// Notes what runsc will take from the namespace, before it runs.
    pub async fn prepare(&self) -> Result<()> {
        let (Some(path), Some(ns)) = (&self.path, &self.ns) else { return Ok(()) };
        let snapshot = in_netns(ns.clone(), snapshot)
            .await
            .map_err(|e| Error::Other(format!("read the addresses of network namespace {}: {e}", path.display())))?;
        info!("netns {}: {} addresses, {} routes before the sandbox", path.display(), snapshot.addresses.len(), snapshot.routes.len());
        *self.taken.lock().unwrap() = Some(snapshot);
        Ok(())
    }

    /// Puts back what runsc took, once the sandbox is gone; an interface that is gone too
    /// (CNI's DEL) needs nothing.
    pub async fn release(&self) {
        let (Some(path), Some(ns), Some(snapshot)) = (&self.path, &self.ns, self.taken.lock().unwrap().take()) else { return };
        if let Err(e) = in_netns(ns.clone(), move || restore(snapshot)).await {
            warn!("netns {}: putting its addresses back: {e}", path.display());
        }
    }
}

/// Runs `f` on a thread of its own inside the namespace `ns`.
async fn in_netns<T: Send + 'static>(ns: Arc<File>, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("netns".into()).spawn(move || {
        let r = nix::sched::setns(&*ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from).and_then(|()| f());
        let _ = tx.send(r);
    })?;
    rx.await.map_err(|_| io::Error::other("the netns thread panicked"))?
}

/// One request on a route netlink socket made in the calling thread's namespace; returns the
/// answers (a dump's parts) and the errors the kernel gave (negative errnos).
fn netlink(socket: &Socket, seq: u32, message: RouteNetlinkMessage, flags: u16) -> io::Result<(Vec<RouteNetlinkMessage>, Vec<i32>)> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = flags;
    req.header.sequence_number = seq;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let (mut answers, mut errors) = (Vec::new(), Vec::new());
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut at = 0;
        while at < data.len() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[at..]).map_err(|e| io::Error::other(e.to_string()))?;
            at += m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok((answers, errors)),
                NetlinkPayload::Error(e) => {
                    // An acknowledgement (code 0) or a failure ends a request that is no dump.
                    if let Some(code) = e.code {
                        errors.push(code.get());
                    }
                    return Ok((answers, errors));
                }
                NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                _ => {}
            }
            if m.header.length == 0 {
                break;
            }
        }
    }
}

fn route_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// The namespace's addresses but loopback's (runsc leaves those), and the main table's routes
/// through their interfaces.
fn snapshot() -> io::Result<Snapshot> {
    let socket = route_socket()?;
    let dump = NLM_F_REQUEST | NLM_F_DUMP;
    let (answers, _) = netlink(&socket, 1, RouteNetlinkMessage::GetAddress(AddressMessage::default()), dump)?;
    let addresses: Vec<AddressMessage> = answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.scope != AddressScope::Host => Some(a),
            _ => None,
        })
        .collect();
    let (answers, _) = netlink(&socket, 2, RouteNetlinkMessage::GetRoute(RouteMessage::default()), dump)?;
    let routes = answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r)
                if r.header.table == libc::RT_TABLE_MAIN
                    && r.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if addresses.iter().any(|x| x.header.index == *i))) =>
            {
                Some(r)
            }
            _ => None,
        })
        .collect();
    Ok(Snapshot { addresses, routes })
}

/// Adds back what is missing: addresses first (their subnet routes come with them), then routes.
fn restore(s: Snapshot) -> io::Result<()> {
    let socket = route_socket()?;
    let messages = s.addresses.into_iter().map(RouteNetlinkMessage::NewAddress).chain(s.routes.into_iter().map(RouteNetlinkMessage::NewRoute));
    for (seq, m) in messages.enumerate() {
        let (_, errors) = netlink(&socket, seq as u32 + 1, m, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        // Already there, or its interface is gone: nothing to put back.
        for code in errors.into_iter().map(i32::abs).filter(|c| *c != libc::EEXIST && *c != libc::ENODEV) {
            debug!("netns restore: {}", io::Error::from_raw_os_error(code));
        }
    }
    Ok(())
}

/// Whether this runsc takes every namespace in which rmem_default is visible for the host's:
/// it carries the old mark and not the new one. Read once per runsc binary (probe.rs).
async fn runsc_mistakes_namespaces(runsc: &Path, cache_dir: &Path) -> bool {
    let read = || async {
        let binary = std::fs::read(runsc).ok()?;
        let old = contains(&binary, OLD_ROOT_MARK) && !contains(&binary, NEW_ROOT_MARK);
        Some(if old { "rmem_default" } else { "other" }.to_string())
    };
    crate::probe::cached(runsc, cache_dir, "netns-check", read).await.as_deref() == Some("rmem_default")
}

/// Whether the namespace `ns` shows what this runsc takes for the host's namespace.
async fn looks_like_host(ns: Arc<File>) -> bool {
    let mark = std::str::from_utf8(OLD_ROOT_MARK).unwrap_or_default().to_string();
    in_netns(ns, move || Ok(Path::new(&mark).exists())).await.unwrap_or(false)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Makes `cmd` run in a private mount namespace (rslave, so it still sees the host's later
/// mounts) with an empty tmpfs over /proc/sys/net.
pub fn hide_proc_sys_net(cmd: &mut std::process::Command) {
    let c = |s: &str| CString::new(s).unwrap();
    let (root, target, tmpfs) = (c("/"), c("/proc/sys/net"), c("tmpfs"));
    let fail = |what: &str| io::Error::new(io::Error::last_os_error().kind(), format!("{what}: {}", io::Error::last_os_error()));
    // SAFETY: between fork and exec only raw syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(fail("unshare a mount namespace for runsc"));
            }
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0 {
                return Err(fail("make / rslave for runsc"));
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(tmpfs.as_ptr(), target.as_ptr(), tmpfs.as_ptr(), flags, std::ptr::null()) != 0 {
                return Err(fail("hide /proc/sys/net from runsc"));
            }
            Ok(())
        });
    }
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

    #[tokio::test]
    async fn the_hosts_namespace_and_a_missing_one_are_refused() {
        let config = Config::default();
        let e = Netns::plan(&spec_with_netns(Some(Some("/proc/self/ns/net"))), &config, Path::new("runsc")).await.err().unwrap();
        assert!(e.to_string().contains("is the host's"), "{e}");
        let e = Netns::plan(&spec_with_netns(Some(Some("/var/run/netns/nope-beta9"))), &config, Path::new("runsc")).await.err().unwrap();
        assert!(e.to_string().contains("/var/run/netns/nope-beta9") && e.to_string().contains("cannot be used"), "{e}");
        // A file or a FIFO at the path is no namespace, and does not hang the shim.
        let dir = tempfile::tempdir().unwrap();
        let (file, fifo) = (dir.path().join("file"), dir.path().join("fifo"));
        std::fs::write(&file, "").unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for p in [&file, &fifo] {
            let e = Netns::plan(&spec_with_netns(Some(Some(p.to_str().unwrap()))), &config, Path::new("runsc")).await.err().unwrap();
            assert!(e.to_string().contains("it is not a namespace"), "{e}");
        }
        let none = Netns::plan(&spec_with_netns(Some(None)), &config, Path::new("runsc")).await.unwrap();
        assert_eq!((none.mode(), none.needs_private_proc_sys_net()), (Network::None, false));
    }

    #[tokio::test]
    async fn the_runsc_check_is_read_from_the_binary_once() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::write(&old, [b"xx".as_slice(), OLD_ROOT_MARK, b"yy"].concat()).unwrap();
        std::fs::write(&new, [OLD_ROOT_MARK, b"..", NEW_ROOT_MARK].concat()).unwrap();
        let cache = dir.path().join("cache");
        assert!(runsc_mistakes_namespaces(&old, &cache).await);
        assert!(!runsc_mistakes_namespaces(&new, &cache).await);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2, "one answer per binary");
        assert!(runsc_mistakes_namespaces(&old, &cache).await, "read back from the cache");
        assert!(!runsc_mistakes_namespaces(Path::new("/nonexistent/runsc"), &cache).await);
    }
}
