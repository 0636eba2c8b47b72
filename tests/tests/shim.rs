//! The shim end to end: ctr -> private containerd -> containerd-shim-beta9-sandbox -> runsc.

use std::time::Duration;

use beta9_e2e::*;

/// Far below the 300 s the leftover thread or child sleeps: a run that waited on them fails.
const PROMPT: Duration = Duration::from_secs(20);

#[test]
fn output_reaches_the_client_from_gvisors_kernel() {
    let c = Container::new("out");
    let r = c.run(BUSYBOX, &[], &["sh", "-c", "echo hello from gvisor; uname -r; echo to-stderr >&2"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("hello from gvisor"), "stdout: {:?}", r.stdout);
    assert!(r.stderr.contains("to-stderr"), "stderr: {:?}", r.stderr);
    // gVisor's Sentry reports its own kernel version, not the host's.
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let inside = r.stdout.lines().nth(1).unwrap_or_default();
    assert_eq!(inside, "4.4.0", "uname -r inside the sandbox");
    assert_ne!(inside, host.trim());
}

#[test]
fn exit_codes_propagate() {
    let c = Container::new("exit");
    assert_eq!(c.run(BUSYBOX, &[], &["sh", "-c", "exit 7"], None).code, 7);
    let c = Container::new("signal");
    assert_eq!(c.run(BUSYBOX, &[], &["sh", "-c", "kill -9 $$"], None).code, 137);
}

#[test]
fn os_exit_with_a_live_thread_ends_the_task_at_once() {
    let c = Container::new("osexit");
    let script = "import os,threading,time; threading.Thread(target=time.sleep,args=(300,)).start(); os._exit(5)";
    let r = c.run(DEBIAN, &[], &["python3", "-c", script], None);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.elapsed < PROMPT, "took {:?}", r.elapsed);
}

#[test]
fn init_exit_with_a_background_child_ends_the_task_at_once() {
    let c = Container::new("bgchild");
    let r = c.run(BUSYBOX, &[], &["sh", "-c", "sleep 300 & exit 3"], None);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.elapsed < PROMPT, "took {:?}", r.elapsed);
}

#[test]
fn stdin_comes_back_out() {
    let c = Container::new("stdin");
    let r = c.run(BUSYBOX, &[], &["cat"], Some("line one\nline two\n"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "line one\nline two\n");
}

#[test]
fn exec_runs_with_stdio_and_exit_code() {
    let c = Container::new("exec");
    c.start(BUSYBOX, &[], &["sleep", "300"]);
    let r = c.exec("e1", &["sh", "-c", "echo in-exec; echo err >&2; exit 4"], None);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.stdout, "in-exec\n");
    assert!(r.stderr.contains("err"));
    let r = c.exec("e2", &["cat"], Some("piped into exec\n"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "piped into exec\n"), "{}", r.stderr);
    let r = c.exec("e3", &["/no/such/binary"], None);
    assert_ne!(r.code, 0, "exec of a missing binary must fail");
    // ps lists the init under the pid containerd reported for the task (the sandbox's).
    let pids = c.task(&["ps", &c.id]);
    assert_eq!(pids.code, 0, "{}", pids.stderr);
    let task_pid = c.task(&["ls"]).stdout.lines().find(|l| l.starts_with(&c.id)).and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    let task_pid = task_pid.expect("the task's pid in ctr task ls");
    assert!(pids.stdout.lines().any(|l| l.split_whitespace().next() == Some(task_pid.as_str())), "ps lists the task's pid {task_pid}: {}", pids.stdout);
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
}

#[test]
fn running_sandbox_ignores_cgroups_and_kill_delete_leave_nothing() {
    let c = Container::new("kill");
    c.start(BUSYBOX, &[], &["sleep", "300"]);
    let cmdline = c.sandbox_cmdline().expect("a runsc sandbox process for the task");
    assert!(cmdline.contains("--ignore-cgroups"), "{cmdline}");
    assert!(cmdline.contains("--network=none"), "ctr's default netns has no path: {cmdline}");
    assert!(cmdline.contains("--platform=systrap"), "{cmdline}");
    assert_eq!(c.task(&["kill", &c.id]).code, 0);
    assert_eq!(c.wait_exit(), 143, "SIGTERM's exit status");
    c.remove();
    c.assert_no_leftovers();
}

#[test]
fn kill_all_reaches_every_process() {
    // The init defers SIGTERM behind its foreground sleep and no agent forwards it, so only
    // --all reaches the sleep (a handler is not inherited across exec); the init then exits 9.
    // Without --all the task would not stop.
    let c = Container::new("killall");
    let no_agent = "io.beta9.sandbox.agent=false";
    c.start(BUSYBOX, &["--annotation", no_agent], &["sh", "-c", "trap true TERM; sleep 300; exit 9"]);
    assert!(eventually(PROMPT, || c.exec(&unique_id("ps"), &["ps"], None).stdout.contains("sleep 300")));
    assert_eq!(c.task(&["kill", "--all", "-s", "SIGTERM", &c.id]).code, 0);
    assert_eq!(c.wait_exit(), 9);
}

#[test]
fn host_network_maps_to_runsc_host() {
    let c = Container::new("nethost");
    c.start(BUSYBOX, &["--net-host"], &["sleep", "300"]);
    let cmdline = c.sandbox_cmdline().expect("sandbox process");
    assert!(cmdline.contains("--network=host"), "{cmdline}");
}

#[test]
fn ids_sharing_a_prefix_do_not_collide() {
    let base = unique_id("prefix");
    let a = Container { id: format!("{base}-1") };
    let b = Container { id: format!("{base}-10") };
    a.start(BUSYBOX, &[], &["sleep", "300"]);
    b.start(BUSYBOX, &[], &["sleep", "300"]);
    for c in [&a, &b] {
        assert_eq!(c.task(&["kill", "-s", "SIGKILL", &c.id]).code, 0, "kill {}", c.id);
        assert_eq!(c.wait_exit(), 137, "{}", c.id);
    }
}

#[test]
fn missing_binary_fails_at_create_and_leaves_nothing() {
    let c = Container::new("nobin");
    let r = c.run(BUSYBOX, &[], &["/no/such/binary"], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/no/such/binary") && r.stderr.contains("not found"), "{}", r.stderr);
    c.remove();
    c.assert_no_leftovers();
}

#[test]
fn output_to_a_plain_file() {
    let c = Container::new("logfile");
    c.start(BUSYBOX, &["--log-uri", &c.log_uri()], &["sh", "-c", "echo into-the-file"]);
    assert_eq!(c.wait_exit(), 0);
    assert!(c.log_contains("into-the-file"));
}

#[test]
fn events_come_in_order_and_exec_exits_precede_the_inits() {
    let c = Container::new("events");
    let events = Spawned::new(ctr().args(["events"]).stdout(std::process::Stdio::piped()));
    // `ctr events` subscribes asynchronously: wait until it sees an event of ours.
    let probe = Container::new("events-probe");
    assert!(eventually(PROMPT, || probe.run(BUSYBOX, &[], &["true"], None).code == 0));
    c.start(BUSYBOX, &[], &["sleep", "300"]);
    assert_eq!(c.exec("quick", &["true"], None).code, 0);
    let mut detached = ctr();
    detached.args(["task", "exec", "-d", "--exec-id", "long", &c.id, "sleep", "300"]);
    assert_eq!(run_cmd(&mut detached, None).code, 0);
    assert_eq!(c.task(&["kill", "-s", "SIGKILL", &c.id]).code, 0);
    assert_eq!(c.wait_exit(), 137);
    let out = events.kill_and_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&format!("\"container_id\":\"{}\"", c.id)))
        .map(|l| {
            let topic = l.split_whitespace().nth(5).unwrap_or_default().to_string();
            let id = l.split("\"id\":\"").nth(1).map(|s| s.split('"').next().unwrap().to_string());
            let exec = l.split("\"exec_id\":\"").nth(1).map(|s| s.split('"').next().unwrap().to_string());
            format!("{topic} {}", exec.or(id).unwrap_or_default())
        })
        .collect();
    let expected = [
        "/tasks/create ".to_string(),
        "/tasks/start ".into(),
        "/tasks/exec-added quick".into(),
        "/tasks/exec-started quick".into(),
        "/tasks/exit quick".into(),
        "/tasks/exec-added long".into(),
        "/tasks/exec-started long".into(),
        "/tasks/exit long".into(),
        format!("/tasks/exit {}", c.id),
        format!("/tasks/delete {}", c.id),
    ];
    let got: Vec<String> = ours.iter().map(|e| e.replace(&c.id, "").trim_end().to_string()).collect();
    let want: Vec<String> = expected.iter().map(|e| e.replace(&c.id, "").trim_end().to_string()).collect();
    assert_eq!(got, want, "events for {}:\n{}", c.id, ours.join("\n"));
}

#[test]
fn runsc_own_error_reaches_the_client_and_nothing_is_left() {
    let c = Container::new("runscerr");
    let missing = format!("/nonexistent-{}", c.id);
    let mount = format!("type=bind,src={missing},dst=/x,options=rbind:ro");
    let r = c.run(BUSYBOX, &["--mount", &mount], &["true"], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("runsc create failed"), "{}", r.stderr);
    assert!(r.stderr.contains(&missing), "runsc's words name the cause: {}", r.stderr);
    c.remove();
    c.assert_no_leftovers();
}

#[test]
fn null_io_runs() {
    let c = Container::new("nullio");
    let r = c.run(BUSYBOX, &["--null-io"], &["sh", "-c", "echo discarded; exit 3"], None);
    assert_eq!((r.code, r.stdout.as_str()), (3, ""), "{}", r.stderr);
}
