//! Sandboxes with a network of their own: CRI pods on the private containerd's CNI bridge
//! (bridge + host-local + portmap), `ctr run --with-ns` into a namespace the test made, and
//! Docker inside a networked pod pulling, building and serving. Traffic stays on this machine:
//! pods, the bridge's host side, and the tests' own namespaces.

use beta9_e2e::{
    cri::{Cri, Spec},
    net::{self, httpd, out, strs, Server, TestNetns},
    *,
};

#[test]
fn a_pod_sees_eth0_with_the_address_cni_gave_it() {
    let cri = Cri::connect();
    let mut pod = cri.run_pod("netpod", &[], false).expect("RunPodSandbox of a pod with its own network namespace");
    let c = pod.run(&Spec { name: "c", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    let ip = pod.network().ip.clone();
    let r = pod.exec_sync(&c, &["ip", "-4", "addr", "show", "eth0"], 10).unwrap();
    assert_eq!(r.exit_code, 0, "{}", out(&r));
    assert!(out(&r).contains(&format!("inet {ip}/24")), "eth0 carries CNI's address {ip}: {}", out(&r));
    let lo = pod.exec_sync(&c, &["ip", "-4", "addr", "show", "lo"], 10).unwrap();
    assert!(out(&lo).contains("127.0.0.1"), "{}", out(&lo));
    let sandbox = pod.sandboxes().join("\n");
    assert!(sandbox.contains("--network=sandbox"), "gVisor's own netstack: {sandbox}");
    // Dropping the pod checks that its namespace, veth, reservation and rules are gone.
}

#[test]
fn pods_talk_tcp_both_ways_and_the_host_reaches_a_pod_at_its_ip() {
    let cri = Cri::connect();
    let mut a = cri.run_pod("neta", &[], false).expect("pod a");
    let mut b = cri.run_pod("netb", &[], false).expect("pod b");
    let sa = a.run(&Spec { name: "web", image: BUSYBOX, command: &strs(&httpd("from-a")), ..Default::default() });
    let sb = b.run(&Spec { name: "web", image: BUSYBOX, command: &strs(&httpd("from-b")), ..Default::default() });
    let (ipa, ipb) = (a.network().ip.clone(), b.network().ip.clone());
    // From the host, at each pod's address (also waits for both servers to listen).
    assert_eq!(net::wait_for_http(&format!("{ipa}:8080"), "/f").trim(), "from-a");
    assert_eq!(net::wait_for_http(&format!("{ipb}:8080"), "/f").trim(), "from-b");
    // a -> b and b -> a.
    let r = a.exec_sync(&sa, &["wget", "-qO-", &format!("http://{ipb}:8080/f")], 20).unwrap();
    assert_eq!((r.exit_code, out(&r).trim()), (0, "from-b"));
    let r = b.exec_sync(&sb, &["wget", "-qO-", &format!("http://{ipa}:8080/f")], 20).unwrap();
    assert_eq!((r.exit_code, out(&r).trim()), (0, "from-a"));
}

#[test]
fn ctr_with_ns_joins_a_test_namespace_and_its_addresses_come_back() {
    let (inner, outer) = (TestNetns::new("b9in"), TestNetns::new("b9out"));
    let (mine, theirs) = net::wire(&inner, &outer, 7);
    let _server = Server::httpd(&outer, 8080, "f", "from-outside\n");
    let before = inner.ip(&["-4", "addr"]);
    assert!(before.contains(&mine));
    let ns = format!("network:{}", inner.path());
    // Twice: runsc takes the namespace's addresses, and the shim puts them back afterwards.
    for round in 0..2 {
        let c = Container::new("withns");
        let r = c.run(BUSYBOX, &["--with-ns", &ns], &["sh", "-c", &format!("ip -4 addr; wget -qO- http://{theirs}:8080/f")], None);
        assert_eq!(r.code, 0, "round {round}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(&format!("inet {mine}/24")), "the namespace's address inside: {}", r.stdout);
        assert!(r.stdout.contains("from-outside"), "{}", r.stdout);
        let after = inner.ip(&["-4", "addr"]);
        assert!(after.contains(&format!("inet {mine}/24")), "round {round}: the address is back: {after}");
        assert!(inner.ip(&["-4", "route"]).contains("10.99.7.0/24"), "and its route");
    }
}

#[test]
fn runscs_network_error_reaches_the_client_and_nothing_is_left() {
    // runsc refuses a default route without a gateway, at the first container's start.
    let ns = TestNetns::new("b9noroute");
    let peer = TestNetns::new("b9peer");
    net::wire(&ns, &peer, 8);
    let dev = ns.ip(&["-o", "link"]).lines().find(|l| l.contains("b9a")).and_then(|l| l.split(':').nth(1)).map(|d| d.trim().split('@').next().unwrap().to_string()).unwrap();
    ns.ip(&["route", "add", "default", "dev", &dev]);
    let c = Container::new("netfail");
    let r = c.run(BUSYBOX, &["--with-ns", &format!("network:{}", ns.path())], &["echo", "never"], None);
    r.assert_refused(&["runsc start failed", "default route with no gateway"]);
    assert!(eventually(std::time::Duration::from_secs(10), || c.sandbox_pid().is_none()), "the sandbox of a failed start still runs");
    assert_ne!(c.status().as_deref(), Some("CREATED"), "a task whose start failed is stopped or deleted");
    // Drop checks that no process, mount or runsc state is left.
}

#[test]
fn a_missing_network_namespace_is_refused_naming_it() {
    let c = Container::new("nonetns");
    let missing = format!("/var/run/netns/{}", unique_id("nope"));
    let r = c.run(BUSYBOX, &["--with-ns", &format!("network:{missing}")], &["true"], None);
    r.assert_refused(&[&missing, "cannot be used"]);
}

#[test]
fn docker_in_a_networked_pod_pulls_builds_fetches_and_serves() {
    net::docker_in_a_networked_pod(DEBIAN);
}
