//! beta9-sandbox-agent: the PID 1 the shim injects into every sandbox.
//!
//! It runs the workload as its child in a process group of its own, owns every wait in the
//! sandbox (so orphans never linger as zombies and the workload's status is never stolen),
//! forwards signals to the workload, and exits exactly as the workload did, or, with
//! `--keepalive`, stays up so commands can be exec'd into the sandbox later. With `--docker`
//! it also runs and supervises a Docker daemon (see docker.rs).
//!
//! Usage: beta9-sandbox-agent [--keepalive] [--docker] [--docker-network MODE] [--docker-arg ARG]...
//!            [--docker-tmpfs-size SIZE] -- [COMMAND [ARG...]]
//!        beta9-sandbox-agent status [--wait SECONDS]
//!        beta9-sandbox-agent seccomp PROGRAM -- COMMAND [ARG...]

mod children;
mod docker;
mod init;
mod nested;
mod netlink;
mod seccomp;
mod status;
mod uplink;

use std::process::ExitCode;

/// Writes one line to stderr, ignoring failures: `eprintln!` panics when stderr is a closed
/// pipe, and a panicking PID 1 would take the sandbox down with it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "beta9-sandbox-agent: {}", format_args!($($arg)*));
    }};
}

const USAGE: &str = "usage: beta9-sandbox-agent [--keepalive] [--docker] [--docker-network none|sandbox|host] \
[--docker-arg ARG]... [--docker-tmpfs-size SIZE] -- [COMMAND [ARG...]]\n       beta9-sandbox-agent status [--wait SECONDS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(contract::args::STATUS) {
        return ExitCode::from(status::client(&args[1..], false) as u8);
    }
    if args.first().map(String::as_str) == Some(contract::args::RESTORED) {
        return ExitCode::from(status::client(&args[1..], true) as u8);
    }
    if args.first().map(String::as_str) == Some(contract::args::SECCOMP) {
        return ExitCode::from(seccomp::exec(&args[1..]) as u8);
    }
    match contract::args::AgentArgs::parse(&args) {
        Ok(opts) => ExitCode::from(init::run(opts) as u8),
        Err(e) => {
            say!("{e}");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{USAGE}\n").as_bytes());
            ExitCode::from(2)
        }
    }
}
