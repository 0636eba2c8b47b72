//! Terminals: `ctr run -t` and `ctr task exec -t` through a real pty (util-linux `script`), with
//! runsc's console socket on the shim's side.

use beta9_e2e::*;

/// Runs a ctr command line inside a pseudo-terminal of its own, as a person at a terminal would.
fn in_pty(command: &str) -> Run {
    let mut c = std::process::Command::new("script");
    c.args(["-qec", command, "/dev/null"]);
    run_cmd(&mut c, Some(""))
}

fn ctr_line() -> String {
    format!("ctr --address {}", address())
}

#[test]
fn run_with_a_terminal() {
    let c = Container::new("tty");
    let r = in_pty(&format!(
        "{} run -t --rm --runtime {RUNTIME} {BUSYBOX} {} sh -c '[ -t 0 ] && [ -t 1 ] && echo on-a-terminal; echo $((6*7))'",
        ctr_line(),
        c.id
    ));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let out = r.stdout.replace('\r', "");
    // gVisor shows the terminal as host:[N], not /dev/pts/N, so isatty is the check.
    assert!(out.contains("on-a-terminal"), "the workload's stdio is a terminal: {out:?}");
    assert!(out.lines().any(|l| l.trim() == "42"), "{out:?}");
}

#[test]
fn exec_with_a_terminal() {
    let c = Container::new("ttyexec");
    c.start(BUSYBOX, &["--annotation", "io.beta9.sandbox.keepalive=true"], &[]);
    let r = in_pty(&format!("{} task exec -t --exec-id t {} sh -c '[ -t 0 ] && echo on-a-terminal; exit 4'", ctr_line(), c.id));
    let out = r.stdout.replace('\r', "");
    assert!(out.contains("on-a-terminal"), "{out:?} {}", r.stderr);
    assert_eq!(r.code, 4, "{out:?} {}", r.stderr);
}

#[test]
fn interactive_shell_reads_the_terminal_behind_the_agent() {
    // The agent makes the shell's group the terminal's foreground, or its first read stops it.
    let c = Container::new("ttysh");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} run -t --rm --runtime {RUNTIME} {BUSYBOX} {} sh", ctr_line(), c.id), "/dev/null"]);
    let r = run_cmd(&mut cmd, Some("echo from-stdin-$((2+3))\nexit 3\n"));
    let out = r.stdout.replace('\r', "");
    assert!(out.lines().any(|l| l == "from-stdin-5"), "{out:?}");
    assert_eq!(r.code, 3, "{out:?} {}", r.stderr);
}
