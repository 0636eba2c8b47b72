//! Docker Engine as a containerd client (`docker run --runtime io.beta9.sandbox`): trixie's
//! dockerd 26 on the host, pointed at the private containerd (tests/src/engine.rs), runs this
//! shim by its runtime name, and passes `--annotation` through to it.

use beta9_e2e::{engine::Engine, *};

const BB: &str = "docker.io/beta9/busybox:latest";

#[test]
fn docker_run_rm_runs_in_gvisor_and_returns_exit_codes() {
    let e = Engine::start();
    e.import("beta9/busybox");
    let r = e.docker(&["run", "--rm", "--runtime", RUNTIME, BB, "sh", "-c", "echo hello from $(uname -s) $(uname -r)"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // gVisor reports its own kernel version, 4.4.0, whatever the host runs.
    assert_eq!(r.stdout.trim(), "hello from Linux 4.4.0", "{}", r.stderr);
    let r = e.docker(&["run", "--rm", "--runtime", RUNTIME, BB, "sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let r = e.docker(&["run", "--rm", "--runtime", RUNTIME, BB, "sh", "-c", "kill -9 $$"]);
    assert_eq!(r.code, 137, "{}", r.stderr);
}

#[test]
fn docker_run_d_stops_and_is_removed() {
    let e = Engine::start();
    e.import("beta9/busybox");
    let r = e.docker(&["run", "-d", "--runtime", RUNTIME, BB, "sleep", "600"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.stdout.trim().to_string();
    let x = e.docker(&["exec", &id, "sh", "-c", "echo exec $(uname -r)"]);
    assert_eq!((x.code, x.stdout.trim()), (0, "exec 4.4.0"), "{}", x.stderr);
    let s = e.docker(&["stop", "-t", "10", &id]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    let state = e.docker(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &id]);
    // The agent forwards SIGTERM to sleep, which dies of it: 128 + 15.
    assert_eq!(state.stdout.trim(), "exited 143", "{}", state.stderr);
    let rm = e.docker(&["rm", &id]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert_no_leftovers(&[&id]);
}

#[test]
fn a_bad_annotation_is_refused_with_the_shims_words() {
    let e = Engine::start();
    e.import("beta9/busybox");
    let r = e.docker(&["run", "--rm", "--runtime", RUNTIME, "--annotation", "io.beta9.sandbox.bogus=1", BB, "true"]);
    r.assert_refused(&["io.beta9.sandbox.bogus"]);
}

#[test]
fn docker_annotation_gives_a_sandbox_whose_docker_answers_at_once() {
    let e = Engine::start();
    e.import("beta9/debian");
    let r = e.docker(&["run", "-d", "--runtime", RUNTIME, "--annotation", "io.beta9.sandbox.docker=true", DEBIAN]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let id = r.stdout.trim().to_string();
    // No retry: `docker run -d` returned once the inner dockerd answered.
    let v = e.docker(&["exec", &id, "docker", "version", "--format", "{{.Server.Version}}"]);
    assert_eq!(v.code, 0, "inner docker version right after docker run -d: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.trim().starts_with("20.10"), "bookworm's dockerd inside: {}", v.stdout);
    let s = e.docker(&["exec", &id, "/.beta9/agent", "status"]);
    assert!(s.stdout.starts_with("dockerd: ready\n"), "{}", s.stdout);
}
