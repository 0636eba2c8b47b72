//! Sandboxes with a network of their own: CRI pods on the private containerd's CNI bridge
//! (bridge + host-local + portmap), `ctr run --with-ns` into a namespace the test made, and
//! Docker inside a networked pod pulling, building, serving, running a compose project, filling
//! its store and starting again in its pod. Traffic stays on this machine: pods, the bridge's
//! host side, and the tests' own namespaces.

use beta9_e2e::{
    compose,
    cri::{Cri, Pod, Spec},
    net::{self, httpd, out, registry, strs, Server, TestNetns},
    *,
};
use k8s_cri::v1::{ContainerState, LinuxContainerResources};

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
    net::docker_in_a_networked_pod(DEBIAN, &["DOCKER_BUILDKIT=1 docker build"]);
}

const MIB: i64 = 1 << 20;

/// A pod whose containers run a dockerd that may pull from the test registry.
fn docker_pod<'a>(cri: &'a Cri, name: &str) -> Pod<'a> {
    let args = format!("--insecure-registry={}", registry());
    let annotations = [("io.beta9.sandbox.docker", "true"), ("io.beta9.sandbox.docker.args", args.as_str())];
    cri.run_pod(name, &annotations, false).expect("RunPodSandbox of a Docker pod")
}

/// Runs a bash script in a pod's container; its output, or the test fails with it.
fn sh(pod: &Pod, container: &str, script: &str, secs: i64) -> String {
    let r = pod.exec_sync(container, &["bash", "-c", script], secs).unwrap();
    assert_eq!(r.exit_code, 0, "{script}: {}", out(&r));
    out(&r)
}

#[test]
fn trixie_compose_in_a_networked_pod_serves_its_published_port_to_the_host() {
    let cri = Cri::connect();
    let project = compose::Project::new();
    let (dir, tar) = (project.dir.display().to_string(), nested_busybox_tar().display().to_string());
    let mut pod = docker_pod(&cri, "netcompose");
    let mounts = [(dir.as_str(), "/compose"), (tar.as_str(), "/images/busybox.tar")];
    let d = pod.run(&Spec { name: "docker", image: DEBIAN_TRIXIE, command: &["sleep", "600"], mounts: &mounts, ..Default::default() });
    let ip = pod.network().ip.clone();
    let run = |script: &str| sh(&pod, &d, script, 120);
    let published = || net::wait_for_http(&format!("{ip}:{}", compose::PUBLISHED), "/f");
    compose::up_and_down(&run, &published);
}

/// The pod's sandbox cgroup (v1 memory, or v2) and a file of it.
fn pod_memory(pod: &Pod, file_v1: &str, file_v2: &str) -> u64 {
    let pid = pod.sandbox_processes().first().expect("the pod's sandbox").0;
    let path = cgroups::of_process(pid, "memory").expect("the sandbox's cgroup");
    if cgroups::v2() {
        cgroups::read_u64(&path, file_v2)
    } else {
        cgroups::read_u64(&path, file_v1)
    }
}

fn pod_oom_kills(pod: &Pod) -> u64 {
    let pid = pod.sandbox_processes().first().expect("the pod's sandbox").0;
    let path = cgroups::of_process(pid, "memory").expect("the sandbox's cgroup");
    if cgroups::v2() {
        cgroups::keyed(&path, "memory.events", "oom_kill")
    } else {
        cgroups::keyed(&path, "memory.oom_control", "oom_kill")
    }
}

#[test]
fn a_pull_that_fills_the_store_is_enospc_and_the_pod_lives_on() {
    let cri = Cri::connect();
    let (busybox, filler) = (net::busybox_in_registry(), net::filler_in_registry(400));
    let mut pod = docker_pod(&cri, "netfull");
    let resources = LinuxContainerResources { memory_limit_in_bytes: 512 * MIB, ..Default::default() };
    let d = pod.run(&Spec { name: "docker", image: DEBIAN, command: &["sleep", "600"], resources: Some(resources), ..Default::default() });
    // Half of the container's 512 MiB.
    assert_eq!(sh(&pod, &d, "df -m --output=size /var/lib/docker | tail -n 1", 10).trim(), "256");
    sh(&pod, &d, &format!("docker pull -q {busybox}"), 120);
    let before = pod_memory(&pod, "memory.usage_in_bytes", "memory.current");
    // 400 MiB of layer into a 256 MiB store: dockerd says so, in its words.
    let r = pod.exec_sync(&d, &["docker", "pull", "-q", &filler], 120).unwrap();
    assert_ne!(r.exit_code, 0, "the pull should fail: {}", out(&r));
    assert!(out(&r).contains("no space left on device"), "{}", out(&r));
    let after = pod_memory(&pod, "memory.usage_in_bytes", "memory.current");
    eprintln!("pod sandbox memory: {} MiB before the pull, {} MiB after it failed", before >> 20, after >> 20);
    // The pod lives on: no OOM kill, dockerd ready, nested containers run.
    assert_eq!(pod_oom_kills(&pod), 0, "the pod's sandbox met the OOM killer");
    assert_eq!(pod.state(&d), ContainerState::ContainerRunning);
    assert!(sh(&pod, &d, "/.beta9/agent status", 10).starts_with("dockerd: ready\n"));
    let alive = sh(&pod, &d, &format!("docker run --rm {busybox} echo alive"), 60);
    assert_eq!(alive.trim(), "alive");
}

#[test]
fn a_docker_container_started_again_in_its_pod_is_ready_and_runs_nested_containers() {
    let cri = Cri::connect();
    let image = net::busybox_in_registry();
    let mut pod = docker_pod(&cri, "netagain");
    let spec = |attempt| Spec { name: "docker", image: DEBIAN, command: &["sleep", "600"], attempt, ..Default::default() };
    let first = pod.run(&spec(0));
    // Leaves docker0, a user-defined bridge, veths and the agent's rules in the pod's netstack.
    sh(&pod, &first, &format!("docker pull -q {image} && docker run --rm {image} true && docker network create extra"), 120);
    sh(&pod, &first, &format!("docker run -d --network extra --stop-timeout 1 {image} sleep 600"), 60);
    pod.stop(&first, 30).expect("StopContainer");
    assert!(pod.reaches(&first, ContainerState::ContainerExited));
    // What the kubelet does next: the same container again, its next attempt, in the same pod.
    // StartContainer returns once its dockerd answers.
    let again = pod.run(&spec(1));
    let log = sh(&pod, &again, "grep 'beta9-sandbox-agent' /var/log/beta9/dockerd.log", 10);
    assert!(log.contains("holds a previous dockerd's interfaces") && log.contains("docker0"), "{log}");
    let status = sh(&pod, &again, "/.beta9/agent status", 10);
    assert!(status.contains("network: sandbox: eth0 ") && status.contains("SNAT"), "the pod's own uplink, not a bridge left behind: {status}");
    // Nested containers on the default bridge, reaching the registry through the agent's SNAT.
    sh(&pod, &again, &format!("docker pull -q {image}"), 120);
    let hello = sh(&pod, &again, &format!("docker run --rm {image} echo hello"), 60);
    assert_eq!(hello.trim(), "hello");
    let catalog = sh(&pod, &again, &format!("docker run --rm {image} wget -qO- http://{}/v2/_catalog", registry()), 60);
    assert!(catalog.contains("repositories"), "{catalog}");
    // Only what the new dockerd made: docker0 and the veth of nothing (no container runs).
    let links = sh(&pod, &again, "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort | tr '\\n' ' '", 10);
    assert!(links.contains("docker0") && !links.contains("br-") && !links.contains("veth"), "{links}");
}
