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

#[test]
fn what_the_shim_makes_is_roots_alone_whatever_containerds_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777;
    let c = Container::new("modes");
    c.start(BUSYBOX, &["--annotation", "io.beta9.sandbox.keepalive=true"], &["true"]);
    // hack/containerd.sh runs containerd with the shell's umask (022), under which these were 0755.
    let root = std::path::PathBuf::from(runsc_root_of(&c.id));
    assert_eq!(mode(&root), 0o700, "runsc's root {}", root.display());
    let address = std::fs::read_to_string(bundle_of("default", &c.id).join("address")).expect("the shim's address file");
    let socket = std::path::PathBuf::from(address.trim().trim_start_matches("unix://"));
    assert_eq!(mode(&socket), 0o700, "the shim's ttrpc socket {}", socket.display());
}

#[test]
fn a_config_path_that_is_no_regular_file_is_refused_at_once() {
    let dir = std::env::temp_dir().join(unique_id("cfgpath"));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    assert_eq!(run_cmd(std::process::Command::new("mkfifo").arg(&fifo), None).code, 0);
    let shadow = dir.join("shadow");
    std::fs::write(&shadow, "root:$6$s3cr3tHash:19000:0:99999:7:::\n").unwrap();
    let cases = [
        ("/dev/zero".to_string(), "not a regular file"),
        (fifo.display().to_string(), "not a regular file"),
        (shadow.display().to_string(), "not TOML at line 1"),
    ];
    for (path, why) in cases {
        let c = Container::new("cfgpath");
        let r = c.run(BUSYBOX, &["--runtime-config-path", &path], &["true"], None);
        r.assert_refused(&[&path, why]);
        assert!(!r.stderr.contains("s3cr3t"), "the file's text is not quoted: {}", r.stderr);
        assert!(r.elapsed < Duration::from_secs(20), "answered at once: {:?}", r.elapsed);
        c.remove();
        c.assert_no_leftovers();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_spec_cannot_set_runsc_flags_through_gvisors_annotations() {
    // runsc 20240729 would take host-uds=all from the spec without --allow-flag-override.
    let c = Container::new("runscflag");
    let r = c.run(BUSYBOX, &["--annotation", "dev.gvisor.flag.host-uds=all"], &["true"], None);
    r.assert_refused(&["dev.gvisor.flag.host-uds", "runsc's flags are set on the node"]);
    c.remove();
    c.assert_no_leftovers();
}

/// The capability sets a process shows in /proc/self/status, by name (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
fn caps(status: &str, name: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn dockers_capabilities_reach_root_but_not_other_users() {
    const SYS_ADMIN: u64 = 1 << 21;
    // What PID 1 (the agent, dockerd's parent) holds, read by a root exec.
    let init_caps = |c: &Container| {
        let r = c.exec(&unique_id("caps"), &["grep", "^Cap", "/proc/1/status"], None);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let root = Container::new("dindroot");
    root.start(DEBIAN, &["--annotation", "io.beta9.sandbox.docker=true"], &["true"]);
    let caps_of_root = init_caps(&root);
    assert_ne!(caps(&caps_of_root, "CapEff:") & SYS_ADMIN, 0, "root runs dockerd's way: {caps_of_root}");
    drop(root);

    // A non-root user's init would hand ambient capabilities to every program it starts (gVisor's
    // /proc shows no CapAmb: what runsc is given is read from the bundle once Create is done).
    let client = client::Client::connect();
    let flags = ["--annotation", "io.beta9.sandbox.docker=true", "--annotation", "io.beta9.sandbox.docker.wait=0s"];
    let t = client::Task::container(&client, "dinduser", DEBIAN, &flags, &["true"]);
    let mut spec = t.spec();
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    t.set_spec(&spec);
    t.create(&client::Stdio::default(), t.rootfs()).expect("CreateTask");
    let given: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle_of(client::NAMESPACE, &t.id).join("config.json")).unwrap()).unwrap();
    let sets = &given["process"]["capabilities"];
    assert!(sets["bounding"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"), "{sets}");
    for set in ["ambient", "inheritable"] {
        assert_eq!(sets[set], spec["process"]["capabilities"][set], "uid 1000's {set} set is the spec's");
    }
}
