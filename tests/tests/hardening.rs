//! What a hostile workload, image or local user could do to the node, tried for real (issue 23):
//! each test is one finding of the security review, and fails without its fix.

use std::time::Duration;

use beta9_e2e::*;

/// The private containerd's own host pid: the pid a made-up row would point at.
fn containerd_pid() -> u32 {
    let dev = std::env::var("BETA9_DEV").unwrap_or_else(|_| "/run/beta9-dev".into());
    std::fs::read_to_string(format!("{dev}/containerd.pid")).expect("hack/containerd.sh's pid file").trim().parse().unwrap()
}

#[test]
fn a_process_name_with_a_newline_cannot_add_a_host_pid_to_the_task_list() {
    let containerd = containerd_pid();
    let c = Container::new("psspoof");
    // A script named "\n0 <containerd's pid> 0": runsc's ps table shows it as a row of its own.
    let script = format!(
        "f=\"/tmp/$(printf '\\n0 {containerd} 0')\"; printf '#!/bin/sh\\nwhile :; do sleep 1; done\\n' > \"$f\"; chmod +x \"$f\"; exec \"$f\""
    );
    c.start(BUSYBOX, &[], &["sh", "-c", &script]);
    assert!(eventually(Duration::from_secs(10), || c.exec(&unique_id("ps"), &["ps"], None).stdout.contains("sleep")));
    let ps = c.task(&["ps", &c.id]);
    assert_eq!(ps.code, 0, "{}", ps.stderr);
    let pids: Vec<u32> = ps.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    assert!(pids.len() >= 3, "the agent, the script and its sleep: {}", ps.stdout);
    assert!(!pids.contains(&containerd), "containerd's pid {containerd} is listed as the container's: {}", ps.stdout);
}
