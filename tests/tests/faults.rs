//! Faults the shim must survive, against the real containerd and runsc: killed sandboxes,
//! killed shims, and load.

use std::time::{Duration, Instant};

use beta9_e2e::*;

#[test]
fn killed_sandbox_process_ends_the_task_at_once() {
    let c = Container::new("faultsandbox");
    c.start(BUSYBOX, &[], &["sleep", "600"]);
    let pid = c.sandbox_pid().expect("a running sandbox");
    let t = Instant::now();
    nix_kill(pid, 9);
    assert!(
        eventually(Duration::from_secs(10), || c.status().as_deref() == Some("STOPPED")),
        "the task should stop once its sandbox died: {:?}",
        c.status()
    );
    // The exit comes from the reaper, not from a timeout: well under the 1 s asked for.
    eprintln!("STOPPED {:?} after kill -9 of the sandbox", t.elapsed());
    assert_eq!(c.wait_exit(), 137);
}

#[test]
fn killed_shim_is_cleaned_up_by_containerd() {
    let c = Container::new("faultshim");
    c.start(BUSYBOX, &[], &["sleep", "600"]);
    let shim = c.shim_pid().expect("a shim for the container");
    nix_kill(shim, 9);
    // containerd sees the shim go and runs its `delete` action, which removes the sandbox.
    assert!(
        eventually(Duration::from_secs(20), || c.sandbox_pid().is_none()),
        "the sandbox should be removed after its shim died"
    );
    // Drop removes the container and checks that no process, mount or runsc state remains.
}

#[test]
fn sixty_sequential_runs() {
    for i in 0..60 {
        let c = Container::new("faultseq");
        let r = c.run(BUSYBOX, &[], &["echo", &i.to_string()], None);
        assert_eq!((r.code, r.stdout.trim()), (0, i.to_string().as_str()), "run {i}: {}", r.stderr);
    }
}

#[test]
fn twenty_concurrent_sandboxes() {
    let all: Vec<Container> = (0..20).map(|_| Container::new("faultconc")).collect();
    std::thread::scope(|s| {
        for c in &all {
            s.spawn(move || c.start(BUSYBOX, &[], &["sleep", "600"]));
        }
    });
    for c in &all {
        assert_eq!(c.status().as_deref(), Some("RUNNING"), "{}", c.id);
        let r = c.exec("e", &["echo", "alive"], None);
        assert_eq!((r.code, r.stdout.as_str()), (0, "alive\n"), "{}: {}", c.id, r.stderr);
    }
    std::thread::scope(|s| {
        for c in &all {
            s.spawn(move || c.remove());
        }
    });
}

fn nix_kill(pid: u32, sig: i32) {
    let r = run_cmd(std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()), None);
    assert_eq!(r.code, 0, "kill -{sig} {pid}: {}", r.stderr);
}

#[test]
fn force_delete_right_after_a_kill_succeeds() {
    // The second kill (rm -f kills again) can reach a sandbox whose control server is already
    // gone while its exit is still on the way: that is "already exiting", not a failure.
    for _ in 0..5 {
        let c = Container::new("faultkillrm");
        c.start(BUSYBOX, &["--annotation", "io.beta9.sandbox.keepalive=true"], &["true"]);
        let k = c.task(&["kill", "-s", "SIGKILL", &c.id]);
        assert_eq!(k.code, 0, "{}", k.stderr);
        let rm = c.task(&["rm", "-f", &c.id]);
        assert_eq!(rm.code, 0, "task rm -f right after kill: {}", rm.stderr);
    }
}
