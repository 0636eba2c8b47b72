//! `agent seccomp PROGRAM -- COMMAND...`: runs a command behind the container's seccomp program,
//! which the shim compiled from the spec's profile. runsc gives the processes of `runsc exec`
//! no filter of their own; runc installs the container's profile right before it execs, and so
//! does this.

use std::{ffi::CString, os::unix::ffi::OsStrExt};

use nix::libc;

use crate::{
    children::{exec_failure_code, find_in_path, reset_signals, DEFAULT_PATH},
    say,
};

/// Never returns on success: the process becomes the command.
pub fn exec(args: &[String]) -> i32 {
    let (program, command) = match contract::args::parse_seccomp_argv(args) {
        Ok(p) => p,
        Err(e) => {
            say!("{e}");
            return 126;
        }
    };
    let filter = match std::fs::read(&program) {
        Ok(f) if !f.is_empty() && f.len() % 8 == 0 && f.len() / 8 <= u16::MAX as usize => f,
        Ok(_) => {
            say!("{program} is not a seccomp program");
            return 126;
        }
        Err(e) => {
            say!("read {program}: {e}");
            return 126;
        }
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    let binary = if command[0].contains('/') { Some(command[0].clone().into()) } else { find_in_path(&command[0], &path) };
    let Some(binary) = binary else {
        say!("exec {}: not found", command[0]);
        return 127;
    };
    let (Ok(binary), Ok(argv)) = (
        CString::new(binary.as_os_str().as_bytes()),
        command.iter().map(|a| CString::new(a.as_bytes())).collect::<Result<Vec<_>, _>>(),
    ) else {
        say!("exec {}: an argument holds a NUL byte", command[0]);
        return 126;
    };
    let prog = libc::sock_fprog { len: (filter.len() / 8) as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prctl with a pointer to a sock_fprog that outlives the call. No new privileges is
    // what gVisor gives every process anyway (it has no setuid escalation).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
        {
            say!("install the seccomp program {program}: {}", std::io::Error::last_os_error());
            return 126;
        }
    }
    // The command starts as runc's would: this wrapper is a Rust program, which ignores SIGPIPE.
    reset_signals();
    match nix::unistd::execv(&binary, &argv) {
        Ok(never) => match never {},
        Err(e) => {
            let e = std::io::Error::from(e);
            say!("exec {}: {e}", command[0]);
            exec_failure_code(&e)
        }
    }
}
