//! Resource limits that hold (issue 11): the shim puts each sandbox in its cgroup with the
//! spec's limits, reports OOM kills, reads stats from the cgroup, updates limits live and
//! removes the cgroup, against the real containerd, runsc and the host's cgroups. Every
//! container's Drop checks that no cgroup carrying its id is left.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use beta9_e2e::{
    cgroups,
    cri::{Cri, Spec},
    *,
};
use k8s_cri::v1::{ContainerState, LinuxContainerResources};

const MIB: u64 = 1 << 20;
/// Touches every page of `MB` megabytes, so the memory is really used.
fn alloc(mb: u64) -> String {
    format!("b = bytearray({mb} << 20); b[::4096] = b'x' * (len(b) // 4096); print('allocated')")
}

/// `ctr events`, collected as they arrive; stopped when dropped.
struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    /// Returns once ctr is subscribed: an event of the test's own (a namespace label) came through.
    fn start() -> Events {
        let mut child = ctr().arg("events").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("ctr events");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let events = Events { child, lines };
        let marker = unique_id("events");
        assert!(
            eventually(Duration::from_secs(10), || {
                let _ = run_cmd(ctr().args(["namespaces", "label", "default", &format!("beta9-e2e={marker}")]), None);
                events.find(&marker).is_some()
            }),
            "ctr events never showed the test's own event"
        );
        let _ = run_cmd(ctr().args(["namespaces", "label", "default", "beta9-e2e="]), None);
        events
    }

    /// The index of the first event line that holds every one of `words`.
    fn find_all(&self, words: &[&str]) -> Option<usize> {
        self.lines.lock().unwrap().iter().position(|l| words.iter().all(|w| l.contains(w)))
    }

    fn find(&self, word: &str) -> Option<usize> {
        self.find_all(&[word])
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// TaskOOM then the TaskExit of container `id`'s init: waits for the exit, returns (oom, exit).
    fn oom_then_exit(&self, id: &str) -> (Option<usize>, usize) {
        let (container, init) = (format!("\"container_id\":\"{id}\""), format!("\"id\":\"{id}\""));
        let exit = || self.find_all(&["/tasks/exit", &container, &init]);
        assert!(eventually(Duration::from_secs(20), || exit().is_some()), "no TaskExit for {id}: {:?}", self.all());
        (self.find_all(&["/tasks/oom", &container]), exit().unwrap())
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cgroup containerd names for a ctr container: `/<namespace>/<id>`.
fn ctr_cgroup(c: &Container) -> String {
    format!("/default/{}", c.id)
}

/// CPU time the cgroup has used, in nanoseconds: its own counter.
fn cpu_usage(path: &str) -> u64 {
    if cgroups::v2() { cgroups::keyed(path, "cpu.stat", "usage_usec") * 1000 } else { cgroups::read_u64(path, "cpuacct.usage") }
}

fn metric(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
}

#[test]
fn memory_limit_stops_a_large_allocation_and_the_oom_is_published() {
    let events = Events::start();
    let c = Container::new("oom");
    let r = c.run(DEBIAN, &["--memory-limit", &(64 * MIB).to_string()], &["python3", "-c", &alloc(400)], None);
    assert_eq!(r.code, 137, "400 MB under a 64 MiB limit must be killed: {}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("allocated"), "{}", r.stdout);
    let (oom, exit) = events.oom_then_exit(&c.id);
    let oom = oom.unwrap_or_else(|| panic!("no TaskOOM for {}: {:?}", c.id, events.all()));
    assert!(oom < exit, "TaskOOM must come before TaskExit, so that CRI reports OOMKilled");
}

#[test]
fn a_quarter_cpu_holds_a_busy_loop() {
    let c = Container::new("cpu");
    c.start(BUSYBOX, &["--cpus", "0.25"], &["sh", "-c", "while :; do :; done"]);
    let path = ctr_cgroup(&c);
    // The sandbox and its gofer were started inside the cgroup.
    let sandbox = c.sandbox_pid().expect("a running sandbox");
    let gofer = processes_with_pids()
        .into_iter()
        .find(|(_, cmd)| cmd.starts_with("runsc-gofer") && cmd.contains(&format!("/{}/", c.id)))
        .map(|(p, _)| p)
        .expect("the sandbox's gofer");
    for (what, pid) in [("sandbox", sandbox), ("gofer", gofer)] {
        for ctl in ["cpu", "memory", "pids"] {
            assert_eq!(cgroups::of_process(pid, ctl).as_deref(), Some(path.as_str()), "the {what}'s {ctl} cgroup");
        }
    }
    assert!(eventually(Duration::from_secs(10), || cpu_usage(&path) > 100_000_000), "the loop should be running");
    let throttled = || cgroups::keyed(&path, "cpu.stat", "nr_throttled");
    let (u0, n0, t0) = (cpu_usage(&path), throttled(), Instant::now());
    // A measuring window, not a wait for an event: CFS hands out 25 ms per 100 ms period.
    std::thread::sleep(Duration::from_secs(2));
    let (u1, n1, t1) = (cpu_usage(&path), throttled(), Instant::now());
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("busy loop under --cpus 0.25: {share:.3} of a CPU, throttled {} times", n1 - n0);
    assert!(share < 0.32, "the cgroup used {share:.3} of a CPU under a 0.25 quota");
    assert!(n1 > n0, "the quota never throttled the loop");
}

#[test]
fn a_pids_limit_stops_a_fork_bomb() {
    // `ctr run` has no pids flag: a spec of ctr's own with linux.resources.pids, on a busybox rootfs.
    let c = Container::new("forkbomb");
    let dir = std::env::temp_dir().join(&c.id);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let cache = std::env::var("BETA9_CACHE").unwrap_or_else(|_| "/var/cache/beta9".into());
    let tar = run_cmd(Command::new("tar").arg("-C").arg(&rootfs).arg("-xf").arg(format!("{cache}/busybox-rootfs.tar")), None);
    assert_eq!(tar.code, 0, "busybox rootfs (hack/build-images.sh busybox): {}", tar.stderr);
    let spec = run_cmd(ctr().args(["oci", "spec"]), None);
    let mut spec: serde_json::Value = serde_json::from_str(&spec.stdout).expect("ctr oci spec");
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "f() { f | f & }; f; sleep 600"]);
    spec["linux"]["cgroupsPath"] = serde_json::json!(ctr_cgroup(&c));
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 128 });
    let config = dir.join("config.json");
    std::fs::write(&config, spec.to_string()).unwrap();
    let r = run_cmd(ctr().args(["run", "-d", "--runtime", RUNTIME, "--config"]).arg(&config).arg(&c.id), None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let path = ctr_cgroup(&c);
    // The kernel refused the bomb a task at the limit; the host never saw more.
    let refused = || cgroups::read(&path, "pids.events").is_some_and(|s| s.lines().any(|l| l.starts_with("max ") && l != "max 0"));
    assert!(eventually(Duration::from_secs(20), || refused() || c.status().as_deref() == Some("STOPPED")), "the bomb was never stopped");
    if let Some(max) = cgroups::read(&path, "pids.max") {
        assert_eq!(max.trim(), "128");
    }
    // This runsc's sentry panics ("trying to use inactive address space?") when the host
    // refuses it a task for a new address space, so the sandbox ends with its bomb, well
    // before the host is short of anything; its exit is published and nothing of it is left.
    let code = c.wait_exit();
    assert_ne!(code, 0, "the bombed sandbox ended");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn metrics_are_the_sandboxs_own_from_its_cgroup() {
    let c = Container::new("cgmetrics");
    let limit = 256 * MIB;
    c.start(BUSYBOX, &["--memory-limit", &limit.to_string()], &["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 600"]);
    let path = ctr_cgroup(&c);
    assert!(eventually(Duration::from_secs(10), || cpu_usage(&path) > 0), "the workload should have run");
    let m = c.task(&["metrics", &c.id]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    let own_cpu = cpu_usage(&path);
    if cgroups::v2() {
        assert!(metric(&m.stdout, "memory.usage") > 0 && metric(&m.stdout, "memory.usage") <= limit, "{}", m.stdout);
        assert_eq!(metric(&m.stdout, "memory.usage_limit"), limit, "{}", m.stdout);
        assert!(metric(&m.stdout, "cpu.usage_usec") * 1000 <= own_cpu, "{}", m.stdout);
    } else {
        let usage = metric(&m.stdout, "memory.usage_in_bytes");
        assert!(usage > 0 && usage <= limit, "memory within the limit: {}", m.stdout);
        assert_eq!(metric(&m.stdout, "memory.limit_in_bytes"), limit, "{}", m.stdout);
        // The sandbox's own CPU time (it reads the cgroup, which only grows), not the host's.
        let cpu = metric(&m.stdout, "cpuacct.usage");
        let host = cgroups::read_u64("/", "cpuacct.usage");
        assert!(cpu > 0 && cpu <= own_cpu && cpu < host / 2, "cpu {cpu}, cgroup {own_cpu}, host {host}:\n{}", m.stdout);
    }
    // The sandbox's host processes and threads: its kernel, gofer and systrap stubs.
    assert!(metric(&m.stdout, "pids.current") >= 3, "{}", m.stdout);
}

#[test]
fn update_changes_the_memory_limit_of_a_running_sandbox() {
    let events = Events::start();
    let c = Container::new("cgupdate");
    c.start(DEBIAN, &["--memory-limit", &(512 * MIB).to_string()], &["sleep", "600"]);
    let path = ctr_cgroup(&c);
    let r = c.exec("before", &["python3", "-c", &alloc(128)], None);
    assert_eq!((r.code, r.stdout.trim()), (0, "allocated"), "128 MB fit in 512 MiB: {}", r.stderr);

    let client = client::Client::connect();
    client.update(&c.id, &serde_json::json!({ "memory": { "limit": 64 * MIB } })).expect("Tasks.Update");
    let limit = if cgroups::v2() { cgroups::read_u64(&path, "memory.max") } else { cgroups::read_u64(&path, "memory.limit_in_bytes") };
    assert_eq!(limit, 64 * MIB);
    let m = c.task(&["metrics", &c.id]);
    assert!(m.stdout.contains(&(64 * MIB).to_string()), "metrics show the new limit: {}", m.stdout);

    // The same allocation is now held to 64 MiB: the kernel's OOM killer ends the sandbox.
    let r = c.exec("after", &["python3", "-c", &alloc(128)], None);
    assert!(!r.stdout.contains("allocated"), "{}", r.stdout);
    let (oom, exit) = events.oom_then_exit(&c.id);
    assert!(oom.is_some_and(|o| o < exit), "TaskOOM before TaskExit: {:?}", events.all());
    assert_eq!(c.wait_exit(), 137);
}

#[test]
fn a_pods_cgroup_holds_its_sandbox_and_its_stats() {
    // The test plays the kubelet: it makes the pod's cgroup, sized for the pod, and removes it
    // after the pod, which fails if the shim or runsc left a cgroup in it.
    let limit = (192 * MIB).to_string();
    let file = if cgroups::v2() { "memory.max" } else { "memory.limit_in_bytes" };
    let pod_cgroup = cgroups::Made::new(&format!("/{}", unique_id("b9pod")), &[(file, &limit)]);
    {
        let cri = Cri::connect();
        let mut pod = cri.run_pod_in("limits", &[], true, &pod_cgroup.path).expect("RunPodSandbox");
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: (128 * MIB) as i64,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        };
        let app = pod.run(&Spec { name: "app", image: DEBIAN, command: &["sleep", "600"], resources: Some(resources), ..Default::default() });

        // The pod's one sandbox runs in the pod's cgroup (in the pause's, below it).
        let procs = pod.sandbox_processes();
        assert_eq!(procs.len(), 1, "{procs:?}");
        let sandbox_cgroup = cgroups::of_process(procs[0].0, "memory").unwrap();
        assert!(sandbox_cgroup.starts_with(&format!("{}/", pod_cgroup.path)), "{sandbox_cgroup} is not under {}", pod_cgroup.path);
        assert!(cgroups::of_process(procs[0].0, "cpu").unwrap().starts_with(&pod_cgroup.path));

        let r = pod.exec_sync(&app, &["python3", "-c", &alloc(32)], 30).expect("ExecSync");
        assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
        let stats = pod.stats(&app).expect("ContainerStats");
        let working_set = stats.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0);
        let cpu = stats.cpu.and_then(|c| c.usage_core_nano_seconds).map(|v| v.value).unwrap_or(0);
        let pod_cpu = cpu_usage(&pod_cgroup.path);
        assert!(working_set > 0 && working_set <= 192 * MIB, "working set {working_set} within the pod's limit");
        assert!(cpu > 0 && cpu <= pod_cpu, "the sandbox's own CPU {cpu}, at most the pod's {pod_cpu}");

        // Past the pod's limit, the kernel kills the pod's sandbox: CRI reports OOMKilled.
        let _ = pod.exec_sync(&app, &["python3", "-c", &alloc(400)], 30);
        assert!(pod.reaches(&app, ContainerState::ContainerExited), "the app container should have died with its sandbox");
        let status = pod.status(&app);
        assert_eq!((status.exit_code, status.reason.as_str()), (137, "OOMKilled"));
        // Dropping the pod removes it and checks that nothing of it is left.
    }
}

#[test]
fn an_app_containers_memory_limit_holds_in_a_pod_nobody_sized() {
    // No kubelet here: the pod's cgroup has no limit, so the app container's limit sizes the
    // sandbox's (its own use plus the limit), and going past it ends the pod's sandbox.
    let cri = Cri::connect();
    let mut pod = cri.run_pod("podoom", &[], true).expect("RunPodSandbox");
    let resources = LinuxContainerResources { memory_limit_in_bytes: (64 * MIB) as i64, ..Default::default() };
    let app = pod.run(&Spec { name: "app", image: DEBIAN, command: &["sleep", "600"], resources: Some(resources), ..Default::default() });
    let r = pod.exec_sync(&app, &["python3", "-c", &alloc(16)], 30).expect("ExecSync");
    assert_eq!(r.exit_code, 0, "well within the limit: {}", String::from_utf8_lossy(&r.stderr));
    let _ = pod.exec_sync(&app, &["python3", "-c", &alloc(256)], 30);
    assert!(pod.reaches(&app, ContainerState::ContainerExited), "the app container should have died with its sandbox");
    let status = pod.status(&app);
    assert_eq!((status.exit_code, status.reason.as_str()), (137, "OOMKilled"));
}

#[test]
fn a_pod_cgroup_the_shim_made_goes_with_the_pod() {
    // crictl without a kubelet: a cgroup_parent nobody made. The shim makes it and removes it.
    let parent = format!("/{}", unique_id("b9nopod"));
    let cri = Cri::connect();
    let mut pod = cri.run_pod_in("madepod", &[], true, &parent).expect("RunPodSandbox");
    let app = pod.run(&Spec { name: "app", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    let procs = pod.sandbox_processes();
    let cgroup = cgroups::of_process(procs[0].0, "memory").unwrap();
    assert_eq!(cgroup, format!("{parent}/{}", pod.id), "the sandbox runs in the pause's cgroup under the pod's");
    assert_eq!(pod.exec_sync(&app, &["true"], 10).unwrap().exit_code, 0);
    drop(pod);
    let name = parent.trim_start_matches('/');
    assert!(eventually(Duration::from_secs(10), || cgroups::named(name).is_empty()), "the pod's cgroup should be gone: {:?}", cgroups::named(name));
}

#[test]
fn a_killed_shim_leaves_no_cgroup_behind() {
    let c = Container::new("cgshimkill");
    c.start(BUSYBOX, &["--memory-limit", &(128 * MIB).to_string()], &["sleep", "600"]);
    assert!(cgroups::dir("memory", &ctr_cgroup(&c)).exists());
    let shim = c.shim_pid().expect("a shim for the container");
    assert_eq!(run_cmd(Command::new("kill").args(["-9", &shim.to_string()]), None).code, 0);
    // containerd runs the delete action, which removes the sandbox and, from the bundle's
    // record, the cgroups the shim made.
    assert!(eventually(Duration::from_secs(20), || c.sandbox_pid().is_none()), "the sandbox should be removed after its shim died");
    assert!(eventually(Duration::from_secs(20), || cgroups::named(&c.id).is_empty()), "cgroups left: {:?}", cgroups::named(&c.id));
}

#[test]
fn a_cgroup_that_cannot_be_made_joined_or_set_fails_create_naming_it() {
    // Made: a cgroup path through a file of the cgroup filesystem.
    let c = Container::new("cgbadpath");
    let r = c.run(BUSYBOX, &["--cgroup", &format!("/cgroup.procs/{}", c.id)], &["true"], None);
    r.assert_refused(&["cgroup.procs", &c.id, "Not a directory"]);
    drop(c);

    // Joined: below a v1 cpuset with no CPUs, which no process can join.
    if !cgroups::v2() {
        let parent = cgroups::Made::empty_cpuset(&format!("/{}", unique_id("b9nocpus")));
        let c = Container::new("cgnojoin");
        let r = c.run(BUSYBOX, &["--cgroup", &format!("{}/{}", parent.path, c.id)], &["true"], None);
        r.assert_refused(&["cgroup", &parent.path, "No space left on device"]);
        drop(c);
    }

    // Set: a CFS period below the kernel's 1 ms minimum.
    let c = Container::new("cgbadlimit");
    let r = c.run(BUSYBOX, &["--cpu-quota", "500", "--cpu-period", "500"], &["true"], None);
    let file = if cgroups::v2() { "cpu.max" } else { "cpu.cfs_period_us" };
    r.assert_refused(&[file, &c.id, "Invalid argument"]);
    // Each Drop checks that no process, mount, runsc state or cgroup is left.
}

#[test]
fn cgroups_config_keys_are_honoured() {
    // enforce = false: no cgroup, no limit; the operator manages cgroups.
    let off = ConfigFile::new("[cgroups]\nenforce = false\n");
    let c = Container::new("cgoff");
    let [opt, path] = off.flag();
    let r = c.run(DEBIAN, &[&opt, &path, "--memory-limit", &(64 * MIB).to_string()], &["python3", "-c", &alloc(128)], None);
    assert_eq!((r.code, r.stdout.trim()), (0, "allocated"), "nothing enforced: {}", r.stderr);
    drop(c);

    // A spec without a cgroup goes under default_parent, named after its namespace and id;
    // what the shim made for it (the parent included) goes with it.
    let parent = format!("/{}", unique_id("b9parent"));
    let cfg = ConfigFile::new(&format!("[cgroups]\ndefault_parent = \"{parent}\"\n"));
    let c = Container::new("cgparent");
    let [opt, path] = cfg.flag();
    c.start(BUSYBOX, &[&opt, &path, "--cgroup", ""], &["sleep", "600"]);
    let expected = format!("{parent}/default/{}", c.id);
    assert_eq!(cgroups::of_process(c.sandbox_pid().unwrap(), "memory").as_deref(), Some(expected.as_str()));
    drop(c);
    assert_eq!(cgroups::named(parent.trim_start_matches('/')), Vec::<std::path::PathBuf>::new(), "the parent the shim made should be gone");
}

#[test]
fn a_pod_container_shrinks_in_place_right_after_it_freed_memory() {
    // The kubelet's in-place resize of a container that just freed a large buffer: gVisor gives
    // the freed memory back to the host a moment later, and cgroup v1 refuses a limit below what
    // the cgroup holds until then.
    let cri = Cri::connect();
    let mut pod = cri.run_pod("shrink", &[], true).expect("RunPodSandbox");
    let limit = |mib: u64| LinuxContainerResources { memory_limit_in_bytes: (mib * MIB) as i64, ..Default::default() };
    let app = pod.run(&Spec { name: "app", image: DEBIAN, command: &["sleep", "600"], resources: Some(limit(512)), ..Default::default() });
    for round in 0..10 {
        pod.update(&app, limit(512)).unwrap_or_else(|e| panic!("round {round}: back to 512 MiB: {e}"));
        let r = pod.exec_sync(&app, &["python3", "-c", &alloc(300)], 60).expect("ExecSync");
        assert_eq!(r.exit_code, 0, "round {round}: 300 MB fit in 512 MiB: {}", String::from_utf8_lossy(&r.stderr));
        let started = std::time::Instant::now();
        pod.update(&app, limit(64)).unwrap_or_else(|e| panic!("round {round}: down to 64 MiB: {e}"));
        assert!(started.elapsed() < Duration::from_secs(6), "round {round}: took {:?}", started.elapsed());
    }
    assert_eq!(pod.state(&app), ContainerState::ContainerRunning);
}
