//! The contract between the shim (on the host) and the agent (PID 1 in the sandbox): the agent's
//! command line, the status report it gives about dockerd, and the exit-code rule. The shim
//! writes what the agent parses and parses what the agent writes, so both live here, each with
//! its round trip tested.

pub mod args;
pub mod status;

/// Where the agent binary appears inside every sandbox.
pub const AGENT_PATH: &str = "/.beta9/agent";

/// The shell's rule, which runsc follows for a sandbox whose init died and the agent follows
/// for its workload: a process killed by a signal exits with 128 + the signal's number.
pub const fn signaled(signal: i32) -> i32 {
    128 + signal
}
