//! beta9-sandbox-agent: the PID 1 the shim injects into every sandbox.
//!
//! It runs the workload as its child in a process group of its own, owns every wait in the
//! sandbox (so orphans never linger as zombies and the workload's status is never stolen),
//! forwards signals to the workload, and exits exactly as the workload did, or, with
//! `--keepalive`, stays up so commands can be exec'd into the sandbox later.
//!
//! Usage: beta9-sandbox-agent [--keepalive] -- [COMMAND [ARG...]]

mod init;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match init::Options::parse(&args) {
        Ok(opts) => ExitCode::from(init::run(opts) as u8),
        Err(e) => {
            eprintln!("beta9-sandbox-agent: {e}");
            eprintln!("usage: beta9-sandbox-agent [--keepalive] -- [COMMAND [ARG...]]");
            ExitCode::from(2)
        }
    }
}
