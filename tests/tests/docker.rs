//! Docker inside gVisor by annotation: a real dockerd in a real runsc sandbox.

use std::time::Duration;

use beta9_e2e::*;

const DOCKER: &str = "io.beta9.sandbox.docker=true";

fn docker_sandbox(prefix: &str, extra: &[&str]) -> Container {
    let c = Container::new(prefix);
    let mut args = vec!["--annotation", DOCKER];
    args.extend_from_slice(extra);
    c.start(DEBIAN, &args, &[]);
    c
}

fn agent_status(c: &Container) -> String {
    c.exec(&unique_id("status"), &["/.beta9/agent", "status"], None).stdout
}

#[test]
fn docker_answers_as_soon_as_run_returns() {
    let c = docker_sandbox("dockerready", &[]);
    // No retry, no wait: Start returned only once dockerd answered /_ping.
    let v = c.exec("version", &["docker", "version", "--format", "{{.Server.Version}}"], None);
    assert_eq!(v.code, 0, "docker version right after ctr run -d: {}{}", v.stdout, v.stderr);
    assert!(!v.stdout.trim().is_empty());
    let status = agent_status(&c);
    assert!(status.starts_with("dockerd: ready\n"), "{status}");
    assert!(status.contains("restarts: 0\n"), "{status}");
    // This netstack has no NAT MASQUERADE: the probe turns dockerd's iptables off and says why.
    assert!(status.contains("iptables: off, --iptables=false ("), "{status}");
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
}

#[test]
fn nested_container_runs_from_an_imported_rootfs() {
    let (dir, tar) = busybox_tar();
    let mount = format!("type=bind,src={},dst=/images/busybox.tar,options=rbind:ro", tar.display());
    let c = docker_sandbox("dockernested", &["--mount", &mount]);
    let i = c.exec("import", &["docker", "import", "/images/busybox.tar", "nested-busybox"], None);
    assert_eq!(i.code, 0, "{}{}", i.stdout, i.stderr);
    let r = c.exec("run", &["docker", "run", "--rm", "nested-busybox", "/bin/busybox", "echo", "hello from nested"], None);
    assert_eq!((r.code, r.stdout.trim()), (0, "hello from nested"), "{}", r.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn killed_dockerd_is_restarted_and_the_sandbox_lives_on() {
    let c = docker_sandbox("dockerrestart", &[]);
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
fn kill_stops_dockerd_cleanly_and_ends_the_sandbox() {
    let c = Container::new("dockerstop");
    c.start(DEBIAN, &["--annotation", DOCKER, "--log-uri", &c.log_uri()], &[]);
    assert!(c.log_contains("is ready after"));
    let k = c.task(&["kill", &c.id]);
    assert_eq!(k.code, 0, "{}", k.stderr);
    // dockerd got SIGTERM and exited by itself, then the keepalive agent ended the sandbox with 0.
    assert_eq!(c.wait_exit(), 0);
    assert!(c.log_contains("stopped with status 0"), "dockerd should stop cleanly");
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
