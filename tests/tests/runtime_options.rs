//! runc's runtime options, as containerd's clients send them to a runtime not named
//! `io.containerd.runc*`: containerd 1.6's client `containerd.linux.runc.CreateOptions`, newer ones
//! `containerd.runc.v1.Options`, and the container's runtime options on the shim's stdin at
//! `start`. What applies to runsc is honoured, what cannot is refused by name (issue 23).

use beta9_e2e::{
    cgroups,
    client::{runc_options, Client, OptionField::*, Output, Reader, Stdio, Task},
    *,
};
use tonic::Code;

const RUNC_V1: &str = "containerd.runc.v1.Options";
const LINUX_RUNC: &str = "containerd.linux.runc.CreateOptions";

/// Create options as this containerd's Go client sends them: 1.x the linux.runc type (whose
/// field is `linux`), 2.x runc.v1 (field `v1`), the only type its daemon passes on.
fn create_options<'a>(linux: u32, v1: u32, value: beta9_e2e::client::OptionField<'a>) -> prost_types::Any {
    use beta9_e2e::client::OptionField;
    let (type_name, field) = if containerd_1x() { (LINUX_RUNC, linux) } else { (RUNC_V1, v1) };
    let value = match value {
        OptionField::Text(_, s) => OptionField::Text(field, s),
        OptionField::Number(_, n) => OptionField::Number(field, n),
    };
    runc_options(type_name, &[value])
}

/// The host pid of the shim serving `id`.
fn shim_of(id: &str) -> u32 {
    let pattern = format!(" -id {id} ");
    processes_with_pids()
        .into_iter()
        .find(|(_, c)| c.contains("containerd-shim-beta9-sandbox") && c.contains(&pattern))
        .map(|(p, _)| p)
        .unwrap_or_else(|| panic!("no shim serves {id}"))
}

#[test]
fn the_shim_is_born_in_the_shim_cgroup_of_either_option_type() {
    let client = Client::connect();
    // runc.v1 names ShimCgroup field 3, linux.runc field 9.
    for (type_name, field) in [(RUNC_V1, 3), (LINUX_RUNC, 9)] {
        let made = cgroups::Made::new(&format!("/{}", unique_id("b9shimcg")), &[]);
        let mut t = Task::container(&client, "shimcg", BUSYBOX, &[], &["sleep", "60"]);
        t.set_runtime_options(runc_options(type_name, &[Text(field, &made.path)]));
        t.create(&Stdio::default(), t.rootfs()).expect("CreateTask");
        assert_eq!(cgroups::of_process(shim_of(&t.id), "memory").as_deref(), Some(made.path.as_str()), "{type_name}");
        drop(t);
    }
}

#[test]
fn a_shim_cgroup_that_does_not_exist_fails_the_start_naming_it() {
    let client = Client::connect();
    let mut t = Task::container(&client, "noshimcg", BUSYBOX, &[], &["true"]);
    t.set_runtime_options(runc_options(RUNC_V1, &[Text(3, "/beta9-no-such-cgroup")]));
    let e = t.create(&Stdio::default(), t.rootfs()).expect_err("CreateTask with a missing ShimCgroup");
    assert!(e.message().contains("ShimCgroup") && e.message().contains("/beta9-no-such-cgroup"), "{e:?}");
}

#[test]
fn io_uid_and_gid_are_met_by_gvisor_itself() {
    // What IoUid/IoGid are for: a non-root process reopens its own stdio. gVisor hands every
    // process stdio it owns (runsc owns the host pipes), so the options are accepted and met.
    let client = Client::connect();
    let t = Task::container(&client, "iouid", BUSYBOX, &[], &["sh", "-c", "stat -L -c %u:%g /proc/self/fd/1; echo reopened > /proc/self/fd/1"]);
    let mut spec = t.spec();
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1001});
    t.set_spec(&spec);
    let out = t.fifo("out");
    let stdio = Stdio { stdout: out.to_string_lossy().into(), ..Default::default() };
    let said = Output::read(&out, Reader::Fast);
    // 1.x's client sends the linux.runc type (IoUid 10, IoGid 11), 2.x runc.v1 (4, 5).
    let options = if containerd_1x() {
        runc_options(LINUX_RUNC, &[Number(10, 1000), Number(11, 1001)])
    } else {
        runc_options(RUNC_V1, &[Number(4, 1000), Number(5, 1001)])
    };
    t.create_with(&stdio, t.rootfs(), Some(options)).expect("CreateTask");
    t.start("").expect("Start");
    assert_eq!(t.wait("").expect("Wait"), 0);
    assert_eq!(String::from_utf8_lossy(&said.all()), "1000:1001\nreopened\n");
}

#[test]
fn systemd_cgroup_asks_for_systemds_form() {
    let client = Client::connect();
    let options = || Some(runc_options(RUNC_V1, &[Number(9, 1)]));
    let t = Task::container(&client, "sdfs", BUSYBOX, &[], &["true"]);
    let mut spec = t.spec();
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/default/{}", t.id));
    t.set_spec(&spec);
    let e = t.create_with(&Stdio::default(), t.rootfs(), options()).expect_err("a cgroupfs path under SystemdCgroup");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("SystemdCgroup") && e.message().contains("slice:prefix:name"), "{e:?}");
    drop(t);

    let t = Task::container(&client, "sd", BUSYBOX, &[], &["sleep", "60"]);
    let mut spec = t.spec();
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("beta9e2e.slice:b9:{}", t.id));
    t.set_spec(&spec);
    t.create_with(&Stdio::default(), t.rootfs(), options()).expect("CreateTask");
    t.start("").expect("Start");
    let sandbox = processes_with_pids().into_iter().find(|(_, c)| c.starts_with("runsc-sandbox") && c.ends_with(&t.id)).unwrap().0;
    assert_eq!(cgroups::of_process(sandbox, "memory"), Some(format!("/beta9e2e.slice/b9-{}.scope", t.id)));
    // Dropping the task checks that the cgroups the shim made (the slice too) are gone.
}

#[test]
fn root_is_the_parent_of_the_runsc_roots() {
    let client = Client::connect();
    let parent = format!("/run/b9o{}", std::process::id() % 100000);
    let t = Task::container(&client, "root", BUSYBOX, &[], &["sleep", "60"]);
    t.create_with(&Stdio::default(), t.rootfs(), Some(runc_options(RUNC_V1, &[Text(7, &parent)]))).expect("CreateTask");
    let root = runsc_root_of(&t.id);
    assert!(root.starts_with(&format!("{parent}/")), "{root} is under {parent}");
    drop(t);
    assert!(!std::path::Path::new(&root).exists(), "{root} goes with the sandbox");
    let _ = std::fs::remove_dir(&parent);

    let t = Task::container(&client, "longroot", BUSYBOX, &[], &["true"]);
    let e = t
        .create_with(&Stdio::default(), t.rootfs(), Some(runc_options(RUNC_V1, &[Text(7, "/run/containerd/runc")])))
        .expect_err("a root too long for runsc's socket");
    assert!(e.message().contains("runtime option Root") && e.message().contains("at most"), "{e:?}");
}

#[test]
fn binary_name_is_the_runsc_to_run() {
    let client = Client::connect();
    let dir = std::env::temp_dir().join(unique_id("binname"));
    std::fs::create_dir_all(&dir).unwrap();
    let (wrapper, log) = (dir.join("runsc"), dir.join("calls"));
    let runsc = which("runsc");
    std::fs::write(&wrapper, format!("#!/bin/sh\necho \"$@\" >>{}\nexec {} \"$@\"\n", log.display(), runsc.display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    {
        let t = Task::container(&client, "binname", BUSYBOX, &[], &["true"]);
        let options = runc_options(RUNC_V1, &[Text(6, wrapper.to_str().unwrap())]);
        t.create_with(&Stdio::default(), t.rootfs(), Some(options)).expect("CreateTask");
        t.start("").expect("Start");
        assert_eq!(t.wait("").expect("Wait"), 0);
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(calls.contains(&format!("create --bundle")) && calls.contains(&t.id), "runsc ran through BinaryName: {calls}");
    }
    let t = Task::container(&client, "nobin", BUSYBOX, &[], &["true"]);
    let e = t
        .create_with(&Stdio::default(), t.rootfs(), Some(runc_options(RUNC_V1, &[Text(6, "/nonexistent/runsc")])))
        .expect_err("a BinaryName that is not there");
    assert!(e.message().contains("BinaryName") && e.message().contains("/nonexistent/runsc"), "{e:?}");
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_runsc_cannot_honour_is_refused_by_name() {
    let client = Client::connect();
    for (linux, v1, name) in [(1, 1, "NoPivotRoot"), (8, 2, "NoNewKeyring")] {
        let t = Task::container(&client, "unsup", BUSYBOX, &[], &["true"]);
        let e = t.create_with(&Stdio::default(), t.rootfs(), Some(create_options(linux, v1, Number(0, 1)))).expect_err(name);
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(name) && e.message().contains("not supported by runsc"), "{e:?}");
    }
}

#[test]
fn metrics_of_a_created_task_are_its_sandboxs_numbers() {
    let client = Client::connect();
    let t = Task::container(&client, "createdmetrics", BUSYBOX, &[], &["true"]);
    t.create(&Stdio::default(), t.rootfs()).expect("CreateTask");
    let m = run_cmd(ctr().args(["task", "metrics", &t.id]), None);
    assert_eq!(m.code, 0, "{}", m.stderr);
    let usage = m.stdout.lines().find(|l| l.starts_with("memory.usage_in_bytes") || l.starts_with("memory.usage")).unwrap_or_default();
    let n: u64 = usage.split_whitespace().last().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(n > 0, "the sandbox's memory once runsc created it: {}", m.stdout);
}
