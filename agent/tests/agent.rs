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

/// An agent the test started: killed on drop with everything under it, even when the test
/// fails (a workload left running would hold the test runner's output open).
struct Running(Child);

impl Running {
    fn spawn(c: &mut Command) -> Running {
        Running(c.spawn().unwrap())
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    /// A line the agent's workload printed (stdout piped).
    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let out = self.0.stdout.as_mut().expect("stdout piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
        line
    }

    fn still_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Waits on the agent's own exit, bounded so a hung agent fails the test instead of hanging it.
    fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "agent did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The agent is a subreaper: while it lives, every process it started is below it.
        for pid in descendants(self.0.id()) {
            unsafe { libc_kill(pid as i32, nix_sig::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// glibc's two internal signals (32 and 33): its posix_spawn, Rust's Command's too, leaves them
/// ignored in every child, and no program that uses glibc can name them.
const GLIBC_INTERNAL: u64 = 0b11 << 31;

/// A signal mask that a program printed from /proc/self/status (SigIgn, SigBlk, ...), by name,
/// without glibc's internal signals.
fn mask(status: &[u8], name: &str) -> u64 {
    let text = String::from_utf8_lossy(status);
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap() & !GLIBC_INTERNAL
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
    assert_eq!(mask(&out.stdout, "SigIgn:") & (1 << (13 - 1)), 0, "SIGPIPE ignored in the workload");
    assert_eq!(mask(&out.stdout, "SigBlk:"), 0, "signals blocked in the workload");
}

/// `sh -c` that ignores signals, as `nohup` does (and CI may), then execs the agent with `args`.
fn agent_with_signals_ignored(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "trap '' HUP INT QUIT USR1 USR2 TERM PIPE ALRM; exec \"$0\" \"$@\"", AGENT]).args(args);
    c
}

#[test]
fn children_get_default_dispositions_whatever_the_agent_inherited() {
    // Ignored dispositions survive exec; init systems give every child defaults.
    let out = agent_with_signals_ignored(&["--", "grep", "^Sig", "/proc/self/status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!((mask(&out.stdout, "SigIgn:"), mask(&out.stdout, "SigBlk:")), (0, 0), "{text}");

    // So a workload shell can trap SIGHUP, which it cannot when it starts with it ignored.
    let script = "trap 'exit 42' HUP; echo ready; while :; do sleep 0.02; done";
    let mut a = Running::spawn(agent_with_signals_ignored(&["--", "sh", "-c", script]).stdout(Stdio::piped()));
    assert_eq!(a.read_line(), "ready\n");
    unsafe { libc_kill(a.id() as i32, nix_sig::SIGHUP) };
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 42, "SIGHUP reached a workload that traps it");
}

#[test]
fn the_seccomp_wrapper_execs_with_default_dispositions() {
    // A one-instruction program that allows everything (BPF_RET | BPF_K, SECCOMP_RET_ALLOW).
    let program = std::env::temp_dir().join(format!("agent-allow-{}.bpf", std::process::id()));
    std::fs::write(&program, [0x06, 0, 0, 0, 0, 0, 0xff, 0x7f]).unwrap();
    let out = agent_with_signals_ignored(&["seccomp", program.to_str().unwrap(), "--", "grep", "^Sig\\|^Seccomp:", "/proc/self/status"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&program);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Seccomp:\t2"), "the filter is installed: {text}");
    assert_eq!((mask(&out.stdout, "SigIgn:"), mask(&out.stdout, "SigBlk:")), (0, 0), "{text}");
}

#[test]
fn forwards_signals_to_the_workload() {
    for (sig, name) in [(nix_sig::SIGTERM, "TERM"), (nix_sig::SIGUSR1, "USR1"), (nix_sig::SIGHUP, "HUP")] {
        let script = format!("trap 'exit 42' {name}; echo ready; while :; do sleep 0.02; done");
        let mut a = Running::spawn(agent(&["--", "sh", "-c", &script]).stdout(Stdio::piped()));
        assert_eq!(a.read_line(), "ready\n");
        unsafe { libc_kill(a.id() as i32, sig) };
        assert_eq!(a.wait_exit(Duration::from_secs(10)), 42, "SIG{name} forwarded");
    }
}

#[test]
fn a_failing_test_still_kills_what_its_agent_started() {
    let mut pids = String::new();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut a = Running::spawn(agent(&["--", "sh", "-c", "sleep 300 & echo $! $$; wait"]).stdout(Stdio::piped()));
        pids = a.read_line();
        panic!("the test fails here");
    }));
    assert!(failed.is_err());
    assert_eq!(pids.split_whitespace().count(), 2, "{pids}");
    // Gone, or a zombie on its way to init, which reaps it (SIGKILL is delivered asynchronously).
    let gone = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.split_whitespace().all(gone) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pids.split_whitespace().all(gone), "the workload {pids} outlived its failed test");
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
    let mut a = Running::spawn(agent(&["--keepalive", "--", "sh", "-c", "sleep 300 & echo started"]).stdout(Stdio::piped()));
    assert_eq!(a.read_line(), "started\n");
    assert!(a.still_running(), "keepalive agent must stay up after its command");
    unsafe { libc_kill(a.id() as i32, nix_sig::SIGTERM) };
    assert_eq!(a.wait_exit(Duration::from_secs(5)), 0);
    let sleeper = Command::new("pgrep").args(["-f", "^sleep 300$", "-P", &a.id().to_string()]).output().unwrap();
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
    let mut keep = Running::spawn(&mut unshare(&["--keepalive", "--", "sh", "-c", "sleep 300 & sleep 300 & kill -TERM 1"]));
    assert_eq!(keep.wait_exit(Duration::from_secs(5)), 0);
}

mod nix_sig {
    pub const SIGHUP: i32 = 1;
    pub const SIGKILL: i32 = 9;
    pub const SIGUSR1: i32 = 10;
    pub const SIGTERM: i32 = 15;
}

unsafe fn libc_kill(pid: i32, sig: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, sig);
}
