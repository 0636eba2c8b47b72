//! Docker inside gVisor by annotation: a real dockerd in a real runsc sandbox, on each Docker
//! image: bookworm's docker.io 20.10, trixie's 26.1 (with compose v2 and buildx) and sid's 28.5
//! (whose runc refuses gVisor's /proc: Start fails naming it, and with an older runc Docker 28
//! runs). These sandboxes are `ctr run`'s, without a network (loopback only); network.rs has
//! Docker in networked pods.

use std::time::Duration;

use beta9_e2e::*;

const DOCKER: &str = "io.beta9.sandbox.docker=true";

fn docker_sandbox(prefix: &str, extra: &[&str]) -> Container {
    docker_sandbox_of(DEBIAN, prefix, extra)
}

fn docker_sandbox_of(image: &str, prefix: &str, extra: &[&str]) -> Container {
    let c = Container::new(prefix);
    let mut args = vec!["--annotation", DOCKER];
    args.extend_from_slice(extra);
    c.start(image, &args, &[]);
    c
}

fn agent_status(c: &Container) -> String {
    c.exec(&unique_id("status"), &["/.beta9/agent", "status"], None).stdout
}

/// Runs a bash script in the sandbox; its output, or the test fails with it.
fn sh(c: &Container, script: &str) -> String {
    let r = c.exec(&unique_id("sh"), &["bash", "-c", script], None);
    assert_eq!(r.code, 0, "{script}: {}{}", r.stdout, r.stderr);
    format!("{}{}", r.stdout, r.stderr)
}

/// `--mount` of hack/build-images.sh's busybox rootfs tar at /images/busybox.tar.
fn busybox_mount() -> String {
    format!("type=bind,src={},dst=/images/busybox.tar,options=rbind:ro", nested_busybox_tar().display())
}

/// Start returned only once dockerd answered: `docker version` works at once, no retry.
fn answers_as_soon_as_run_returns(image: &str, version: &str) {
    let c = docker_sandbox_of(image, "dockerready", &[]);
    let v = c.exec("version", &["docker", "version", "--format", "{{.Server.Version}}"], None);
    assert_eq!(v.code, 0, "docker version right after ctr run -d: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.trim().starts_with(version), "{image} runs dockerd {version}: {}", v.stdout);
    let status = agent_status(&c);
    assert!(status.starts_with("dockerd: ready\n"), "{status}");
    assert!(status.contains("restarts: 0\n"), "{status}");
    // This netstack has no NAT MASQUERADE: the probe turns dockerd's iptables off and says why.
    assert!(status.contains("iptables: off, --iptables=false ("), "{status}");
    assert!(status.contains("dockerd's own iptables calls (its embedded DNS) go to iptables-legacy"), "{status}");
    // No memory limit: tmpfs's default size; the driver is overlay2.
    assert!(status.contains("storage: /var/lib/docker: tmpfs of ") && status.contains("storage driver overlay2"), "{status}");
    assert!(status.contains("works: nested containers on Docker's bridges") && status.contains("compose"), "{status}");
    assert!(status.contains("does not work: docker exec into a nested container"), "{status}");
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
}

fn nested_container_runs(image: &str, extra: &[&str]) {
    let (dir, tar) = busybox_tar();
    let mount = format!("type=bind,src={},dst=/images/busybox.tar,options=rbind:ro", tar.display());
    let mut args = vec!["--mount", &mount];
    args.extend_from_slice(extra);
    let c = docker_sandbox_of(image, "dockernested", &args);
    let i = c.exec("import", &["docker", "import", "/images/busybox.tar", "nested-busybox"], None);
    assert_eq!(i.code, 0, "{}{}", i.stdout, i.stderr);
    let r = c.exec("run", &["docker", "run", "--rm", "nested-busybox", "/bin/busybox", "echo", "hello from nested"], None);
    assert_eq!((r.code, r.stdout.trim()), (0, "hello from nested"), "{}", r.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

fn killed_dockerd_is_restarted(image: &str, extra: &[&str]) {
    let c = docker_sandbox_of(image, "dockerrestart", extra);
    let k = c.exec("kill", &["sh", "-c", "kill -9 $(cat /var/run/docker.pid)"], None);
    assert_eq!(k.code, 0, "{}", k.stderr);
    let restarted = eventually(Duration::from_secs(30), || {
        let s = agent_status(&c);
        s.starts_with("dockerd: ready\n") && s.contains("restarts: 1\n")
    });
    assert!(restarted, "dockerd was not restarted: {}", agent_status(&c));
    assert!(agent_status(&c).contains("error: dockerd exited with status 137"));
    let v = c.exec("version", &["docker", "version"], None);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
}

fn kill_stops_dockerd_cleanly(image: &str, extra: &[&str]) {
    let c = Container::new("dockerstop");
    let log = c.log_uri();
    let mut args = vec!["--annotation", DOCKER, "--log-uri", &log];
    args.extend_from_slice(extra);
    c.start(image, &args, &[]);
    assert!(c.log_contains("is ready after"));
    let k = c.task(&["kill", &c.id]);
    assert_eq!(k.code, 0, "{}", k.stderr);
    // dockerd got SIGTERM and exited by itself, then the keepalive agent ended the sandbox with 0.
    assert_eq!(c.wait_exit(), 0);
    assert!(c.log_contains("stopped with status 0"), "dockerd should stop cleanly");
}

#[test]
fn docker_answers_as_soon_as_run_returns() {
    answers_as_soon_as_run_returns(DEBIAN, "20.10");
}

#[test]
fn nested_container_runs_from_an_imported_rootfs() {
    nested_container_runs(DEBIAN, &[]);
}

#[test]
fn killed_dockerd_is_restarted_and_the_sandbox_lives_on() {
    killed_dockerd_is_restarted(DEBIAN, &[]);
}

#[test]
fn kill_stops_dockerd_cleanly_and_ends_the_sandbox() {
    kill_stops_dockerd_cleanly(DEBIAN, &[]);
}

#[test]
fn trixie_docker_26_answers_as_soon_as_run_returns() {
    answers_as_soon_as_run_returns(DEBIAN_TRIXIE, "26.1");
}

#[test]
fn trixie_docker_26_runs_a_nested_container() {
    nested_container_runs(DEBIAN_TRIXIE, &[]);
}

#[test]
fn trixie_docker_26_is_restarted_after_kill_9() {
    killed_dockerd_is_restarted(DEBIAN_TRIXIE, &[]);
}

#[test]
fn trixie_docker_26_stops_cleanly() {
    kill_stops_dockerd_cleanly(DEBIAN_TRIXIE, &[]);
}

#[test]
fn trixie_docker_26_in_a_networked_pod_pulls_builds_fetches_and_serves() {
    beta9_e2e::net::docker_in_a_networked_pod(DEBIAN_TRIXIE, &["DOCKER_BUILDKIT=1 docker build", "docker buildx build --load"]);
}

#[test]
fn sid_runc_1_3_fails_start_naming_the_procfs_check_and_the_way_out() {
    let c = Container::new("dockersid");
    let mut cmd = ctr();
    cmd.args(["run", "-d", "--runtime", RUNTIME, "--annotation", DOCKER, DEBIAN_SID, &c.id]);
    let r = run_cmd(&mut cmd, None);
    r.assert_refused(&["/usr/sbin/runc is runc 1.3.6", "refuses gVisor's /proc", "older than 1.2", "default-runtime is crun"]);
    assert!(c.sandbox_cmdline().is_none(), "the sandbox should be torn down");
}

#[test]
fn sid_docker_28_with_crun_runs_nested_containers_on_the_host_network() {
    // The way out the refusal names: crun, without cgroups, as dockerd's default runtime.
    let (dir, tar) = busybox_tar();
    let config = dir.join("daemon.json");
    let json = r#"{"runtimes": {"crun": {"path": "/usr/bin/crun", "runtimeArgs": ["--cgroup-manager=disabled"]}}, "default-runtime": "crun"}"#;
    std::fs::write(&config, json).unwrap();
    let mounts = [
        format!("type=bind,src={},dst=/etc/docker/daemon.json,options=rbind:ro", config.display()),
        format!("type=bind,src={},dst=/images/busybox.tar,options=rbind:ro", tar.display()),
    ];
    let c = docker_sandbox_of(DEBIAN_SID, "dockercrun", &["--mount", &mounts[0], "--mount", &mounts[1]]);
    let i = c.exec("import", &["docker", "import", "/images/busybox.tar", "nested-busybox"], None);
    assert_eq!(i.code, 0, "{}{}", i.stdout, i.stderr);
    let r = c.exec("run", &["docker", "run", "--rm", "--network", "host", "nested-busybox", "/bin/busybox", "echo", "hello"], None);
    assert_eq!((r.code, r.stdout.trim()), (0, "hello"), "{}", r.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

/// sid's dockerd 28 with trixie's runc 1.1.15 mounted over its own.
fn older_runc() -> String {
    let runc = docker_rootfs("trixie").join("usr/sbin/runc");
    assert!(runc.is_file(), "{} is missing: hack/build-images.sh debian-trixie makes it", runc.display());
    format!("type=bind,src={},dst=/usr/sbin/runc,options=rbind:ro", runc.display())
}

#[test]
fn sid_docker_28_with_an_older_runc_runs_nested_containers_off_the_bridge_and_says_why() {
    let (dir, tar) = busybox_tar();
    let image = format!("type=bind,src={},dst=/images/busybox.tar,options=rbind:ro", tar.display());
    let runc = older_runc();
    let c = docker_sandbox_of(DEBIAN_SID, "dockersid28", &["--mount", &runc, "--mount", &image]);
    let v = c.exec("version", &["docker", "version", "--format", "{{.Server.Version}}"], None);
    assert!(v.stdout.starts_with("28."), "{}{}", v.stdout, v.stderr);
    let status = agent_status(&c);
    assert!(status.contains("cannot attach containers to bridge networks") && status.contains("--network host or none"), "{status}");
    let i = c.exec("import", &["docker", "import", "/images/busybox.tar", "nested-busybox"], None);
    assert_eq!(i.code, 0, "{}{}", i.stdout, i.stderr);
    for network in ["none", "host"] {
        let r = c.exec(&unique_id("run"), &["docker", "run", "--rm", "--network", network, "nested-busybox", "/bin/busybox", "echo", "hello"], None);
        assert_eq!((r.code, r.stdout.trim()), (0, "hello"), "--network {network}: {}", r.stderr);
    }
    // On the default bridge it fails as the status said, in dockerd's own words.
    let r = c.exec("bridge", &["docker", "run", "--rm", "nested-busybox", "/bin/busybox", "true"], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("failed to subscribe to link updates"), "{}", r.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sid_docker_28_with_an_older_runc_restarts_and_stops_cleanly() {
    let mount = older_runc();
    killed_dockerd_is_restarted(DEBIAN_SID, &["--mount", &mount]);
    kill_stops_dockerd_cleanly(DEBIAN_SID, &["--mount", &mount]);
}

#[test]
fn dockerd_that_cannot_start_fails_run_with_its_own_words() {
    let c = Container::new("dockerbadarg");
    let mut cmd = ctr();
    cmd.args(["run", "-d", "--runtime", RUNTIME, "--annotation", DOCKER])
        .args(["--annotation", "io.beta9.sandbox.docker.args=--no-such-flag", DEBIAN, &c.id]);
    let r = run_cmd(&mut cmd, None);
    assert_ne!(r.code, 0, "ctr run -d should fail: {}", r.stdout);
    assert!(r.stderr.contains("no-such-flag"), "dockerd's words reach the client: {}", r.stderr);
    assert!(r.stderr.contains("before it was ready"), "{}", r.stderr);
    // The sandbox is already gone, before any delete.
    assert!(c.sandbox_cmdline().is_none(), "the sandbox should be torn down");
    assert_eq!(c.status().as_deref(), Some("STOPPED"));
}

#[test]
fn image_without_dockerd_is_refused() {
    let c = Container::new("dockernone");
    let mut cmd = ctr();
    cmd.args(["run", "-d", "--runtime", RUNTIME, "--annotation", DOCKER, BUSYBOX, &c.id]);
    let r = run_cmd(&mut cmd, None);
    r.assert_refused(&["dockerd was not found in the image"]);
}

#[test]
fn the_workload_runs_once_docker_answers() {
    // keepalive=false: the command is the sandbox's life; it starts only when dockerd is ready.
    let c = Container::new("dockerworkload");
    let r = c.run(
        DEBIAN,
        &["--annotation", DOCKER, "--annotation", "io.beta9.sandbox.keepalive=false"],
        &["docker", "version", "--format", "server {{.Server.Version}}"],
        None,
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("server "), "{}", r.stdout);
}

#[test]
fn wait_limit_passing_fails_run_with_dockerds_last_lines() {
    // A dockerd told to use a containerd that does not exist keeps dialing it, and says so.
    let c = Container::new("dockertimeout");
    let mut cmd = ctr();
    cmd.args(["run", "-d", "--runtime", RUNTIME, "--annotation", DOCKER])
        .args(["--annotation", "io.beta9.sandbox.docker.wait=2s"])
        .args(["--annotation", "io.beta9.sandbox.docker.args=--containerd=/run/nothing.sock", DEBIAN, &c.id]);
    let r = run_cmd(&mut cmd, None);
    assert_ne!(r.code, 0, "ctr run -d should fail: {}", r.stdout);
    assert!(r.stderr.contains("did not answer /_ping within 2s"), "{}", r.stderr);
    assert!(r.stderr.contains("dockerd's last log lines: ") && r.stderr.contains("nothing.sock"), "{}", r.stderr);
    assert!(c.sandbox_cmdline().is_none(), "the sandbox should be torn down");
}

#[test]
fn zero_wait_returns_at_once_and_the_daemon_comes_up_anyway() {
    let c = docker_sandbox("dockernowait", &["--annotation", "io.beta9.sandbox.docker.wait=0s"]);
    let s = c.exec("wait", &["/.beta9/agent", "status", "--wait", "60"], None);
    assert_eq!(s.code, 0, "{}{}", s.stdout, s.stderr);
    assert!(s.stdout.starts_with("dockerd: ready\n"), "{}", s.stdout);
}

#[test]
fn trixie_compose_services_reach_each_other_by_name_and_down_leaves_nothing() {
    let project = compose::Project::new();
    let mounts = [project.ctr_mount(), busybox_mount()];
    let c = docker_sandbox_of(DEBIAN_TRIXIE, "dockercompose", &["--mount", &mounts[0], "--mount", &mounts[1]]);
    let run = |script: &str| sh(&c, script);
    // No network: the published port is fetched from inside the sandbox (bash's /dev/tcp).
    let port = compose::PUBLISHED;
    let published = || {
        sh(&c, &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /f HTTP/1.0\\r\\n\\r\\n' >&3 && sed '1,/^\\r$/d' <&3"))
    };
    compose::up_and_down(&run, &published);
}

/// A Dockerfile FROM the imported busybox, with a RUN and a COPY step, built by each command
/// (which must be BuildKit's: its plain progress names its steps `[internal] load build
/// definition`), then run.
fn builds_with_buildkit(image: &str, commands: &[&str]) {
    let mount = busybox_mount();
    let c = docker_sandbox_of(image, "dockerbuild", &["--mount", &mount]);
    sh(&c, "docker import /images/busybox.tar nested-busybox >/dev/null");
    sh(&c, "mkdir -p /b && echo copied > /b/msg && printf 'FROM nested-busybox\\nCOPY msg /msg\\nRUN echo \"built, $(cat /msg)\" > /out\\nCMD [\"cat\", \"/out\"]\\n' > /b/Dockerfile");
    for (i, command) in commands.iter().enumerate() {
        let out = sh(&c, &format!("{command} --progress=plain -t built{i} /b 2>&1"));
        assert!(out.contains("[internal] load build definition"), "{command} should build with BuildKit: {out}");
        assert_eq!(sh(&c, &format!("docker run --rm built{i}")).trim(), "built, copied", "{command}");
    }
}

#[test]
fn buildkit_builds_from_a_local_image() {
    builds_with_buildkit(DEBIAN, &["DOCKER_BUILDKIT=1 docker build"]);
}

#[test]
fn trixie_docker_26_builds_with_buildkit_and_buildx_load() {
    builds_with_buildkit(DEBIAN_TRIXIE, &["DOCKER_BUILDKIT=1 docker build", "docker buildx build --load"]);
}

const MIB: u64 = 1 << 20;

/// The size of the sandbox's /var/lib/docker, in MiB, as df says it.
fn store_mib(c: &Container) -> u64 {
    let df = sh(c, "df -m --output=size /var/lib/docker | tail -n 1");
    df.trim().parse().unwrap_or_else(|_| panic!("df: {df}"))
}

#[test]
fn the_store_is_half_the_memory_limit_and_a_full_store_is_enospc_not_an_oom_kill() {
    let mount = busybox_mount();
    let limit = (512 * MIB).to_string();
    let c = docker_sandbox_of(DEBIAN, "dockerstore", &["--memory-limit", &limit, "--mount", &mount]);
    assert_eq!(store_mib(&c), 256, "half of the 512 MiB limit");
    assert!(agent_status(&c).contains("storage: /var/lib/docker: tmpfs of 256 MiB"), "{}", agent_status(&c));
    // A nested container writing past the store: its writes land in the store (overlay2's upper
    // layer), which is full before the sandbox's memory is.
    sh(&c, "docker import /images/busybox.tar nested-busybox >/dev/null");
    let r = c.exec("fill", &["docker", "run", "--rm", "nested-busybox", "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=400"], None);
    assert_ne!(r.code, 0, "400 MB into a 256 MiB store: {}{}", r.stdout, r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("No space left on device"), "{}{}", r.stdout, r.stderr);
    assert_eq!(c.status().as_deref(), Some("RUNNING"), "the sandbox lives on");
    assert!(agent_status(&c).starts_with("dockerd: ready\n"));
    let r = c.exec("after", &["docker", "run", "--rm", "nested-busybox", "echo", "still here"], None);
    assert_eq!((r.code, r.stdout.trim()), (0, "still here"), "{}", r.stderr);
}

#[test]
fn the_store_size_follows_the_annotation_then_the_config() {
    // A share of the limit, by annotation.
    let limit = (512 * MIB).to_string();
    let c = docker_sandbox_of(DEBIAN, "dockerstore25", &["--memory-limit", &limit, "--annotation", "io.beta9.sandbox.docker.tmpfs-size=25%"]);
    assert_eq!(store_mib(&c), 128);
    drop(c);
    // A size in the config; the annotation still wins over it.
    let config = ConfigFile::new("[docker]\ntmpfs_size = \"96m\"\n");
    let flag = config.flag();
    let c = docker_sandbox_of(DEBIAN, "dockerstorecfg", &[&flag[0], &flag[1], "--memory-limit", &limit]);
    assert_eq!(store_mib(&c), 96);
    drop(c);
    let c = docker_sandbox_of(DEBIAN, "dockerstoreann", &[&flag[0], &flag[1], "--annotation", "io.beta9.sandbox.docker.tmpfs-size=64m"]);
    assert_eq!(store_mib(&c), 64);
    drop(c);
    // A bad size is refused naming the annotation.
    let bad = Container::new("dockerstorebad");
    let mut cmd = ctr();
    cmd.args(["run", "-d", "--runtime", RUNTIME, "--annotation", DOCKER, "--annotation", "io.beta9.sandbox.docker.tmpfs-size=lots", DEBIAN, &bad.id]);
    run_cmd(&mut cmd, None).assert_refused(&["io.beta9.sandbox.docker.tmpfs-size", "25%"]);
}
