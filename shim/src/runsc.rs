//! Everything runsc sees: its global flags (built in one pure function) and its subcommands.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use log::debug;
use serde::Deserialize;

use crate::{
    cgroup::CgroupJoin,
    error::{Error, Result, RunscFailure},
    reaper::Reaper,
};

/// The runsc calls that start sandbox processes: `create` the sandbox and its gofer, `start` a
/// pod's app container's gofer. They run in the sandbox's cgroup, so what they start is born there.
const STARTS_SANDBOX_PROCESSES: &[&str] = &["create", "start"];

/// How the sandbox gets its network: gVisor's netstack in the spec's network namespace
/// (`sandbox`), the host's stack (`host`), or loopback only (`none`).
pub use contract::args::Network;

/// The flags every runsc invocation of one sandbox carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunscFlags {
    pub root: PathBuf,
    pub platform: String,
    pub network: Network,
    /// JSON log runsc and its sandbox append to; errors are read back from it.
    pub log: PathBuf,
    pub debug_log_dir: Option<PathBuf>,
    /// Raw sockets for the sandbox (dockerd's networking needs them).
    pub net_raw: bool,
    /// Writes on packet sockets (newer dockerd needs them); only for a runsc that knows the flag.
    pub allow_packet_socket_write: bool,
    /// NVIDIA GPUs through nvproxy, and its Docker support when Docker is on too.
    pub nvproxy: bool,
    pub nvproxy_docker: bool,
    /// Where the root filesystem's writes go (`--overlay2`), when not runsc's default.
    pub overlay: Option<String>,
    pub extra: Vec<String>,
}

impl RunscFlags {
    pub fn new(root: PathBuf, log: PathBuf, network: Network) -> Self {
        RunscFlags {
            root,
            platform: "systrap".into(),
            network,
            log,
            debug_log_dir: None,
            net_raw: false,
            allow_packet_socket_write: false,
            nvproxy: false,
            nvproxy_docker: false,
            overlay: None,
            extra: Vec::new(),
        }
    }

    /// The global flags, before the subcommand.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            // Without it runsc waits on cgroups and a sandbox whose init called os._exit hangs.
            "--ignore-cgroups".into(),
            format!("--platform={}", self.platform).into(),
            format!("--network={}", self.network.as_str()).into(),
            "--log-format=json".into(),
            "--log".into(),
            self.log.clone().into(),
        ];
        if self.net_raw {
            args.push("--net-raw".into());
        }
        if self.allow_packet_socket_write {
            args.push("--allow-packet-socket-write".into());
        }
        if self.nvproxy {
            args.push("--nvproxy".into());
            if self.nvproxy_docker {
                args.push("--nvproxy-docker".into());
            }
        }
        if let Some(overlay) = &self.overlay {
            args.push(format!("--overlay2={overlay}").into());
        }
        if let Some(dir) = &self.debug_log_dir {
            args.push("--debug".into());
            args.push(format!("--debug-log={}/", dir.display()).into());
        }
        args.extend(self.extra.iter().map(OsString::from));
        args
    }
}

/// The container's stdio as runsc create/exec hand it to the process: pipes, or a terminal
/// whose master runsc sends to the console socket.
pub struct ProcessStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub console_socket: Option<PathBuf>,
}

impl ProcessStdio {
    pub fn null() -> Self {
        ProcessStdio { stdin: Stdio::null(), stdout: Stdio::null(), stderr: Stdio::null(), console_socket: None }
    }
}

#[derive(Clone, Debug)]
pub struct Runsc {
    pub binary: PathBuf,
    pub flags: RunscFlags,
    /// Run the calls that set up the sandbox's network where /proc/sys/net is hidden (netns.rs).
    pub isolate_proc_sys_net: bool,
    /// The sandbox's cgroup, which the calls that start its processes join (cgroup.rs).
    pub cgroup: Option<CgroupJoin>,
}

impl Runsc {
    pub fn new(binary: PathBuf, flags: RunscFlags) -> Self {
        Runsc { binary, flags, isolate_proc_sys_net: false, cgroup: None }
    }

    /// What `runsc --version` says first (`runsc version release-20240729.0`), asked once per
    /// binary (probe.rs, under the runsc root that holds this sandbox's): a checkpoint records
    /// it, as only the runsc that took one can restore it.
    pub async fn version(&self) -> String {
        let probes = self.flags.root.parent().unwrap_or(&self.flags.root);
        let ask = || async {
            let out = ask(&self.binary, "--version").await?;
            Some(out.lines().next().unwrap_or_default().trim().to_string()).filter(|v| !v.is_empty())
        };
        crate::probe::cached(&self.binary, probes, "version", ask).await.unwrap_or_default()
    }

    pub async fn create(&self, id: &str, bundle: &Path, pid_file: &Path, stdio: ProcessStdio) -> Result<()> {
        let mut args: Vec<OsString> = vec!["create".into(), "--bundle".into(), bundle.into(), "--pid-file".into(), pid_file.into()];
        if let Some(socket) = &stdio.console_socket {
            args.extend(["--console-socket".into(), socket.into()]);
        }
        args.push(id.into());
        self.run("create", args, Some(stdio)).await.map(drop)
    }

    /// Starts a container. A pod's app container gets its stdio here, not at create: runsc
    /// hands `start`'s own stdio to its process.
    pub async fn start(&self, id: &str, stdio: Option<ProcessStdio>) -> Result<()> {
        self.run("start", vec!["start".into(), id.into()], stdio).await.map(drop)
    }

    /// Waits for a container's init to exit and returns its status (128 + signal if killed).
    /// For a pod's app container, whose init is no host process the shim could reap.
    pub async fn wait(&self, id: &str) -> Result<i32> {
        #[derive(Deserialize)]
        struct Waited {
            #[serde(rename = "exitStatus")]
            exit_status: i32,
        }
        let out = self.run("wait", vec!["wait".into(), id.into()], None).await?;
        serde_json::from_str::<Waited>(out.trim())
            .map(|w| w.exit_status)
            .map_err(|e| Error::Other(format!("runsc wait {id}: {e}: {out}")))
    }

    /// Starts a process in the container; a detached runsc waiter (reparented to the shim)
    /// stands for it on the host and exits with its status.
    pub async fn exec(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        internal_pid_file: &Path,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let mut a: Vec<OsString> = vec!["exec".into(), "--detach".into(), "--process".into(), process.into()];
        a.extend(["--pid-file".into(), pid_file.into(), "--internal-pid-file".into(), internal_pid_file.into()]);
        if let Some(socket) = &stdio.console_socket {
            a.extend(["--console-socket".into(), socket.into()]);
        }
        a.push(id.into());
        self.run("exec", a, Some(stdio)).await.map(drop)
    }

    /// Signals the init (or, with `pid`, one process inside the sandbox). A sandbox that is
    /// gone means the process already exited: that is the caller's NotFound, not a failure here.
    pub async fn kill(&self, id: &str, signal: u32, all: bool, pid: Option<u32>) -> Result<()> {
        let mut a: Vec<OsString> = vec!["kill".into()];
        if all {
            a.push("--all".into());
        }
        if let Some(pid) = pid {
            a.push(format!("--pid={pid}").into());
        }
        a.extend([id.into(), signal.to_string().into()]);
        self.run("kill", a, None).await.map(drop)
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let a = vec!["delete".into(), "--force".into(), id.into()];
        match self.run("delete", a, None).await {
            Err(e) if e.is_gone() => Ok(()),
            other => other.map(drop),
        }
    }

    /// Saves the whole sandbox of `id` (its kernel, memory and the files of its overlay) into
    /// `image`. Without `leave_running` runsc ends the sandbox once saved (exit 0); a paused one
    /// ends when it is resumed.
    pub async fn checkpoint(&self, id: &str, image: &Path, how: &CheckpointFlags) -> Result<()> {
        let mut a: Vec<OsString> = vec!["checkpoint".into(), "--image-path".into(), image.into()];
        a.push(format!("--compression={}", how.compression).into());
        if how.exclude_zero_pages {
            a.push("--exclude-committed-zero-pages".into());
        }
        if how.leave_running {
            a.push("--leave-running".into());
        }
        a.push(id.into());
        self.run("checkpoint", a, None).await.map(drop)
    }

    /// Brings the sandbox saved in `image` back into the created container `id`, whose stdio
    /// and terminal are the ones its `runsc create` was given.
    pub async fn restore(&self, id: &str, image: &Path) -> Result<()> {
        let a: Vec<OsString> = vec!["restore".into(), "--detach".into(), "--image-path".into(), image.into(), id.into()];
        self.run("restore", a, None).await.map(drop)
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        self.run("pause", vec!["pause".into(), id.into()], None).await.map(drop)
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        self.run("resume", vec!["resume".into(), id.into()], None).await.map(drop)
    }

    /// The sandbox's resource usage, as runsc's one stats event (JSON).
    pub async fn stats(&self, id: &str) -> Result<String> {
        self.run("events", vec!["events".into(), "--stats".into(), id.into()], None).await
    }

    /// The container's processes, with pids inside the sandbox (1, 2, ...), not host pids.
    /// The pids (inside the sandbox) of a container's processes. JSON, not the table: a
    /// process name is the workload's to choose and may hold a newline, which would make up rows.
    pub async fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.run("ps", vec!["ps".into(), "--format=json".into(), id.into()], None).await?;
        serde_json::from_str(out.trim()).map_err(|e| Error::Other(format!("runsc ps {id}: {e}: {}", out.trim())))
    }

    /// Runs a command in the running container and returns its exit code and output, for
    /// short in-sandbox queries (the agent's status); runsc's own failures are errors.
    pub async fn exec_output(&self, id: &str, args: &[&str]) -> Result<(i32, String)> {
        let mut sub: Vec<OsString> = vec!["exec".into(), id.into()];
        sub.extend(args.iter().map(OsString::from));
        let log_offset = log_len(&self.flags.log);
        let (code, stdout, stderr) = self.output("exec", sub, None).await?;
        if code != 0 && stdout.is_empty() {
            return Err(self.failure("exec", code, &stderr, log_offset));
        }
        Ok((code, stdout))
    }

    /// Runs one subcommand to completion and returns its stdout; a non-zero exit is an error
    /// carrying runsc's own words.
    async fn run(&self, what: &str, sub: Vec<OsString>, stdio: Option<ProcessStdio>) -> Result<String> {
        let log_offset = log_len(&self.flags.log);
        let (code, stdout, stderr) = self.output(what, sub, stdio).await?;
        if code == 0 {
            return Ok(stdout);
        }
        Err(self.failure(what, code, &stderr, log_offset))
    }

    fn failure(&self, what: &str, code: i32, stderr: &str, log_offset: u64) -> Error {
        let mut message = errors_since(&self.flags.log, log_offset);
        if message.is_empty() {
            message = stderr.trim().to_string();
        }
        if message.is_empty() {
            message = format!("exit status {code}");
        }
        // A Go panic's stack after runsc's words (a truncated checkpoint image) says nothing more.
        if let Some(at) = message.find("\ngoroutine ") {
            message.truncate(at);
            message = message.trim_end().trim_end_matches(':').to_string();
        }
        if message.contains("cannot run with network enabled in root network namespace") {
            // runsc's words mislead: the shim hides this from runsc only where it detects the need.
            message += " (this runsc took the sandbox's network namespace for the host's: see the README's Networking \
                section on the runsc workaround, or give the sandbox loopback only ([runsc] network = \"none\"))";
        }
        let failure = classify(&message);
        Error::Runsc { command: what.into(), message, failure }
    }

    /// Runs one subcommand to completion. Output goes to anonymous files, never pipes: a gofer
    /// runsc spawns inherits them and would hold a pipe open forever.
    async fn output(&self, what: &str, sub: Vec<OsString>, stdio: Option<ProcessStdio>) -> Result<(i32, String, String)> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.flags.args()).args(&sub);
        if self.isolate_proc_sys_net && crate::netns::SETS_UP_NETWORK.contains(&what) {
            crate::netns::hide_proc_sys_net(&mut cmd);
        }
        let cgroup = self.cgroup.as_ref().filter(|_| STARTS_SANDBOX_PROCESSES.contains(&what));
        if let Some(cg) = cgroup {
            cg.apply(&mut cmd);
        }
        debug!("runsc {:?}", cmd.get_args().collect::<Vec<_>>());
        let started = std::time::Instant::now();
        let limit = if what == "ps" { PS_LIMIT } else { OUTPUT_LIMIT };
        let out = run_captured(&mut cmd, stdio, limit).await.map_err(|e| Error::Runsc {
            command: what.into(),
            message: match cgroup {
                Some(cg) => format!("cannot run {} in the sandbox's cgroup {}: {e}", self.binary.display(), cg.path()),
                None => format!("cannot run {}: {e}", self.binary.display()),
            },
            failure: RunscFailure::Refused,
        });
        debug!("runsc {what} took {:?}", started.elapsed());
        out
    }
}

/// Spawns `cmd` through the reaper and waits for it; output is captured unless `stdio` is given,
/// stdout up to `limit` bytes.
async fn run_captured(cmd: &mut Command, stdio: Option<ProcessStdio>, limit: u64) -> std::io::Result<(i32, String, String)> {
    let captured = match stdio {
        Some(s) => {
            cmd.stdin(s.stdin).stdout(s.stdout).stderr(s.stderr);
            None
        }
        None => {
            let (out, err) = (memfd("runsc-stdout", limit)?, memfd("runsc-stderr", OUTPUT_LIMIT)?);
            cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(err.try_clone()?);
            Some((out, err))
        }
    };
    let (_pid, exited) = Reaper::get().spawn(cmd)?;
    // Our copies of the child's stdio must close now, or a reader of them never sees EOF.
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let code = exited.await.unwrap_or(-1);
    Ok(match captured {
        Some((mut out, mut err)) => (code, read_capped(&mut out, limit), read_capped(&mut err, OUTPUT_LIMIT)),
        None => (code, String::new(), String::new()),
    })
}

/// How `runsc checkpoint` saves a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFlags {
    pub leave_running: bool,
    /// `none` (fastest to restore) or `flate-best-speed` (smaller).
    pub compression: String,
    pub exclude_zero_pages: bool,
}

/// The top-level flags `binary` knows (`runsc flags`), asked once per binary (probe.rs).
pub async fn known_flags(binary: &Path, cache_dir: &Path) -> HashSet<String> {
    let ask = || async {
        let names = parse_flag_names(&ask(binary, "flags").await?);
        Some(names.into_iter().collect::<Vec<_>>().join("\n")).filter(|n| !n.is_empty())
    };
    let names = crate::probe::cached(binary, cache_dir, "flags", ask).await.unwrap_or_default();
    names.lines().map(str::to_string).collect()
}

/// What `binary arg` prints (stdout and stderr), if it ran.
async fn ask(binary: &Path, arg: &str) -> Option<String> {
    let mut cmd = Command::new(binary);
    cmd.arg(arg);
    run_captured(&mut cmd, None, OUTPUT_LIMIT).await.ok().map(|(_, out, err)| out + &err)
}

/// Flag names from `runsc flags` output, whose flag lines look like `  -name type`.
pub fn parse_flag_names(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("  -"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// What runsc's words mean. Its state lookups fail with "file does not exist" (`loading
/// container: file does not exist`); a dead sandbox answers "sandbox is not running", and one
/// that is exiting refuses connections to its control server.
pub fn classify(message: &str) -> RunscFailure {
    let loading = message.contains("loading container") || message.contains("loading sandbox");
    if loading && message.contains("does not exist") {
        RunscFailure::Gone
    } else if ["sandbox is not running", "connecting to control server", "in state stopped", "no such process"].iter().any(|s| message.contains(s)) {
        RunscFailure::NotRunning
    } else {
        RunscFailure::Refused
    }
}

/// Room past a capture's limit, so that a writer's chunk (runsc copies in 32 KiB) that crosses
/// the limit still lands and tells the reader the output was cut.
const CUT_MARGIN: u64 = 64 * 1024;

/// An anonymous file that holds at most `limit` bytes and a margin: it is made that size,
/// sparse, and sealed against growing, so a writer that goes on gets EPERM instead of filling
/// the shim's memory.
fn memfd(name: &str, limit: u64) -> std::io::Result<File> {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: memfd_create returns a new fd we own, or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is valid and owned by nobody else.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.set_len(limit + CUT_MARGIN)?;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_ADD_SEALS, libc::F_SEAL_GROW) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// The most of a runsc call's output, or of its log, that reaches the shim's memory (and from
/// there errors and containerd's log): what runsc relays can come from the sandbox's workload
/// (`agent status` in a Docker sandbox, whose root can replace it), which must not grow the shim.
pub const OUTPUT_LIMIT: u64 = 64 * 1024;
/// `runsc ps --format=json`: the container's pids, a few bytes each (more than 100000 processes).
const PS_LIMIT: u64 = 1024 * 1024;

/// What a child wrote to a `memfd` of `limit`: its text, cut at `limit` (and said to be). The
/// file is sparse, zeros where nothing was written, and the writer's offset tells nothing
/// (gVisor writes a process's output at its own offsets), so the text ends at its last byte
/// that is not NUL: runsc's and the agent's outputs are text.
fn read_capped(f: &mut File, limit: u64) -> String {
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0)).and_then(|_| f.take(limit + CUT_MARGIN).read_to_end(&mut buf));
    let written = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    buf.truncate(written.min(limit as usize));
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if written as u64 > limit {
        s.push_str(&format!("\n... (cut at {limit} bytes)"));
    }
    s
}

/// The error lines runsc appended to its JSON log after `offset`. The log mixes JSON records
/// with the plain text of runsc's fatal error; the plain text is the most precise, so it wins.
/// At most the last `OUTPUT_LIMIT` bytes are read: the fatal error comes last.
pub fn errors_since(log: &Path, offset: u64) -> String {
    let Ok(mut f) = File::open(log) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = offset.max(len.saturating_sub(OUTPUT_LIMIT));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.take(OUTPUT_LIMIT).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    // Cut into a record: start at the next line.
    let text = if from > offset { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
    parse_errors(text)
}

pub fn parse_errors(text: &str) -> String {
    #[derive(Deserialize)]
    struct Record {
        msg: String,
        level: String,
    }
    let (mut plain, mut json) = (Vec::<String>::new(), Vec::<String>::new());
    let mut rest = text;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        if rest.starts_with('{') {
            let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Record>();
            if let Some(Ok(r)) = it.next() {
                if r.level == "error" || r.level == "fatal" {
                    json.push(r.msg);
                }
                rest = &rest[it.byte_offset()..];
                continue;
            }
        }
        let end = rest.find('\n').unwrap_or(rest.len());
        let end = rest[..end].find('{').filter(|&i| i > 0).unwrap_or(end);
        plain.push(rest[..end].trim().to_string());
        rest = &rest[end..];
    }
    let lines = if plain.is_empty() { json } else { plain };
    let mut seen = Vec::new();
    for l in lines.into_iter().filter(|l| !l.is_empty()) {
        if !seen.contains(&l) {
            seen.push(l);
        }
    }
    seen.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> RunscFlags {
        RunscFlags::new("/run/beta9/abc".into(), "/b/log.json".into(), Network::None)
    }

    fn joined(f: &RunscFlags) -> String {
        f.args().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn always_ignores_cgroups_and_defaults_to_systrap() {
        let s = joined(&flags());
        assert!(s.contains("--ignore-cgroups"));
        assert!(!s.contains("--oci-seccomp"), "the shim applies seccomp itself (seccomp.rs)");
        assert!(s.contains("--platform=systrap"));
        assert!(s.contains("--root /run/beta9/abc"));
        assert!(s.contains("--network=none"));
        assert!(s.contains("--log-format=json --log /b/log.json"));
        assert!(!s.contains("--net-raw"));
        assert!(!s.contains("--debug"));
        assert!(!s.contains("--nvproxy"));
    }

    #[test]
    fn optional_flags() {
        let mut f = flags();
        f.net_raw = true;
        f.allow_packet_socket_write = true;
        f.network = Network::Host;
        f.debug_log_dir = Some("/tmp/dbg".into());
        f.extra = vec!["--overlay2=none".into()];
        let s = joined(&f);
        assert!(s.contains("--network=host"));
        assert!(s.contains("--net-raw --allow-packet-socket-write"));
        assert!(s.contains("--debug --debug-log=/tmp/dbg/"));
        assert!(s.ends_with("--overlay2=none"), "extra flags come last: {s}");
    }

    #[test]
    fn gpu_flags() {
        let mut f = flags();
        f.nvproxy = true;
        assert!(joined(&f).contains("--nvproxy") && !joined(&f).contains("--nvproxy-docker"));
        f.nvproxy_docker = true;
        assert!(joined(&f).contains("--nvproxy --nvproxy-docker"));
    }

    #[test]
    fn error_text_prefers_runsc_fatal_line() {
        let log = concat!(
            r#"{"msg":"starting container: failed to load /nope: no such file","level":"error","time":"t"}"#,
            r#"{"msg":"fine","level":"info","time":"t"}"#,
            "\nstarting container: failed to load /nope: no such file\n"
        );
        assert_eq!(parse_errors(log), "starting container: failed to load /nope: no such file");
        let only_json = r#"{"msg":"a","level":"error","time":"t"}{"msg":"b","level":"warning","time":"t"}"#;
        assert_eq!(parse_errors(only_json), "a");
        assert_eq!(parse_errors(""), "");
    }

    #[test]
    fn runsc_words_are_classified_once() {
        assert_eq!(classify("loading container: file does not exist"), RunscFailure::Gone);
        assert_eq!(classify("loading container \"x\": file does not exist"), RunscFailure::Gone);
        assert_eq!(classify("sandbox is not running"), RunscFailure::NotRunning);
        let refused = "signaling container \"x\": connecting to control server at PID 7: connection refused";
        assert_eq!(classify(refused), RunscFailure::NotRunning);
        assert_eq!(classify("cannot signal a process inside container \"x\" in state stopped"), RunscFailure::NotRunning);
        let ended = "signaling process in container \"x\" PID 0: no such process";
        assert_eq!(classify(ended), RunscFailure::NotRunning, "its init has exited");
        assert_eq!(classify("permission denied"), RunscFailure::Refused);
        assert_eq!(classify("mount source /x does not exist"), RunscFailure::Refused, "not about the container");
    }

    #[test]
    fn captured_output_is_cut_at_its_limit() {
        let mut f = memfd("test", 100).unwrap();
        std::io::Write::write_all(&mut f, &[b'x'; 60]).unwrap();
        assert_eq!(read_capped(&mut f, 100), "x".repeat(60));
        let mut f = memfd("test", 10).unwrap();
        std::io::Write::write_all(&mut f, &[b'x'; 100]).unwrap();
        let e = std::io::Write::write_all(&mut f, &vec![b'x'; CUT_MARGIN as usize]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "the file cannot grow past its limit and margin");
        let cut = read_capped(&mut f, 10);
        assert!(cut.starts_with(&"x".repeat(10)) && cut.ends_with("(cut at 10 bytes)") && !cut.contains("xxxxxxxxxxx"), "{cut}");
        // Written where the writer chose, its offset unmoved (as gVisor writes a process's output).
        let mut f = memfd("test", 100).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"hello\n", 0).unwrap();
        assert_eq!(read_capped(&mut f, 100), "hello\n");
    }

    #[test]
    fn a_flood_from_the_sandbox_is_cut_before_it_reaches_memory() {
        // What `runsc exec ... /.beta9/agent status` relays when the workload replaced it: the
        // capture (run_captured's) holds the limit, and the writer is stopped there.
        let mut out = memfd("runsc-stdout", OUTPUT_LIMIT).unwrap();
        let status = Command::new("yes").arg("flood").stdout(out.try_clone().unwrap()).status().unwrap();
        assert!(!status.success(), "yes could not write past the limit");
        assert_eq!(out.metadata().unwrap().len(), OUTPUT_LIMIT + CUT_MARGIN, "the file never grew");
        let text = read_capped(&mut out, OUTPUT_LIMIT);
        assert!(text.len() <= OUTPUT_LIMIT as usize + 40 && text.ends_with("(cut at 65536 bytes)"), "{} bytes", text.len());
    }

    #[test]
    fn only_the_tail_of_a_long_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        let filler = "{\"msg\":\"chatter\",\"level\":\"info\"}\n".repeat((2 * OUTPUT_LIMIT as usize) / 36);
        std::fs::write(&log, format!("{filler}{{\"msg\":\"the cause\",\"level\":\"error\"}}\n")).unwrap();
        assert_eq!(errors_since(&log, 0), "the cause");
    }

    #[test]
    fn flag_names_are_read_from_runsc_flags() {
        let text = "  -allow-packet-socket-write\n    \tallow writes\n  -net-raw runsc exec\n    \tenable raw sockets\n  -platform string\n";
        let names = parse_flag_names(text);
        assert!(names.contains("allow-packet-socket-write") && names.contains("net-raw") && names.contains("platform"));
        assert!(!names.contains("allow"), "{names:?}");
    }
}
