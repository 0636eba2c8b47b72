//! Pods through containerd's CRI API, as the kubelet drives them with a RuntimeClass whose
//! handler is `beta9`: one shim and one runsc sandbox per pod.

use beta9_e2e::{
    cri::{Cri, Spec},
    *,
};
use k8s_cri::v1::ContainerState;

const SLEEPER: &[&str] = &["sh", "-c", "echo hello from $HOSTNAME-app; exec sleep 600"];

#[test]
fn two_containers_share_one_sandbox_and_one_shim() {
    let cri = Cri::connect();
    let mut pod = cri.run_pod("pod", &[], true).expect("RunPodSandbox of a host-network pod");
    let a = pod.run(&Spec { name: "a", image: BUSYBOX, command: SLEEPER, ..Default::default() });
    let b = pod.run(&Spec { name: "b", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    assert_eq!(pod.state(&a), ContainerState::ContainerRunning);
    assert_eq!(pod.state(&b), ContainerState::ContainerRunning);
    assert_eq!(pod.shims().len(), 1, "one shim serves the whole pod");
    assert_eq!(pod.sandboxes().len(), 1, "one runsc sandbox runs the whole pod: {:?}", pod.sandboxes());

    // ExecSync: output, error output and the exit code, in the container asked for.
    let r = pod.exec_sync(&a, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10).expect("ExecSync");
    assert_eq!((r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()), (3, &b"out\n"[..], &b"err\n"[..]));
    // The containers share the sandbox's kernel but not their filesystems.
    pod.exec_sync(&a, &["touch", "/tmp/only-in-a"], 10).unwrap();
    assert_eq!(pod.exec_sync(&b, &["test", "-e", "/tmp/only-in-a"], 10).unwrap().exit_code, 1);

    assert!(eventually(std::time::Duration::from_secs(10), || pod.log("a").contains("hello from")), "CRI's log of a: {:?}", pod.log("a"));
    let stats = pod.stats(&a).expect("ContainerStats");
    let memory = stats.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0);
    assert!(memory > 0, "working set of a running container: {memory}");

    // One container exiting leaves the pod and the others running.
    let c = pod.run(&Spec { name: "c", image: BUSYBOX, command: &["sh", "-c", "exit 7"], ..Default::default() });
    assert!(pod.reaches(&c, ContainerState::ContainerExited));
    assert_eq!(pod.status(&c).exit_code, 7);
    assert_eq!(pod.state(&a), ContainerState::ContainerRunning);

    // Stop and Remove one container; the pod carries on.
    pod.stop(&b, 2).expect("StopContainer");
    assert_eq!(pod.state(&b), ContainerState::ContainerExited);
    pod.remove(&b).expect("RemoveContainer");
    assert_eq!(pod.exec_sync(&a, &["true"], 10).unwrap().exit_code, 0);
    assert_eq!(pod.shims().len(), 1);
    // Dropping the pod stops and removes it, then checks that nothing of it is left.
}

#[test]
fn a_dead_pod_sandbox_ends_its_containers() {
    let cri = Cri::connect();
    let mut pod = cri.run_pod("deadpod", &[], true).expect("RunPodSandbox");
    let a = pod.run(&Spec { name: "a", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    let b = pod.run(&Spec { name: "b", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    let sandbox = pod.sandbox_processes();
    assert_eq!(sandbox.len(), 1, "{sandbox:?}");
    let killed = run_cmd(std::process::Command::new("kill").args(["-9", &sandbox[0].0.to_string()]), None);
    assert_eq!(killed.code, 0, "{}", killed.stderr);
    // runsc wait of each app container fails with its sandbox: they are reported killed.
    for id in [&a, &b] {
        assert!(pod.reaches(id, ContainerState::ContainerExited), "{id} should have exited with its sandbox");
        assert_eq!(pod.status(id).exit_code, 137);
    }
    // CRI deletes the tasks of exited containers, and the shim goes with the last one. Dropping
    // the pod removes it; nothing of it may be left.
}

#[test]
fn docker_in_a_pod_runs_a_nested_container() {
    let (dir, tar) = busybox_tar();
    let cri = Cri::connect();
    let mut pod = cri.run_pod("dockerpod", &[("io.beta9.sandbox.docker", "true")], true).expect("RunPodSandbox");
    let tar = tar.to_string_lossy().into_owned();
    let d = pod.run(&Spec {
        name: "docker",
        image: DEBIAN,
        command: &["sleep", "600"],
        mounts: &[(&tar, "/images/busybox.tar")],
        ..Default::default()
    });
    // StartContainer returned once dockerd answered.
    let v = pod.exec_sync(&d, &["docker", "version", "--format", "{{.Server.Version}}"], 30).unwrap();
    assert_eq!(v.exit_code, 0, "{}", String::from_utf8_lossy(&v.stderr));
    let i = pod.exec_sync(&d, &["docker", "import", "/images/busybox.tar", "nested-busybox"], 60).unwrap();
    assert_eq!(i.exit_code, 0, "{}", String::from_utf8_lossy(&i.stderr));
    // Under the host's network dockerd has no bridge: nested containers share the pod's network.
    let cmd = ["docker", "run", "--rm", "--network", "host", "nested-busybox", "/bin/busybox", "echo", "nested in a pod"];
    let r = pod.exec_sync(&d, &cmd, 60).unwrap();
    assert_eq!((r.exit_code, String::from_utf8_lossy(&r.stdout).trim()), (0, "nested in a pod"), "{}", String::from_utf8_lossy(&r.stderr));
    // The pause only carries the sandbox-level part (--net-raw): no dockerd runs in it.
    assert!(pod.sandboxes().iter().all(|c| c.contains("--net-raw")), "{:?}", pod.sandboxes());
    drop(pod);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_docker_container_needs_docker_on_the_pod() {
    let cri = Cri::connect();
    let mut pod = cri.run_pod("nodocker", &[], true).expect("RunPodSandbox");
    let spec = Spec {
        name: "docker",
        image: DEBIAN,
        command: &["sleep", "600"],
        annotations: &[("io.beta9.sandbox.docker", "true")],
        ..Default::default()
    };
    // CRI makes the task, and so calls the shim, at StartContainer.
    let id = pod.create(&spec).expect("CreateContainer");
    let e = pod.start(&id).err().expect("dockerd needs --net-raw on the pod's sandbox");
    assert!(e.message().contains("pod_annotations"), "{}", e.message());
}

#[test]
fn bad_pod_annotation_fails_run_pod_sandbox_naming_it() {
    let cri = Cri::connect();
    let err = cri.run_pod("badanno", &[("io.beta9.sandbox.dockr", "true")], true).err().expect("an unknown key is refused");
    assert!(err.message().contains("io.beta9.sandbox.dockr"), "{}", err.message());
}

#[test]
fn a_paused_pod_shows_its_containers_paused_and_refuses_exec_until_resumed() {
    let cri = Cri::connect();
    let mut pod = cri.run_pod("pausedpod", &[], true).expect("RunPodSandbox");
    let a = pod.run(&Spec { name: "a", image: BUSYBOX, command: &["sleep", "600"], ..Default::default() });
    let k8s = |args: &[&str]| {
        let mut c = ctr();
        c.args(["-n", "k8s.io"]).args(args);
        run_cmd(&mut c, None)
    };
    let status_of = |id: &str| {
        let ls = k8s(&["task", "ls"]).stdout;
        ls.lines().find(|l| l.starts_with(id)).and_then(|l| l.split_whitespace().nth(2)).map(str::to_string)
    };
    // runsc pauses the whole sandbox, so pausing the pod's sandbox task pauses every container.
    let p = k8s(&["task", "pause", &pod.id]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert_eq!(status_of(&pod.id).as_deref(), Some("PAUSED"));
    assert_eq!(status_of(&a).as_deref(), Some("PAUSED"), "the app container of a paused pod");
    let e = pod.exec_sync(&a, &["true"], 10).expect_err("exec into a paused pod is refused, never hangs");
    assert!(e.message().contains("paused"), "{}", e.message());
    let r = k8s(&["task", "resume", &pod.id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(status_of(&a).as_deref(), Some("RUNNING"));
    assert_eq!(pod.exec_sync(&a, &["true"], 10).unwrap().exit_code, 0);
}
