//! The agent inside real sandboxes: keepalive, exec, reaping, stop, annotations.

use std::time::Duration;

use beta9_e2e::*;

const KEEPALIVE: &str = "io.beta9.sandbox.keepalive=true";

#[test]
fn the_agent_is_pid_1_and_the_workload_its_child() {
    let c = Container::new("agentpid");
    let r = c.run(BUSYBOX, &[], &["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut lines = r.stdout.lines();
    assert_ne!(lines.next(), Some("1"), "the workload is not PID 1");
    assert!(lines.next().unwrap_or_default().starts_with("/.beta9/agent -- sh -c"), "{}", r.stdout);
}

#[test]
fn keepalive_sandbox_stays_running_for_execs_and_stops_on_sigterm() {
    let c = Container::new("keepalive");
    c.start(BUSYBOX, &["--annotation", KEEPALIVE, "--log-uri", &c.log_uri()], &["echo", "printed and exited"]);
    assert!(c.log_contains("printed and exited"));
    let ps = c.exec("ps", &["ps", "-o", "pid,args"], None);
    let others: Vec<&str> = ps.stdout.lines().skip(1).filter(|l| l.split_whitespace().next() != Some("1")).collect();
    assert!(!others.iter().any(|l| l.contains("echo")), "the command has exited: {}", ps.stdout);
    assert_eq!(c.status().as_deref(), Some("RUNNING"));

    let r = c.exec("code", &["sh", "-c", "echo from-exec; exit 6"], None);
    assert_eq!((r.code, r.stdout.as_str()), (6, "from-exec\n"), "{}", r.stderr);

    // 20 double-forked orphans land on the agent, which reaps them all.
    let r = c.exec("orphans", &["sh", "-c", "for i in $(seq 20); do (sleep 0.05 &); done"], None);
    assert_eq!(r.code, 0);
    let settled = eventually(Duration::from_secs(10), || {
        let ps = c.exec(&unique_id("ps"), &["ps", "-o", "stat,args"], None).stdout;
        !ps.contains("sleep")
    });
    assert!(settled, "the orphans should have exited");
    let ps = c.exec("stat", &["ps", "-o", "stat,pid,args"], None).stdout;
    assert!(!ps.lines().skip(1).any(|l| l.trim_start().starts_with('Z')), "zombies left:\n{ps}");

    // SIGTERM: the agent stops what is left and exits 0.
    c.exec("bg", &["sh", "-c", "sleep 300 >/dev/null 2>&1 &"], None);
    assert_eq!(c.task(&["kill", &c.id]).code, 0);
    assert!(eventually(Duration::from_secs(5), || c.status().as_deref() == Some("STOPPED")), "stopped promptly");
    assert_eq!(c.wait_exit(), 0);
}

#[test]
fn keepalive_without_a_command() {
    let c = Container::new("idle");
    // An empty command is not expressible with ctr; `true` ends at once, leaving an idle sandbox.
    c.start(BUSYBOX, &["--annotation", KEEPALIVE], &["true"]);
    assert_eq!(c.exec("x", &["true"], None).code, 0);
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
}

#[test]
fn signals_reach_the_workload_through_the_agent() {
    let c = Container::new("forward");
    c.start(BUSYBOX, &[], &["sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.05; done"]);
    // The trap is set before the loop; wait for the loop to be running.
    assert!(eventually(Duration::from_secs(10), || c.exec(&unique_id("ps"), &["ps"], None).stdout.contains("sleep")));
    assert_eq!(c.task(&["kill", "-s", "SIGUSR1", &c.id]).code, 0);
    assert_eq!(c.wait_exit(), 42);
}

#[test]
fn injection_can_be_turned_off() {
    let c = Container::new("noagent");
    let r = c.run(BUSYBOX, &["--annotation", "io.beta9.sandbox.agent=false"], &["sh", "-c", "echo $$"], None);
    assert_eq!((r.code, r.stdout.as_str()), (0, "1\n"), "{}", r.stderr);
}

#[test]
fn bad_annotations_are_refused_at_create_naming_the_key() {
    let c = Container::new("badvalue");
    let r = c.run(BUSYBOX, &["--annotation", "io.beta9.sandbox.keepalive=yes"], &["true"], None);
    r.assert_refused(&["io.beta9.sandbox.keepalive", "true, false"]);
    c.remove();
    c.assert_no_leftovers();

    let c = Container::new("badkey");
    let r = c.run(BUSYBOX, &["--annotation", "io.beta9.sandbox.keeplive=true"], &["true"], None);
    r.assert_refused(&["unknown annotation io.beta9.sandbox.keeplive"]);
    assert!(r.stderr.contains("io.beta9.sandbox.agent"), "lists the known keys: {}", r.stderr);
}
