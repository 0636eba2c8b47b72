//! What the image's Docker can run on this gVisor, decided from versions: runc's before dockerd
//! starts, dockerd's from its API once it answers.
//!
//! - runc 1.2 and later verify procfs before they use it (filepath-securejoin's procfs checks:
//!   the filesystem type, and a root inode of 1) and refuse gVisor's /proc, whose root inode is
//!   not 1 in this release: every nested container fails at create with `unsafe procfs
//!   detected: incorrect procfs root inode number 86`. No flag or variable turns the check off.
//! - dockerd 28 and later fail to attach a container to any bridge network here (`failed to
//!   subscribe to link updates: permission denied`); host and none networks work. Whether
//!   runsc's --allow-packet-socket-write (which this runsc lacks) is all it needs is unknown here.
//!
//! And what that leaves working, as `agent status` says it.

use contract::args::Network;

/// A `major.minor.patch` version as programs print it (`runc version 1.3.6+ds1`,
/// `Docker version 28.5.2+dfsg4, build ...`): the first word that starts with a digit.
pub fn parse_version(output: &str) -> Option<(u32, u32, u32)> {
    let line = output.lines().next()?;
    let word = line.split(|c: char| c.is_whitespace() || c == ',').find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = word.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// Whether this runc refuses gVisor's /proc (runc 1.2.0 and later).
pub fn runc_refuses_gvisor_proc(version: (u32, u32, u32)) -> bool {
    version >= (1, 2, 0)
}

/// Whether this dockerd cannot attach containers to bridge networks here (Docker 28 and later).
pub fn dockerd_bridge_fails(version: (u32, u32, u32)) -> bool {
    version.0 >= 28
}

/// Whether the operator or user chose dockerd's runtime themselves: their choice stands.
pub fn runtime_chosen(args: &[String], daemon_json: Option<&str>) -> bool {
    args.iter().any(|a| a == "--default-runtime" || a.starts_with("--default-runtime="))
        || daemon_json.is_some_and(|j| j.contains("\"default-runtime\""))
}

/// Whether the arguments already set dockerd's default bridge.
pub fn bridge_chosen(args: &[String]) -> bool {
    args.iter().any(|a| a == "-b" || a == "--bridge" || a.starts_with("--bridge=") || a.starts_with("-b="))
}

/// What Docker can do in this sandbox, for `agent status` (README: Docker inside the sandbox).
/// `bridges` is false where dockerd cannot attach containers to bridge networks here.
pub fn works(network: Network, bridges: bool) -> String {
    let build = "docker build with BuildKit (DOCKER_BUILDKIT=1, buildx build --load)";
    match (network, bridges) {
        (Network::Host, _) | (_, false) => format!("nested containers on --network host or none, {build} with --network host"),
        (Network::None, true) => format!(
            "nested containers on Docker's bridges (loopback only: the sandbox has no network), compose (service names, \
             TCP and UDP between services on user-defined networks), -p on the sandbox's own addresses, {build} from local images"
        ),
        (Network::Sandbox, true) => format!(
            "nested containers on Docker's bridges reaching other hosts through the sandbox's address, compose (service \
             names, TCP and UDP between services on user-defined networks), -p on the sandbox's address, pulls, {build}"
        ),
    }
}

/// What Docker cannot do in this sandbox, and why.
pub fn does_not_work(network: Network, bridges: bool) -> String {
    let mut not = vec![
        "docker exec into a nested container (runc's exec cannot join a running container's namespaces in this \
         gVisor: `error executing setns process`; docker run, logs and attach work)"
            .to_string(),
    ];
    if !bridges && network != Network::Host {
        not.push("bridge networks, hence compose's default network (`failed to subscribe to link updates: permission denied`)".into());
    }
    if network == Network::Sandbox && bridges {
        not.push("ping from nested containers to other hosts (gVisor's netstack translates TCP and UDP only)".into());
    }
    not.join("; ")
}

/// The storage driver dockerd chose, from its start-up line (`graphdriver(s)=overlay2` up to
/// Docker 23, `storage-driver=overlay2` since).
pub fn storage_driver(log_lines: &[String]) -> Option<String> {
    log_lines.iter().rev().filter(|l| l.contains("Docker daemon")).find_map(|l| {
        let rest = l.split("graphdriver(s)=").nth(1).or_else(|| l.split("storage-driver=").nth(1))?;
        Some(rest.split_whitespace().next()?.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_driver_is_read_from_dockerds_start_up_line() {
        let l = |s: &str| s.to_string();
        let v20 = [l("level=info msg=\"Loading containers: done.\""), l("level=info msg=\"Docker daemon\" commit=5d6db84 graphdriver(s)=overlay2 version=20.10.24+dfsg1")];
        assert_eq!(storage_driver(&v20).as_deref(), Some("overlay2"));
        let v26 = [l("level=info msg=\"Docker daemon\" commit=8e96db1 containerd-snapshotter=false storage-driver=vfs version=26.1.5+dfsg1")];
        assert_eq!(storage_driver(&v26).as_deref(), Some("vfs"));
        assert_eq!(storage_driver(&[l("level=error msg=\"failed to mount overlay: invalid argument\" storage-driver=overlay2")]), None);
    }

    #[test]
    fn what_works_follows_the_network_and_the_bridges() {
        assert!(works(Network::Sandbox, true).contains("compose"));
        assert!(works(Network::None, true).contains("compose"));
        assert!(!works(Network::Host, true).contains("compose"));
        assert!(!works(Network::Sandbox, false).contains("compose"));
        assert!(does_not_work(Network::None, true).contains("docker exec"));
        assert!(does_not_work(Network::Sandbox, false).contains("bridge networks"));
        assert!(!does_not_work(Network::Host, false).contains("bridge networks"), "no bridge was asked for");
    }

    #[test]
    fn versions_as_runc_and_dockerd_print_them() {
        assert_eq!(parse_version("runc version 1.3.6+ds1\ncommit: 1.3.6+ds1-1\nspec: 1.2.1"), Some((1, 3, 6)));
        assert_eq!(parse_version("runc version 1.1.15+ds1\n"), Some((1, 1, 15)));
        assert_eq!(parse_version("runc version 1.2.0-rc.1\n"), Some((1, 2, 0)));
        assert_eq!(parse_version("Docker version 28.5.2+dfsg4, build 3ef3c07"), Some((28, 5, 2)));
        assert_eq!(parse_version("Docker version 20.10.24+dfsg1, build 297e128"), Some((20, 10, 24)));
        assert_eq!(parse_version("Docker version 26.1, build x"), Some((26, 1, 0)));
        assert_eq!(parse_version("runc: command not found"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn runc_from_1_2_refuses_gvisors_proc() {
        assert!(!runc_refuses_gvisor_proc((1, 1, 15)));
        assert!(!runc_refuses_gvisor_proc((1, 1, 5)));
        assert!(runc_refuses_gvisor_proc((1, 2, 0)));
        assert!(runc_refuses_gvisor_proc((1, 3, 6)));
        assert!(runc_refuses_gvisor_proc((1, 4, 0)));
    }

    #[test]
    fn docker_28_has_no_bridge_here() {
        assert!(!dockerd_bridge_fails((26, 1, 5)));
        assert!(dockerd_bridge_fails((28, 5, 2)));
        assert!(dockerd_bridge_fails((29, 0, 0)));
    }

    #[test]
    fn a_chosen_runtime_or_bridge_stands() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(runtime_chosen(&s(&["--default-runtime", "crun"]), None));
        assert!(runtime_chosen(&s(&["--default-runtime=crun"]), None));
        assert!(runtime_chosen(&[], Some(r#"{"default-runtime": "crun", "runtimes": {}}"#)));
        assert!(!runtime_chosen(&s(&["--add-runtime", "crun=/usr/bin/crun"]), Some("{}")));
        assert!(bridge_chosen(&s(&["--bridge=none"])));
        assert!(bridge_chosen(&s(&["-b", "br0"])));
        assert!(!bridge_chosen(&s(&["--bip=10.0.0.1/24"])));
    }
}
