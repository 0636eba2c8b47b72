//! The agent on its own, without a sandbox: as a child subreaper of the test, and as PID 1 of
//! a fresh pid namespace (`unshare --pid --fork`).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_beta9-sandbox-agent");

fn agent(args: &[&str]) -> Command {
    let mut c = Command::new(AGENT);
    c.args(args);
    c
}

fn code(c: &mut Command) -> i32 {
    c.status().unwrap().code().unwrap_or(-1)
}

/// Waits on the child's own exit, bounded so a hung agent fails the test instead of hanging it.
fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exits_like_the_workload() {
    assert_eq!(code(agent(&["--", "sh", "-c", "exit 7"]).stdout(Stdio::null())), 7);
    assert_eq!(code(&mut agent(&["--", "sh", "-c", "kill -9 $$"])), 137);
    assert_eq!(code(&mut agent(&["--", "true"])), 0);
    assert_eq!(code(agent(&["--", "/no/such/binary"]).stderr(Stdio::null())), 127);
    assert_eq!(code(agent(&["--bogus"]).stderr(Stdio::null())), 2);
}

#[test]
fn resets_sigpipe_for_the_workload() {
    // Rust ignores SIGPIPE and an ignored disposition is inherited across exec; the agent
    // blocks the signals it waits for. The workload must see neither.
    let out = agent(&["--", "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mask = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigIgn:") & (1 << (13 - 1)), 0, "SIGPIPE ignored in the workload: {text}");
    assert_eq!(mask("SigBlk:"), 0, "signals blocked in the workload: {text}");
}

#[test]
fn forwards_signals_to_the_workload() {
    for (sig, name) in [(nix_sig::SIGTERM, "TERM"), (nix_sig::SIGUSR1, "USR1"), (nix_sig::SIGHUP, "HUP")] {
        let script = format!("trap 'exit 42' {name}; echo ready; while :; do sleep 0.02; done");
        let mut child = agent(&["--", "sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "ready\n");
        unsafe { libc_kill(child.id() as i32, sig) };
        assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), 42, "SIG{name} forwarded");
    }
}

#[test]
fn reaps_orphans_and_keeps_the_workload_status() {
    // 20 double-forked orphans land on the agent; the workload then checks nobody is a zombie.
    let script = r#"
        for i in $(seq 20); do (sh -c 'exit 3' &); done
        n=0
        while [ $n -lt 200 ]; do
            z=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v agent=$PPID '$3 == "Z" && $4 == agent' | wc -l)
            [ "$z" -eq 0 ] && exit 5
            n=$((n+1)); sleep 0.02
        done
        exit 1
    "#;
    assert_eq!(code(&mut agent(&["--", "sh", "-c", script])), 5);
}

#[test]
fn keepalive_outlives_the_workload_and_stops_on_sigterm() {
    let mut child = agent(&["--keepalive", "--", "sh", "-c", "sleep 300 & echo started"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "started\n");
    assert!(child.try_wait().unwrap().is_none(), "keepalive agent must stay up after its command");
    unsafe { libc_kill(child.id() as i32, nix_sig::SIGTERM) };
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    let sleeper = Command::new("pgrep").args(["-f", "^sleep 300$", "-P", &child.id().to_string()]).output().unwrap();
    assert!(sleeper.stdout.is_empty(), "children of the keepalive agent are stopped");
}

#[test]
fn as_pid_1_of_a_pid_namespace() {
    let unshare = |args: &[&str]| {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", AGENT]).args(args);
        c
    };
    assert_eq!(code(&mut unshare(&["--", "sh", "-c", "[ $$ -ne 1 ] && exit 9"])), 9, "the workload is not PID 1");
    let orphans = "for i in $(seq 20); do (sh -c 'exit 0' &); done; \
        for n in $(seq 200); do [ $(cat /proc/[0-9]*/stat | awk '$3 == \"Z\"' | wc -l) -eq 0 ] && exit 6; sleep 0.02; done; exit 1";
    assert_eq!(code(&mut unshare(&["--", "sh", "-c", orphans])), 6);
    // The workload signals PID 1 itself: the agent stops every process of the namespace, exits 0.
    let mut keep = unshare(&["--keepalive", "--", "sh", "-c", "sleep 300 & sleep 300 & kill -TERM 1"]).spawn().unwrap();
    assert_eq!(wait_exit(&mut keep, Duration::from_secs(5)), 0);
}

mod nix_sig {
    pub const SIGHUP: i32 = 1;
    pub const SIGUSR1: i32 = 10;
    pub const SIGTERM: i32 = 15;
}

unsafe fn libc_kill(pid: i32, sig: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, sig);
}
