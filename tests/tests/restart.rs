//! containerd restarted under running sandboxes. Its own test binary: cargo runs test binaries
//! one after another, so no other test sees containerd go away.

use beta9_e2e::*;

#[test]
fn sandboxes_survive_a_containerd_restart() {
    let c = Container::new("restart");
    c.start(BUSYBOX, &["--annotation", "io.beta9.sandbox.keepalive=true"], &["true"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/containerd.sh");
    let r = run_cmd(std::process::Command::new(&script).arg("restart"), None);
    assert_eq!(r.code, 0, "containerd.sh restart: {}{}", r.stdout, r.stderr);

    assert_eq!(c.status().as_deref(), Some("RUNNING"));
    let e = c.exec("after", &["sh", "-c", "echo still here; exit 3"], None);
    assert_eq!((e.code, e.stdout.as_str()), (3, "still here\n"), "{}", e.stderr);
    // The shim's events reach the new containerd too: kill ends the task as usual.
    let k = c.task(&["kill", &c.id]);
    assert_eq!(k.code, 0, "{}", k.stderr);
    assert_eq!(c.wait_exit(), 0);
}
