//! How nested containers reach other hosts from a sandbox on gVisor's netstack: the sandbox's
//! uplink (the default route's interface, else its first interface with an IPv4 address), IP
//! forwarding, and source NAT to the uplink's address (docker/netstack.rs). gVisor's netstack has
//! no MASQUERADE, so it is SNAT, for TCP and UDP, with the legacy iptables (its nft backend is
//! refused).

use std::{io, net::Ipv4Addr, path::PathBuf};

use crate::children::find_in_path;

/// The interface the sandbox reaches other hosts through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub device: String,
    pub address: Ipv4Addr,
    pub mtu: u32,
}

/// The default route's interface in /proc/net/route's format (destination 00000000).
pub fn default_route_device(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    })
}

/// The uplink among `addresses` (interface, IPv4): the default route's device if it has one,
/// else the first interface that is neither loopback nor one of Docker's (a bridge a previous
/// dockerd left has an address too).
pub fn choose(default_device: Option<&str>, addresses: &[(String, Ipv4Addr)]) -> Option<(String, Ipv4Addr)> {
    let usable = |(d, a): &&(String, Ipv4Addr)| !a.is_loopback() && !a.is_unspecified() && !crate::docker::netstack::is_dockers(d);
    if let Some(dev) = default_device {
        if let Some(found) = addresses.iter().filter(usable).find(|(d, _)| d == dev) {
            return Some(found.clone());
        }
    }
    addresses.iter().find(usable).cloned()
}

/// The sandbox's uplink, read from its netstack.
pub fn find() -> io::Result<Uplink> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let addresses: Vec<(String, Ipv4Addr)> = nix::ifaddrs::getifaddrs()?
        .filter_map(|i| {
            let a = i.address?.as_sockaddr_in()?.ip();
            Some((i.interface_name, a))
        })
        .collect();
    let (device, address) = choose(default_route_device(&routes).as_deref(), &addresses)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the sandbox has no interface with an IPv4 address"))?;
    let mtu = mtu(&device)?;
    Ok(Uplink { device, address, mtu })
}

fn mtu(device: &str) -> io::Result<u32> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let s = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: an ifreq is plain data; all zeroes is valid.
    let mut req: nix::libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(device.bytes().take(nix::libc::IFNAMSIZ - 1)) {
        *dst = src as nix::libc::c_char;
    }
    // SAFETY: SIOCGIFMTU fills the ifreq that lives for the call.
    if unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::SIOCGIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU set the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// The iptables that speaks to gVisor's netstack: `iptables-legacy`, else an `iptables` that
/// is the legacy one itself (older images).
pub fn legacy_iptables(path: &str) -> Option<PathBuf> {
    if let Some(p) = find_in_path("iptables-legacy", path) {
        return Some(p);
    }
    let p = find_in_path("iptables", path)?;
    let target = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
    let name = target.file_name()?.to_string_lossy().into_owned();
    (!name.contains("nft")).then_some(p)
}

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t005A580A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth1\t00000000\t015A580A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";

    #[test]
    fn the_default_routes_device_wins_else_the_first_interface() {
        assert_eq!(default_route_device(ROUTES).as_deref(), Some("eth1"));
        assert_eq!(default_route_device("Iface\tDestination\n"), None);
        let addrs = vec![
            ("lo".to_string(), Ipv4Addr::LOCALHOST),
            ("eth0".to_string(), Ipv4Addr::new(10, 88, 90, 5)),
            ("eth1".to_string(), Ipv4Addr::new(10, 1, 0, 2)),
        ];
        assert_eq!(choose(Some("eth1"), &addrs), Some(("eth1".into(), Ipv4Addr::new(10, 1, 0, 2))));
        assert_eq!(choose(None, &addrs), Some(("eth0".into(), Ipv4Addr::new(10, 88, 90, 5))), "no default route: the first");
        assert_eq!(choose(Some("eth9"), &addrs).unwrap().0, "eth0");
        assert_eq!(choose(None, &addrs[..1]), None, "loopback is no uplink");
        let left = vec![("br-9d25b2b1e1a9".to_string(), Ipv4Addr::new(172, 18, 0, 1)), addrs[1].clone()];
        assert_eq!(choose(None, &left).unwrap().0, "eth0", "a bridge left behind is no uplink");
    }
}
