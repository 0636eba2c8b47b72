//! What containerd's clients rely on (issue 15), driven through containerd's gRPC API as its Go
//! client (nerdctl, the kubelet's CRI plugin) drives a runtime: large output on terminals and
//! pipes, ResizePty, Pids, NotFound, read-only root filesystems, user namespaces, privileged ports.

use std::time::Duration;

use beta9_e2e::{client::*, *};
use tonic::Code;

/// `seq -s " " N` prints one line: about 6.9 MB for a million.
const SEQ: &str = "seq -s ' ' 1000000";

fn seq_line() -> Vec<u8> {
    let mut s = (1..=1_000_000).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
    s.push('\n');
    s.into_bytes()
}

/// What a terminal made of the output: its line discipline turns each `\n` into `\r\n`.
fn untermed(out: Vec<u8>) -> Vec<u8> {
    let mut clean = Vec::with_capacity(out.len());
    for (i, &b) in out.iter().enumerate() {
        if !(b == b'\r' && out.get(i + 1) == Some(&b'\n')) {
            clean.push(b);
        }
    }
    clean
}

/// A running sandbox to exec into (agent as PID 1, `sleep` as the workload).
fn running<'a>(client: &'a Client, prefix: &str) -> Task<'a> {
    let t = Task::container(client, prefix, BUSYBOX, &[], &["sleep", "3600"]);
    t.create(&Stdio::default(), t.rootfs()).expect("CreateTask");
    t.start("").expect("Start");
    t
}

/// How an exec's stdio is wired.
#[derive(Clone, Copy, Debug)]
enum Wiring {
    /// A terminal, as the request and the process spec both say (ctr, nerdctl, CRI).
    Terminal,
    /// A terminal in the request only; the process spec says none (a Go client that set
    /// `cio.WithTerminal` but not `pspec.Terminal`).
    TerminalInRequestOnly,
    /// stdout and stderr fifos.
    Pipes,
}

/// Runs `sh -c CMD` as an exec and returns its exit status and what the client read of stdout
/// (terminal line endings undone), once the exit was reported.
fn exec_output(t: &Task, exec_id: &str, cmd: &str, wiring: Wiring, reader: Reader) -> (u32, Vec<u8>) {
    let out = t.fifo(&format!("{exec_id}.out"));
    let terminal = !matches!(wiring, Wiring::Pipes);
    let mut stdio = Stdio { stdout: out.to_string_lossy().into(), terminal, ..Default::default() };
    let err_reader = matches!(wiring, Wiring::Pipes).then(|| {
        let err = t.fifo(&format!("{exec_id}.err"));
        stdio.stderr = err.to_string_lossy().into();
        Output::read(&err, Reader::Fast)
    });
    let process = t.process(&["sh", "-c", cmd], matches!(wiring, Wiring::Terminal));
    t.exec(exec_id, &process, &stdio).expect("Exec");
    let reader = Output::read(&out, reader);
    t.start(exec_id).expect("Start of the exec");
    let code = t.wait(exec_id).expect("Wait");
    let got = reader.all();
    if let Some(err) = err_reader {
        assert_eq!(String::from_utf8_lossy(&err.all()), "", "{exec_id}: nothing on stderr");
    }
    t.delete_process(exec_id).expect("DeleteProcess");
    (code, if terminal { untermed(got) } else { got })
}

fn assert_whole(what: &str, (code, got): (u32, Vec<u8>), want: &[u8]) {
    assert_eq!(code, 0, "{what}: the exit status is the process's own (got {} of {} bytes)", got.len(), want.len());
    assert_eq!(got.len(), want.len(), "{what}: every byte arrives");
    assert!(got == want, "{what}: the bytes are the process's, in order");
}

#[test]
fn large_output_on_a_terminal_arrives_whole_every_time() {
    let client = Client::connect();
    let t = running(&client, "bigtty");
    let want = seq_line();
    for i in 0..20 {
        // Every other run as the client did it: a terminal in the request only. runsc
        // then hands the process a terminal it does not know as one, non-blocking, and writes
        // failed with EAGAIN (exit 255, output cut short) until the shim made the two agree.
        let wiring = if i % 2 == 0 { Wiring::Terminal } else { Wiring::TerminalInRequestOnly };
        let r = exec_output(&t, &format!("tty-{i}"), SEQ, wiring, Reader::Fast);
        assert_whole(&format!("run {i} ({wiring:?})"), r, &want);
    }
}

#[test]
fn large_output_through_pipes_arrives_whole_every_time() {
    let client = Client::connect();
    let t = running(&client, "bigpipe");
    let want = seq_line();
    for i in 0..20 {
        assert_whole(&format!("run {i}"), exec_output(&t, &format!("pipe-{i}"), SEQ, Wiring::Pipes, Reader::Fast), &want);
    }
}

#[test]
fn large_output_reaches_a_slow_reader() {
    // A client that reads 4 KiB at a time with a pause after each: the process outruns it by
    // far, and its exit must still wait until the reader has everything.
    let client = Client::connect();
    let t = running(&client, "slowread");
    let want = seq_line();
    let slow = Reader::Slow { chunk: 4096, pause: Duration::from_millis(1) };
    for (i, wiring) in [Wiring::Terminal, Wiring::TerminalInRequestOnly, Wiring::Pipes].into_iter().enumerate() {
        assert_whole(&format!("{wiring:?}"), exec_output(&t, &format!("slow-{i}"), SEQ, wiring, slow), &want);
    }
    // A reader that stops for a few seconds (less than the 10 s after which the shim gives up
    // on a client that stopped reading) loses nothing either.
    let stall = Reader::Stall { after: 1 << 20, pause: Duration::from_secs(3) };
    assert_whole("stalled reader", exec_output(&t, "stall", SEQ, Wiring::Terminal, stall), &want);
}

#[test]
fn init_on_a_terminal_delivers_its_large_output() {
    let client = Client::connect();
    let want = seq_line();
    // `-t` gives the process spec a terminal, as `ctr run -t` does; the last run has it only in
    // the request.
    for (i, flags) in [&["-t"][..], &["-t"], &[]].into_iter().enumerate() {
        let t = Task::container(&client, "ttyinit", BUSYBOX, flags, &["sh", "-c", SEQ]);
        let out = t.fifo("out");
        let stdio = Stdio { stdout: out.to_string_lossy().into(), terminal: true, ..Default::default() };
        t.create(&stdio, t.rootfs()).expect("CreateTask");
        let reader = Output::read(&out, Reader::Fast);
        t.start("").expect("Start");
        let code = t.wait("").expect("Wait");
        assert_whole(&format!("run {i} {flags:?}"), (code, untermed(reader.all())), &want);
    }
}

#[test]
fn ctr_run_with_a_terminal_delivers_large_output() {
    // `ctr run -t` under a real pty (script(1)), as a person at a terminal runs it.
    let c = Container::new("ctrtty");
    let line = format!("ctr --address {} run -t --rm --runtime {RUNTIME} {BUSYBOX} {} sh -c \"{SEQ}\"", address(), c.id);
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    let r = run_cmd(&mut cmd, Some(""));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Two terminals in a row (the sandbox's, then script's) each add their \r; before the line
    // the terminal may echo what script(1) sent when its input ended (`^@`).
    let got = r.stdout.replace('\r', "");
    let want = String::from_utf8(seq_line()).unwrap();
    let echo = got.strip_suffix(&want).unwrap_or_else(|| panic!("every byte arrives, in order: {} of {} bytes", got.len(), want.len()));
    assert!(echo.len() <= 4 && !echo.contains(|c: char| c.is_ascii_digit()), "only an echo before the line: {echo:?}");
}

#[test]
fn resize_pty_of_a_process_without_a_terminal_answers_ok() {
    // Clients call ResizePty unconditionally when they attach; runc's shim answers OK.
    let client = Client::connect();
    let t = running(&client, "resize");
    t.resize("", 80, 24).expect("ResizePty of an init without a terminal");
    for (exec_id, wiring) in [("pipes", Wiring::Pipes), ("tty", Wiring::Terminal)] {
        let out = t.fifo(&format!("{exec_id}.out"));
        let terminal = matches!(wiring, Wiring::Terminal);
        let stdio = Stdio { stdout: out.to_string_lossy().into(), terminal, ..Default::default() };
        t.exec(exec_id, &t.process(&["sleep", "3600"], terminal), &stdio).expect("Exec");
        t.resize(exec_id, 100, 30).expect("ResizePty of a created exec");
        let reader = Output::read(&out, Reader::Fast);
        t.start(exec_id).expect("Start");
        t.resize(exec_id, 120, 40).expect("ResizePty of a running exec");
        t.kill(exec_id, libc::SIGKILL as u32).expect("Kill");
        assert_eq!(t.wait(exec_id).expect("Wait"), 137);
        reader.all();
        t.delete_process(exec_id).expect("DeleteProcess");
    }
}

#[test]
fn pids_carry_the_host_pids_containerd_knows() {
    let client = Client::connect();
    let t = Task::container(&client, "pids", BUSYBOX, &[], &["sh", "-c", "sleep 1000 & sleep 1001; true"]);
    let created = t.create(&Stdio::default(), t.rootfs()).expect("CreateTask");
    assert_eq!(t.start("").expect("Start"), created, "Start reports the pid Create did");
    t.exec("e1", &t.process(&["sleep", "1002"], false), &Stdio::default()).expect("Exec");
    let exec_pid = t.start("e1").expect("Start of the exec");
    // The agent, sh and both sleeps, and the exec: all there once sh has started its children.
    let mut listed = Vec::new();
    assert!(eventually(Duration::from_secs(20), || {
        listed = t.pids().expect("Pids");
        listed.len() >= 5
    }), "every process of the sandbox is listed: {listed:?}");
    assert_eq!(listed.len(), 5, "{listed:?}");
    let mut numbers: Vec<u32> = listed.iter().map(|(p, _)| *p).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), listed.len(), "no pid is listed twice: {listed:?}");
    assert!(listed.contains(&(created, None)), "the task's init under the pid containerd reported: {listed:?}");
    assert!(listed.contains(&(exec_pid, Some("e1".into()))), "the exec under its pid, with its id: {listed:?}");
    // The others under their pid inside the sandbox: the agent is 1, so they are small.
    let others: Vec<u32> = listed.iter().filter(|(p, _)| *p != created && *p != exec_pid).map(|(p, _)| *p).collect();
    assert!(others.iter().all(|p| (2..100).contains(p)), "the others keep their pid inside the sandbox: {listed:?}");

    t.kill("e1", libc::SIGKILL as u32).expect("Kill the exec");
    assert_eq!(t.wait("e1").expect("Wait"), 137);
    let listed = t.pids().expect("Pids");
    assert!(!listed.iter().any(|(p, e)| *p == exec_pid || e.is_some()), "an ended exec is gone from the list: {listed:?}");
    assert!(listed.contains(&(created, None)), "{listed:?}");
}

#[test]
fn kill_of_a_sandbox_an_operator_removed_answers_not_found() {
    let client = Client::connect();
    let t = running(&client, "opdel");
    let root = runsc_root_of(&t.id);
    assert!(root.starts_with("/run/beta9/"), "{root}");
    // What an operator does behind the shim's back.
    let rm = run_cmd(std::process::Command::new("runsc").args(["--root", &root, "delete", "--force", &t.id]), None);
    assert_eq!(rm.code, 0, "runsc delete --force: {}", rm.stderr);
    let e = t.kill("", libc::SIGTERM as u32).expect_err("Kill of a removed sandbox");
    assert_eq!(e.code(), Code::NotFound, "what clients check before they clean up, as runc's shim answers: {e:?}");
    // The client's cleanup then works: the task is reported gone, and Delete removes it.
    assert_eq!(t.wait("").expect("Wait"), 137);
    t.delete().expect("Delete");
}

/// The mounts stacked at `path`, lowest first: (filesystem type, whether read-only), from
/// mountinfo.
fn mounts_at(path: &std::path::Path) -> Vec<(String, bool)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
        .map(|l| {
            let read_only = l.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro");
            let fstype = l.split(" - ").nth(1).unwrap().split(' ').next().unwrap().to_string();
            (fstype, read_only)
        })
        .collect()
}

fn bundle_rootfs(id: &str) -> std::path::PathBuf {
    bundle_of(NAMESPACE, id).join("rootfs")
}

#[test]
fn a_read_only_rootfs_mount_runs_with_its_writes_in_memory() {
    // A read-only snapshot view, as user-namespaced or remapped containers use: runsc's own
    // default keeps the root's writes in a file inside the rootfs, which failed create.
    let client = Client::connect();
    for i in 0..3 {
        let mut t = Task::container(&client, "rofs", BUSYBOX, &[], &["sh", "-c", "echo written > /tmp/x && cat /tmp/x"]);
        let out = t.fifo("out");
        let stdio = Stdio { stdout: out.to_string_lossy().into(), ..Default::default() };
        let view = t.readonly_rootfs();
        let image = std::path::PathBuf::from(&view[0].source);
        t.create(&stdio, view).unwrap_or_else(|e| panic!("run {i}: CreateTask on a read-only view: {e}"));
        // The view, read-only, under the overlay that takes the agent's mount point.
        let stacked = mounts_at(&bundle_rootfs(&t.id));
        assert!(matches!(&stacked[..], [(_, true), (top, false)] if top == "overlay"), "run {i}: {stacked:?}");
        let reader = Output::read(&out, Reader::Fast);
        t.start("").expect("Start");
        assert_eq!(t.wait("").expect("Wait"), 0, "run {i}");
        assert_eq!(String::from_utf8_lossy(&reader.all()), "written\n", "run {i}: writes to the root work");
        let touched: Vec<_> = std::fs::read_dir(&image).unwrap().flatten().map(|e| e.file_name()).filter(|n| {
            let n = n.to_string_lossy();
            n.starts_with(".gvisor") || n == ".beta9"
        }).collect();
        assert!(touched.is_empty(), "run {i}: nothing is written to the image's layer: {touched:?}");
    }
}

#[test]
fn a_read_only_root_filesystem_refuses_writes() {
    // Kubernetes' readOnlyRootFilesystem (`ctr --read-only`): root.readonly in the spec, on a
    // writable snapshot and on a read-only view alike.
    let client = Client::connect();
    for view in [false, true] {
        let script = "cat /etc/passwd >/dev/null && echo readable; echo x > /x 2>/dev/null || echo refused";
        let mut t = Task::container(&client, "rorootfs", BUSYBOX, &["--read-only"], &["sh", "-c", script]);
        let out = t.fifo("out");
        let stdio = Stdio { stdout: out.to_string_lossy().into(), ..Default::default() };
        let rootfs = if view { t.readonly_rootfs() } else { t.rootfs() };
        t.create(&stdio, rootfs).expect("CreateTask");
        let reader = Output::read(&out, Reader::Fast);
        t.start("").expect("Start");
        assert_eq!(t.wait("").expect("Wait"), 0);
        assert_eq!(String::from_utf8_lossy(&reader.all()), "readable\nrefused\n", "view: {view}");
    }
}

#[test]
fn a_user_namespace_is_refused_at_create_with_the_reason() {
    // Kubernetes' hostUsers: false: runsc would put its own processes in the namespace while
    // every process inside saw the host's ids. Refused, and nothing of it is left.
    let client = Client::connect();
    let t = Task::container(&client, "userns", BUSYBOX, &[], &["id"]);
    let mut spec = t.spec();
    spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["uidMappings"] = map.clone();
    spec["linux"]["gidMappings"] = map;
    t.set_spec(&spec);
    let e = t.create(&Stdio::default(), t.rootfs()).expect_err("CreateTask with a user namespace");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for words in ["user namespaces", "hostUsers: false", "ignores the mappings"] {
        assert!(e.message().contains(words), "the error says {words:?}: {}", e.message());
    }
}

/// A privileged port on the host's loopback that nothing listens on now.
fn free_privileged_port() -> u16 {
    (900..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 900..1000 on 127.0.0.1")
}

/// Binds `port` as uid 65534 without any capability (busybox httpd exits 0 once bound, or 1
/// with "bind: Permission denied"); returns its exit status and what it said.
fn bind_as_nobody(t: &Task, exec_id: &str, port: u16) -> (u32, String) {
    let mut p = t.process(&["httpd", "-p", &format!("127.0.0.1:{port}"), "-h", "/"], false);
    p["user"] = serde_json::json!({"uid": 65534, "gid": 65534});
    p["capabilities"] = serde_json::json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
    let err = t.fifo(&format!("{exec_id}.err"));
    let stdio = Stdio { stderr: err.to_string_lossy().into(), ..Default::default() };
    t.exec(exec_id, &p, &stdio).expect("Exec");
    let said = Output::read(&err, Reader::Fast);
    t.start(exec_id).expect("Start");
    let code = t.wait(exec_id).expect("Wait");
    let said = String::from_utf8_lossy(&said.all()).into_owned();
    t.delete_process(exec_id).expect("DeleteProcess");
    (code, said)
}

#[test]
fn privileged_ports_without_cap_net_bind_service() {
    // Pins gVisor's behaviour (README, "Differences from runc"): on its own netstack a process
    // without CAP_NET_BIND_SERVICE binds port 80 (netstack does not check privileged ports);
    // with the host's network the host kernel decides, with the sandbox's credentials, and
    // lets it bind too. On Linux under runc both fail with EACCES.
    let client = Client::connect();
    let own = running(&client, "port80");
    let (code, said) = bind_as_nobody(&own, "bind80", 80);
    assert_eq!(code, 0, "gVisor's netstack lets a process without CAP_NET_BIND_SERVICE bind port 80: {said}");

    let host = Task::container(&client, "port80host", BUSYBOX, &["--net-host"], &["sleep", "3600"]);
    host.create(&Stdio::default(), host.rootfs()).expect("CreateTask");
    host.start("").expect("Start");
    let port = free_privileged_port();
    let (code, said) = bind_as_nobody(&host, "bindhost", port);
    assert_eq!(code, 0, "with the host's network, port {port} is bound by the sandbox's credentials: {said}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "the port is taken on the host now");
}
