//! The spec's seccomp profile as a classic BPF program, for the processes `runsc exec` starts.
//!
//! runsc 20240729 (`--oci-seccomp`) installs the profile on a container's init only, a process
//! started with `runsc exec` escapes it (runsc/boot/loader.go installs the filter in
//! createContainerProcess; the exec path has none), and it answers every SCMP_ACT_ERRNO with
//! EPERM whatever the profile's errnoRet (runsc/specutils/seccomp: "runc always returns EPERM"),
//! so a default profile's `clone3: ENOSYS` breaks glibc's posix_spawn. So the shim compiles the
//! profile itself, and the init and every exec run behind the agent's `seccomp` subcommand,
//! which installs the program and execs the command: the filter runc would give them.
//!
//! The program follows libseccomp's meaning of a profile: the first entry whose syscall name and
//! argument conditions all match decides; else the default action. Only x86_64 syscalls exist in
//! gVisor, so any other architecture is killed, and so is an x32 syscall number (bit 30), which
//! would otherwise pass every rule written for the native number, as libseccomp guards too.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompArg, LinuxSeccompOperator as Op};

use crate::error::{Error, Result};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Classic BPF: load word absolute, and, jumps, return.
const LD_W_ABS: u16 = 0x20;
const AND_K: u16 = 0x54;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// struct seccomp_data: nr at 0, arch at 4, args at 16 + 8 * index (little endian).
const NR: u32 = 0;
const ARCH: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// A program under construction; `ja` targets are labels resolved at the end.
#[derive(Default)]
struct Program {
    insns: Vec<Insn>,
    /// (index of a `ja`, label it goes to)
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Program {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }

    fn push(&mut self, i: Insn) {
        self.insns.push(i);
    }

    fn goto(&mut self, label: usize) {
        self.fixups.push((self.insns.len(), label));
        self.insns.push(stmt(JA, 0));
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label].expect("every label is placed");
            self.insns[at].k = (target - at - 1) as u32;
        }
        self.insns
    }
}

fn ret(action: Action, errno: Option<u32>) -> Result<u32> {
    Ok(match action {
        Action::ScmpActAllow => RET_ALLOW,
        Action::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        Action::ScmpActKill | Action::ScmpActKillThread => RET_KILL_THREAD,
        Action::ScmpActKillProcess => RET_KILL_PROCESS,
        Action::ScmpActTrap => RET_TRAP,
        Action::ScmpActTrace => RET_TRACE | (errno.unwrap_or(0) & 0xffff),
        Action::ScmpActLog => RET_LOG,
        Action::ScmpActNotify => {
            return Err(Error::InvalidArgument("seccomp action SCMP_ACT_NOTIFY is not supported in a gVisor sandbox".into()))
        }
    })
}

/// One argument condition; falls through when it holds, goes to `fail` when not.
fn condition(p: &mut Program, arg: &LinuxSeccompArg, fail: usize) -> Result<()> {
    let index = arg.index();
    if index > 5 {
        return Err(Error::InvalidArgument(format!("seccomp argument index {index} is out of range (0 to 5)")));
    }
    let (lo, hi) = (16 + 8 * index as u32, 20 + 8 * index as u32);
    let (v, v2) = (arg.value(), arg.value_two().unwrap_or(0));
    let (v_lo, v_hi) = (v as u32, (v >> 32) as u32);
    match arg.op() {
        Op::ScmpCmpEq => {
            for (off, want) in [(hi, v_hi), (lo, v_lo)] {
                p.push(stmt(LD_W_ABS, off));
                p.push(jump(JEQ_K, want, 1, 0));
                p.goto(fail);
            }
        }
        Op::ScmpCmpNe => {
            p.push(stmt(LD_W_ABS, hi));
            p.push(jump(JEQ_K, v_hi, 0, 3));
            p.push(stmt(LD_W_ABS, lo));
            p.push(jump(JEQ_K, v_lo, 0, 1));
            p.goto(fail);
        }
        Op::ScmpCmpMaskedEq => {
            // value is the mask, value_two what the masked argument must equal.
            for (off, mask, want) in [(hi, v_hi, (v2 >> 32) as u32), (lo, v_lo, v2 as u32)] {
                p.push(stmt(LD_W_ABS, off));
                p.push(stmt(AND_K, mask));
                p.push(jump(JEQ_K, want, 1, 0));
                p.goto(fail);
            }
        }
        // Unsigned 64-bit comparisons: the high words decide unless they are equal.
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            let low = if arg.op() == Op::ScmpCmpGt { JGT_K } else { JGE_K };
            p.push(stmt(LD_W_ABS, hi));
            p.push(jump(JGT_K, v_hi, 4, 0));
            p.push(jump(JEQ_K, v_hi, 0, 2));
            p.push(stmt(LD_W_ABS, lo));
            p.push(jump(low, v_lo, 1, 0));
            p.goto(fail);
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            // lo < v is !(lo >= v); lo <= v is !(lo > v).
            let low = if arg.op() == Op::ScmpCmpLt { JGE_K } else { JGT_K };
            p.push(stmt(LD_W_ABS, hi));
            p.push(jump(JGE_K, v_hi, 0, 4));
            p.push(jump(JEQ_K, v_hi, 0, 2));
            p.push(stmt(LD_W_ABS, lo));
            p.push(jump(low, v_lo, 0, 1));
            p.goto(fail);
        }
    }
    Ok(())
}

/// The program for `profile`, as the bytes of its `struct sock_filter` array.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    use std::str::FromStr;
    let mut p = Program::default();
    let native = p.label();
    p.push(stmt(LD_W_ABS, ARCH));
    p.push(jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0));
    p.push(stmt(RET_K, RET_KILL_PROCESS));
    p.place(native);
    p.push(stmt(LD_W_ABS, NR));
    p.push(jump(JGE_K, X32_SYSCALL_BIT, 0, 1));
    p.push(stmt(RET_K, RET_KILL_PROCESS));
    for rule in profile.syscalls().as_deref().unwrap_or_default() {
        let action = ret(rule.action(), rule.errno_ret().or(profile.default_errno_ret()))?;
        // Names this kernel does not know are skipped, as libseccomp does for a profile's
        // syscalls of other kernel versions.
        let numbers: Vec<u32> = rule.names().iter().filter_map(|n| syscalls::Sysno::from_str(n).ok()).map(|s| s.id() as u32).collect();
        if numbers.is_empty() {
            continue;
        }
        let (matched, next) = (p.label(), p.label());
        p.push(stmt(LD_W_ABS, NR));
        for nr in numbers {
            p.push(jump(JEQ_K, nr, 0, 1));
            p.goto(matched);
        }
        p.goto(next);
        p.place(matched);
        for arg in rule.args().as_deref().unwrap_or_default() {
            condition(&mut p, arg, next)?;
        }
        p.push(stmt(RET_K, action));
        p.place(next);
    }
    p.push(stmt(RET_K, ret(profile.default_action(), profile.default_errno_ret())?));
    let insns = p.finish();
    if insns.len() > 4096 {
        return Err(Error::InvalidArgument(format!("the seccomp profile compiles to {} instructions, more than the kernel's 4096", insns.len())));
    }
    Ok(insns.iter().flat_map(|i| [i.code.to_ne_bytes().as_slice(), &[i.jt, i.jf], &i.k.to_ne_bytes()].concat()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    /// Runs `f` in a child process behind `program`; returns what `f` returned (its exit code).
    fn behind(program: &[u8], f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes syscalls and exits; the parent waits for it.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let prog = libc::sock_fprog { len: (program.len() / 8) as u16, filter: program.as_ptr() as *mut libc::sock_filter };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
                {
                    libc::_exit(100);
                }
                libc::_exit(f())
            },
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 200 + libc::WTERMSIG(status) }
            }
        }
    }

    fn errno_of(r: libc::c_long) -> i32 {
        if r == -1 { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) } else { 0 }
    }

    #[test]
    fn the_kernel_runs_the_program_as_the_profile_says() {
        // Default allow; chmod fails with EPERM; personality(0xffffffff) (a query) is allowed
        // only with that argument; getpid with arg0 > 5 (never: getpid takes none) is EACCES.
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"syscalls":[
                {"names":["chmod","fchmodat","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]},
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":22},
                {"names":["setpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":2,"value":5,"op":"SCMP_CMP_GT"}]}
            ]}"#,
        );
        let program = compile(&p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = std::ffi::CString::new(dir.path().join("f").to_str().unwrap()).unwrap();
        std::fs::write(dir.path().join("f"), "").unwrap();
        assert_eq!(behind(&program, || errno_of(unsafe { libc::chmod(file.as_ptr(), 0o600) } as libc::c_long)), libc::EPERM);
        assert_eq!(behind(&program, || errno_of(unsafe { libc::personality(0xffff_ffff) } as libc::c_long)), 0);
        assert_eq!(behind(&program, || errno_of(unsafe { libc::personality(0) } as libc::c_long)), libc::EINVAL);
        let setprio = |nice: i32| move || errno_of(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } as libc::c_long);
        assert_eq!(behind(&program, setprio(7)), libc::EACCES, "arg 2 > 5");
        assert_eq!(behind(&program, setprio(3)), 0, "arg 2 <= 5 is allowed");
        assert_eq!(behind(&program, || errno_of(unsafe { libc::getpid() } as libc::c_long)), 0);
    }

    #[test]
    fn a_default_errno_profile_allows_only_what_it_lists() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {"names":["exit","exit_group","prctl","seccomp","write","getpid","brk","munmap","mmap","rt_sigprocmask","rt_sigreturn"],"action":"SCMP_ACT_ALLOW"}
            ]}"#,
        );
        let program = compile(&p).unwrap();
        assert_eq!(behind(&program, || errno_of(unsafe { libc::syscall(libc::SYS_getppid) })), libc::ENOSYS);
        assert_eq!(behind(&program, || errno_of(unsafe { libc::syscall(libc::SYS_getpid) })), 0);
    }

    #[test]
    fn masked_and_ranged_arguments() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["setpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":2,"value":3,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["setpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":2,"value":1,"op":"SCMP_CMP_LT"}]}
            ]}"#,
        );
        let program = compile(&p).unwrap();
        let setprio = |nice: i32| move || errno_of(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } as libc::c_long);
        assert_eq!(behind(&program, setprio(6)), libc::EACCES, "6 & 3 == 2");
        assert_eq!(behind(&program, setprio(5)), 0, "5 & 3 == 1, and 5 >= 1");
        assert_eq!(behind(&program, setprio(0)), libc::EPERM, "0 < 1");
    }

    #[test]
    fn x32_syscall_numbers_are_killed_whatever_the_rules() {
        // chmod is denied; its x32 number must not slip past that rule (nor anything else).
        let p = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#);
        let program = compile(&p).unwrap();
        let x32 = |nr: libc::c_long| move || errno_of(unsafe { libc::syscall(X32_SYSCALL_BIT as libc::c_long | nr, 0, 0) });
        assert_eq!(behind(&program, x32(libc::SYS_chmod)), 200 + libc::SIGSYS, "killed, as libseccomp's filters do");
        assert_eq!(behind(&program, x32(libc::SYS_getpid)), 200 + libc::SIGSYS);
        assert_eq!(behind(&program, || errno_of(unsafe { libc::syscall(libc::SYS_getpid) })), 0, "native numbers run on");
    }

    #[test]
    fn notify_is_refused() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert!(compile(&p).unwrap_err().to_string().contains("SCMP_ACT_NOTIFY"));
    }
}
