//! The rest of the Task API through ctr: pause/resume and metrics of a real runsc sandbox (from
//! its cgroup; limits.rs has the cgroup-specific checks).

use std::time::Duration;

use beta9_e2e::*;

fn lines(c: &Container) -> usize {
    std::fs::read_to_string(std::env::temp_dir().join(&c.id).join("out.log")).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn pause_freezes_the_sandbox_and_resume_thaws_it() {
    let c = Container::new("pause");
    c.start(BUSYBOX, &["--log-uri", &c.log_uri()], &["sh", "-c", "while true; do echo tick; sleep 0.05; done"]);
    assert!(eventually(Duration::from_secs(10), || lines(&c) >= 3), "the sandbox should be ticking");

    let p = c.task(&["pause", &c.id]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert_eq!(c.status().as_deref(), Some("PAUSED"));
    let e = c.exec("frozen", &["true"], None);
    assert_ne!(e.code, 0, "exec into a paused sandbox is refused");
    assert!(e.stderr.contains("paused"), "{}", e.stderr);
    // Frozen: the count stays where it was (ticks run every 50 ms when thawed).
    let frozen = lines(&c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&c), frozen, "a paused sandbox printed");

    let r = c.task(&["resume", &c.id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
    assert!(eventually(Duration::from_secs(10), || lines(&c) > frozen + 2), "resumed sandbox should tick again");

    // A paused task can still be killed, as with runc's shim (runsc itself refuses to signal it).
    assert_eq!(c.task(&["pause", &c.id]).code, 0);
    let k = c.task(&["kill", "-s", "SIGKILL", &c.id]);
    assert_eq!(k.code, 0, "kill of a paused task: {}", k.stderr);
    assert_eq!(c.wait_exit(), 137);
}

#[test]
fn metrics_are_the_sandboxs_real_numbers() {
    let c = Container::new("metrics");
    c.start(BUSYBOX, &[], &["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 60"]);
    // Start returns once the agent runs; the workload it spawns shows up a moment later.
    let metrics = || c.task(&["metrics", &c.id]);
    let pids = |out: &str| out.lines().find_map(|l| l.strip_prefix("pids.current")?.trim().parse::<u64>().ok());
    assert!(eventually(Duration::from_secs(10), || pids(&metrics().stdout).unwrap_or(0) >= 2), "the agent and the workload: {}", metrics().stdout);
    let m = metrics();
    assert_eq!(m.code, 0, "{}", m.stderr);
    let value = |name: &str| -> u64 {
        m.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", m.stdout))
    };
    assert!(value("memory.usage_in_bytes") > 0, "{}", m.stdout);
    assert!(value("cpuacct.usage ") > 0, "{}", m.stdout);
    assert!(value("pids.current") >= 2, "{}", m.stdout);
}
