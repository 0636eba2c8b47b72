//! One container: its init process, its execs, and the runsc calls that change them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use log::{info, warn};
use oci_spec::runtime::Spec;
use tokio::sync::oneshot;

use crate::{
    annotations::SandboxAnnotations,
    config::Config,
    error::{Error, Result},
    process::{Exit, Process, Status},
    reaper::Reaper,
    runsc::{self, Network, ProcessStdio, Runsc, RunscFlags},
    spec::{self, Role},
    stdio::{ProcessIo, StdioPaths},
};

/// Where the shim's own files for a container live, inside its bundle.
const ROOTFS: &str = "rootfs";
const INIT_PID: &str = "init.pid";
const RUNSC_LOG: &str = "runsc.log.json";
/// Records how runsc was called, so the `delete` action can clean up after a shim died.
const RUNSC_RECORD: &str = "beta9-runsc.json";

#[derive(Clone, Debug)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// What Create needs, free of protocol types.
#[derive(Clone, Debug)]
pub struct CreateConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    pub spec: Spec,
    pub role: Role,
    /// For a pod's app container: how runsc runs the pod's sandbox, which it joins.
    pub pod: Option<Runsc>,
}

/// What Create needs besides the request: the operator's config and where containerd is.
#[derive(Clone, Debug)]
pub struct SandboxContext {
    pub config: Config,
    pub containerd_address: String,
    pub namespace: String,
}

/// How runsc was called for a sandbox, kept in its bundle for the `delete` action.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RunscRecord {
    pub binary: PathBuf,
    pub root: PathBuf,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub role: Role,
    pub runsc: Runsc,
    pub init: Process,
    pub execs: HashMap<String, Exec>,
    /// The init's exit, taken by whoever watches it once the task started. A pod's app
    /// container gets it at start, from `runsc wait`.
    pub init_exit: Option<oneshot::Receiver<i32>>,
    /// A pod's app container's stdio, handed to `runsc start`.
    start_stdio: Option<ProcessStdio>,
    /// How long Start waits for the sandbox's dockerd to answer, when it waits at all.
    pub docker_wait: Option<Duration>,
    /// Paused with `runsc pause`: every process of the sandbox is frozen.
    pub paused: bool,
    /// The spec has poststop hooks, which `runsc delete` runs.
    poststop_hooks: bool,
    exec_seq: u64,
}

pub struct Exec {
    pub process: Process,
    /// The OCI process, as JSON, that runsc exec runs.
    pub spec: Vec<u8>,
}

/// The runsc of a new sandbox: flags from the spec, the config and the annotations.
async fn sandbox_runsc(cfg: &CreateConfig, ctx: &SandboxContext, annotations: &SandboxAnnotations) -> Result<Runsc> {
    let config = &ctx.config;
    let binary = find_program(&config.runsc.binary).ok_or_else(|| {
        Error::NotFound(format!(
            "runsc binary {:?} was not found ([runsc] binary in the {})",
            config.runsc.binary,
            config.origin()
        ))
    })?;
    let network = config.network()?.unwrap_or_else(|| spec::network_for(&cfg.spec));
    if network == Network::Host && !config.policy.allow_host_network {
        return Err(Error::InvalidArgument(format!(
            "the host's network is not allowed by the runtime's policy: [policy] allow_host_network = false ({}); give the container a network namespace",
            config.origin()
        )));
    }
    let root = spec::runsc_root(&config.runsc.root, &ctx.containerd_address, &ctx.namespace, &cfg.id);
    let mut flags = RunscFlags::new(root, cfg.bundle.join(RUNSC_LOG), network);
    flags.platform = config.runsc.platform.clone();
    flags.debug_log_dir = config.runsc.debug_log_dir.clone();
    flags.extra = config.runsc.extra_flags.clone();
    if annotations.docker.is_some() {
        flags.net_raw = true;
        flags.allow_packet_socket_write = runsc::known_flags(&binary).await.contains("allow-packet-socket-write");
    }
    flags.nvproxy = annotations.gpu;
    flags.nvproxy_docker = annotations.gpu && annotations.docker.is_some();
    Ok(Runsc::new(binary, flags))
}

/// The pod's runsc for one of its app containers: the sandbox's flags were fixed when the pod
/// started, from the pod's annotations, so a container cannot ask for more than the pod has.
fn pod_runsc(pod: &Runsc, bundle: &Path, annotations: &SandboxAnnotations) -> Result<Runsc> {
    let pod_level = |key: &str| {
        Error::FailedPrecondition(format!(
            "{key}=true needs the pod sandbox to be created with it: put it in the pod's annotations \
(containerd passes them on with the runtime's pod_annotations setting)"
        ))
    };
    if annotations.docker.is_some() && !pod.flags.net_raw {
        return Err(pod_level(crate::annotations::DOCKER));
    }
    if annotations.gpu && !pod.flags.nvproxy {
        return Err(pod_level(crate::annotations::GPU));
    }
    let mut runsc = pod.clone();
    runsc.flags.log = bundle.join(RUNSC_LOG);
    Ok(runsc)
}

/// dockerd's arguments: under the host's network gVisor lets it neither make a bridge nor turn
/// on forwarding, so its containers use `--network host` there.
fn docker_args(network: Network, config: &Config, annotated: &[String]) -> Vec<String> {
    let host: &[&str] = if network == Network::Host { &["--bridge=none", "--ip-forward=false"] } else { &[] };
    host.iter().map(|a| a.to_string()).chain(config.docker.extra_args.iter().cloned()).chain(annotated.iter().cloned()).collect()
}

impl Container {
    pub async fn create(cfg: CreateConfig, ctx: &SandboxContext) -> Result<Container> {
        let config = &ctx.config;
        let mut spec = cfg.spec.clone();
        let annotations = SandboxAnnotations::parse(spec.annotations().as_ref().unwrap_or(&HashMap::new()), config)?;
        if !annotations.agent && spec.process().as_ref().and_then(|p| p.args().as_ref()).is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument("the spec's process has no args".into()));
        }
        let agent_binary = config.agent.binary.clone().unwrap_or_else(default_agent);
        if annotations.agent && !agent_binary.is_file() {
            return Err(Error::NotFound(format!(
                "the sandbox agent {} does not exist ([agent] binary in the {}; or set {}=false to run without it)",
                agent_binary.display(),
                config.origin(),
                crate::annotations::AGENT
            )));
        }
        let runsc = match &cfg.pod {
            Some(pod) => pod_runsc(pod, &cfg.bundle, &annotations)?,
            None => sandbox_runsc(&cfg, ctx, &annotations).await?,
        };
        let root = runsc.flags.root.clone();
        let rootfs = cfg.bundle.join(spec.root().as_ref().map(|r| r.path().clone()).unwrap_or(ROOTFS.into()));
        let joins_pod = cfg.pod.is_some();
        let poststop_hooks = spec.hooks().as_ref().and_then(|h| h.poststop().as_ref()).is_some_and(|p| !p.is_empty());
        // Pod annotations reach the pause too: there they only shape the sandbox (runsc's
        // flags, above); dockerd runs in the pod's app containers.
        let docker = annotations.docker.clone().filter(|_| cfg.role != Role::PodSandbox);

        let result = async {
            mount_rootfs(&cfg.rootfs, &cfg.bundle.join(ROOTFS))?;
            spec::check_process_binary(&spec, &rootfs)?;
            if docker.is_some() {
                spec::check_image_has(&spec, &rootfs, "dockerd", crate::annotations::DOCKER)?;
                spec::add_capabilities(&mut spec, &spec::DOCKER_CAPABILITIES)?;
            }
            if annotations.agent {
                let agent_args = spec::AgentArgs {
                    keepalive: annotations.keepalive,
                    docker: docker.as_ref().map(|d| spec::DockerArgs {
                        args: docker_args(runsc.flags.network, config, &d.args),
                        tmpfs_size: config.docker.tmpfs_size.clone(),
                    }),
                };
                spec::inject_agent(&mut spec, &agent_binary, &agent_args)?;
                spec::save(&spec, &cfg.bundle)?;
            }
            let record = RunscRecord { binary: runsc.binary.clone(), root: root.clone() };
            std::fs::write(cfg.bundle.join(RUNSC_RECORD), serde_json::to_vec(&record).unwrap_or_default())
                .map_err(Error::io("record how runsc is called"))?;
            std::fs::create_dir_all(&root).map_err(Error::io(format!("create {}", root.display())))?;
            let (child_stdio, mut io) = ProcessIo::open(&cfg.stdio)?;
            // A pod's app container gets a terminal at create and its pipes at start.
            let (create_stdio, start_stdio) = match (joins_pod, child_stdio.console_socket.is_some()) {
                (true, false) => (ProcessStdio::null(), Some(child_stdio)),
                _ => (child_stdio, None),
            };
            let mark = Reaper::get().mark();
            let pid_file = cfg.bundle.join(INIT_PID);
            runsc.create(&cfg.id, &cfg.bundle, &pid_file, create_stdio).await?;
            let pid = read_pid(&pid_file);
            if joins_pod {
                // runsc wrote the sandbox's pid: gone before anything can fail, so no teardown of
                // this container can kill its pod.
                let _ = std::fs::remove_file(&pid_file);
            }
            io.attach_console().await?;
            let pid = pid?;
            let exit = (!joins_pod).then(|| Reaper::get().watch(pid as i32, mark));
            Ok::<_, Error>((pid, exit, io, start_stdio))
        }
        .await;

        match result {
            Ok((pid, exit, io, start_stdio)) => {
                let mut init = Process::new(cfg.stdio);
                init.pid = pid;
                init.io = io;
                info!("created {} (sandbox pid {pid}, {:?}, network {:?})", cfg.id, cfg.role, runsc.flags.network);
                Ok(Container {
                    id: cfg.id,
                    bundle: cfg.bundle,
                    role: cfg.role,
                    runsc,
                    init,
                    execs: HashMap::new(),
                    init_exit: exit,
                    start_stdio,
                    docker_wait: docker.map(|d| d.wait).filter(|w| !w.is_zero()),
                    paused: false,
                    poststop_hooks,
                    exec_seq: 0,
                })
            }
            Err(e) => {
                teardown(&runsc, &cfg.id, &cfg.bundle).await;
                Err(e)
            }
        }
    }

    pub async fn start(&mut self) -> Result<u32> {
        self.init.can_start()?;
        let joins_pod = matches!(self.role, Role::PodContainer { .. });
        self.runsc.start(&self.id, self.start_stdio.take()).await?;
        if joins_pod {
            // Started now, so `runsc wait` finds it running (or already exited: it reports that too).
            let (tx, rx) = oneshot::channel();
            let (runsc, id) = (self.runsc.clone(), self.id.clone());
            tokio::spawn(async move {
                let code = runsc.wait(&id).await.unwrap_or_else(|e| {
                    // The sandbox went away under it: the container died with it.
                    info!("{id}: {e}; reporting it killed");
                    128 + libc::SIGKILL
                });
                let _ = tx.send(code);
            });
            self.init_exit = Some(rx);
        }
        self.init.status = Status::Running;
        Ok(self.init.pid)
    }

    /// Destroys a container whose start failed (for a root, its whole sandbox); returns its exit.
    pub async fn abandon(&mut self) -> oneshot::Receiver<i32> {
        if let Err(e) = self.runsc.delete(&self.id).await {
            warn!("runsc delete {} after a failed start: {e}", self.id);
        }
        // A root's exit comes from its sandbox process dying; a pod's container has none.
        self.init_exit.take().unwrap_or_else(|| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(128 + libc::SIGKILL);
            rx
        })
    }

    /// Waits until the agent reports the sandbox's dockerd answering, at most `wait`.
    pub async fn wait_docker_ready(runsc: &Runsc, id: &str, wait: Duration) -> Result<()> {
        let secs = format!("{:.3}", wait.as_secs_f64());
        let args = [spec::AGENT_PATH, "status", "--wait", &secs];
        let query = runsc.exec_output(id, &args);
        // The agent answers by itself at `wait`; this bound only covers a sandbox that hangs.
        match tokio::time::timeout(wait.saturating_add(Duration::from_secs(10)), query).await {
            Err(_) => Err(Error::DeadlineExceeded(format!("dockerd did not answer within {wait:?} (the agent did not reply)"))),
            Ok(Err(e)) => Err(e),
            Ok(Ok((0, _))) => Ok(()),
            Ok(Ok((_, status))) => Err(Error::FailedPrecondition(not_ready_message(&status, wait))),
        }
    }

    pub async fn pause(&mut self) -> Result<()> {
        if let Role::PodContainer { sandbox_id } = &self.role {
            return Err(Error::FailedPrecondition(format!(
                "{} runs in pod sandbox {sandbox_id}, which runsc pauses as a whole: pause the sandbox's task",
                self.id
            )));
        }
        if self.init.status != Status::Running || self.paused {
            return Err(Error::FailedPrecondition(format!("container {} is not running", self.id)));
        }
        self.runsc.pause(&self.id).await?;
        self.paused = true;
        Ok(())
    }

    pub async fn resume(&mut self) -> Result<()> {
        if !self.paused {
            return Err(Error::FailedPrecondition(format!("container {} is not paused", self.id)));
        }
        self.runsc.resume(&self.id).await?;
        self.paused = false;
        Ok(())
    }

    pub async fn stats(&self) -> Result<crate::stats::Stats> {
        if self.init.status != Status::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", self.id)));
        }
        crate::stats::parse(&self.runsc.stats(&self.id).await?)
    }

    pub fn add_exec(&mut self, exec_id: &str, stdio: StdioPaths, spec: Vec<u8>) -> Result<()> {
        if self.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!("exec {exec_id} already exists in {}", self.id)));
        }
        if self.init.status != Status::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", self.id)));
        }
        if self.paused {
            return Err(Error::FailedPrecondition(format!("container {} is paused", self.id)));
        }
        self.execs.insert(exec_id.to_string(), Exec { process: Process::new(stdio), spec });
        Ok(())
    }

    /// Starts an exec; returns its host pid and its exit.
    pub async fn start_exec(&mut self, exec_id: &str) -> Result<(u32, oneshot::Receiver<i32>)> {
        self.exec_seq += 1;
        let base = self.bundle.join(format!("exec-{}", self.exec_seq));
        let (spec_file, pid_file, ipid_file) =
            (base.with_extension("json"), base.with_extension("pid"), base.with_extension("ipid"));
        let exec = self.exec_mut(exec_id)?;
        exec.process.can_start()?;
        std::fs::write(&spec_file, &exec.spec).map_err(Error::io("write the exec's process spec"))?;
        let (child_stdio, mut io) = ProcessIo::open(&exec.process.stdio)?;
        let mark = Reaper::get().mark();
        let started = self.runsc.exec(&self.id, &spec_file, &pid_file, &ipid_file, child_stdio).await;
        let _ = std::fs::remove_file(&spec_file);
        started?;
        let attached = io.attach_console().await;
        let pid = read_pid(&pid_file);
        let internal = read_pid(&ipid_file).ok();
        let _ = (std::fs::remove_file(&pid_file), std::fs::remove_file(&ipid_file));
        if let Err(e) = attached {
            // Running without its terminal: nobody could talk to it, so it goes.
            if let Some(internal) = internal {
                let _ = self.runsc.kill(&self.id, libc::SIGKILL as u32, false, Some(internal)).await;
            }
            return Err(e);
        }
        let pid = pid?;
        let exit = Reaper::get().watch(pid as i32, mark);
        let exec = self.exec_mut(exec_id)?;
        exec.process.pid = pid;
        exec.process.internal_pid = internal;
        exec.process.io = io;
        exec.process.status = Status::Running;
        Ok((pid, exit))
    }

    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).map(|e| &e.process).ok_or_else(|| not_found(exec_id))
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.exec_mut(exec_id).map(|e| &mut e.process)
    }

    fn exec_mut(&mut self, exec_id: &str) -> Result<&mut Exec> {
        self.execs.get_mut(exec_id).ok_or_else(|| not_found(exec_id))
    }

    /// Signals a process. Returns the exit to report when killing destroyed a never-started
    /// init (runsc refuses to signal a created container; runc allows it).
    pub async fn kill(&mut self, exec_id: &str, signal: u32, all: bool) -> Result<Option<Exit>> {
        let (status, internal) = {
            let p = self.process(exec_id)?;
            (p.status, p.internal_pid)
        };
        match status {
            Status::Stopped => Err(Error::NotFound(format!("process {} already finished", self.name(exec_id)))),
            Status::Created if exec_id.is_empty() => {
                self.runsc.delete(&self.id).await?;
                Ok(Some(self.init.set_exited(128 + signal as i32)))
            }
            Status::Created => Ok(Some(self.process_mut(exec_id)?.set_exited(128 + signal as i32))),
            Status::Running => {
                // runsc refuses to signal a paused sandbox; runc's shim kills paused tasks.
                if self.paused {
                    self.resume().await?;
                }
                let pid = if exec_id.is_empty() { None } else { internal };
                match self.runsc.kill(&self.id, signal, all && exec_id.is_empty(), pid).await {
                    // Already exiting: its exit is on its way.
                    Err(Error::Runsc { message, .. }) if runsc::is_gone(&message) => Ok(None),
                    other => other.map(|_| None),
                }
            }
        }
    }

    /// Removes an exec, returning its pid and exit.
    pub fn delete_exec(&mut self, exec_id: &str) -> Result<(u32, Option<Exit>)> {
        let p = &self.exec_mut(exec_id)?.process;
        p.can_delete()?;
        let r = (p.pid, p.exit());
        self.execs.remove(exec_id);
        Ok(r)
    }

    /// Destroys the sandbox and everything the shim made for it; the init must not be running.
    pub async fn delete(&mut self) -> Result<(u32, Option<Exit>)> {
        self.init.can_delete()?;
        // A sandbox of its own that has ended leaves only state behind; runsc runs poststop hooks.
        let ended = self.role == Role::Single && self.init.exit().is_some() && !self.poststop_hooks;
        if ended && remove_ended_sandbox(&self.runsc, &self.id, &self.bundle) {
            release(&self.runsc, &self.bundle, true);
        } else {
            teardown(&self.runsc, &self.id, &self.bundle).await;
        }
        self.init.io = ProcessIo::default();
        self.execs.clear();
        Ok((self.init.pid, self.init.exit()))
    }

    fn name(&self, exec_id: &str) -> String {
        if exec_id.is_empty() { self.id.clone() } else { format!("{}/{exec_id}", self.id) }
    }
}

/// One line for the client from the agent's status report: what went wrong and dockerd's own
/// last words.
pub fn not_ready_message(status: &str, wait: Duration) -> String {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let cause = match (field("dockerd:"), field("error:")) {
        (_, Some(error)) => error.to_string(),
        (Some("starting"), None) => format!("dockerd did not answer /_ping within {wait:?}"),
        (Some(phase), None) => format!("dockerd is {phase}"),
        (None, None) => format!("the agent's status could not be read: {}", status.trim()),
    };
    let tail: Vec<&str> = status.lines().skip_while(|l| *l != "last log lines:").skip(1).map(str::trim).collect();
    let tail = &tail[tail.len().saturating_sub(10)..];
    if tail.is_empty() {
        return cause;
    }
    format!("{cause}; dockerd's last log lines: {}", tail.join(" | "))
}

fn not_found(exec_id: &str) -> Error {
    Error::NotFound(format!("process {exec_id} does not exist"))
}

fn read_pid(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    s.trim().parse().map_err(|e| Error::Other(format!("bad pid in {}: {e}", path.display())))
}

fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(Error::io(format!("create {}", target.display())))?;
    // On a thread of its own: for an overlay with many layers the crate unshares the calling
    // thread's cwd and chdirs it into the snapshots, which must not stick to the runtime's thread.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                for m in mounts {
                    containerd_shim::mount::mount_rootfs(Some(m.kind.as_str()), Some(m.source.as_str()), &m.options, target)
                        .map_err(|e| Error::Other(format!("mount rootfs ({} {}): {e}", m.kind, m.source)))?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Other("mounting the rootfs panicked".into())))
    })
}

/// How runsc was called for the container of this bundle, if Create got that far.
pub fn recorded_runsc(bundle: &Path) -> Option<RunscRecord> {
    serde_json::from_slice(&std::fs::read(bundle.join(RUNSC_RECORD)).ok()?).ok()
}

/// A program given as a path, or looked up on the shim's PATH like a shell would.
fn find_program(program: &Path) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    spec::find_executable(Path::new("/"), &program.to_string_lossy(), &path, Path::new("/"))
}

/// The agent ships next to the shim's own executable.
pub fn default_agent() -> PathBuf {
    std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("beta9-sandbox-agent"))).unwrap_or_default()
}

/// Removes the sandbox, the rootfs mount and the runsc root, whatever state they are in.
/// Used by Delete, by a failed Create, and by the `delete` action after a shim died.
pub async fn teardown(runsc: &Runsc, id: &str, bundle: &Path) {
    let deleted = runsc.delete(id).await;
    if let Err(e) = &deleted {
        warn!("runsc delete {id}: {e}");
    }
    release(runsc, bundle, deleted.is_ok());
}

/// What is left besides runsc's state: the sandbox process, the mount, the root, and, once the
/// state is gone, the record.
fn release(runsc: &Runsc, bundle: &Path, state_gone: bool) {
    // A sandbox runsc no longer knows about must not outlive its state.
    if let Ok(pid) = read_pid(&bundle.join(INIT_PID)) {
        kill_if_runsc(pid, &runsc.flags.root);
    }
    unmount_rootfs(bundle);
    let root = &runsc.flags.root;
    // Only empty: other containers of the same sandbox may still live in it.
    if std::fs::remove_dir(root).is_err() && root.exists() {
        let leftovers = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
        if leftovers > 0 {
            info!("runsc root {} still holds {leftovers} entries", root.display());
        }
    }
    if state_gone {
        // Last: without it the delete action knows that no runsc state is left to remove.
        let _ = std::fs::remove_file(bundle.join(RUNSC_RECORD));
    }
}

/// Does what `runsc delete` does for a sandbox that ended by itself (its gofer exits with it),
/// without the 20 ms runsc takes just to start: removes the runsc root it had alone, the gofer if
/// still there, and gVisor's overlay file in the rootfs. False if the root holds anything but the
/// one container's state: then runsc must do it.
fn remove_ended_sandbox(runsc: &Runsc, id: &str, bundle: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct State {
        #[serde(rename = "goferPid")]
        gofer_pid: Option<u32>,
    }
    // An operator's --overlay2 may put overlay files in other places than the rootfs.
    if runsc.flags.extra.iter().any(|f| f.contains("overlay")) {
        return false;
    }
    let root = &runsc.flags.root;
    let Ok(entries) = std::fs::read_dir(root) else { return false };
    let states: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "state")).collect();
    let [state] = &states[..] else { return false };
    let Some(state) = std::fs::read(state).ok().and_then(|b| serde_json::from_slice::<State>(&b).ok()) else {
        return false;
    };
    if let Some(pid) = state.gofer_pid {
        kill_if_runsc(pid, root);
    }
    let _ = std::fs::remove_file(bundle.join(ROOTFS).join(format!(".gvisor.filestore.{id}")));
    std::fs::remove_dir_all(root).is_ok()
}

pub fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join(ROOTFS);
    while nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}

/// Kills `pid` if it is a runsc process of this root: a pid read from a file may have been
/// reused by now, even by another sandbox's runsc.
fn kill_if_runsc(pid: u32, root: &Path) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = format!("--root={}", root.display());
    if cmdline.starts_with(b"runsc") && cmdline.split(|b| *b == 0).any(|a| a == ours.as_bytes()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_sandbox_is_removed_only_when_its_root_holds_just_its_state() {
        let dir = std::env::temp_dir().join(format!("beta9-ended-{}", std::process::id()));
        let (root, bundle) = (dir.join("root"), dir.join("bundle"));
        std::fs::create_dir_all(bundle.join(ROOTFS)).unwrap();
        let runsc = Runsc::new("runsc".into(), RunscFlags::new(root.clone(), bundle.join(RUNSC_LOG), Network::None));
        assert!(!remove_ended_sandbox(&runsc, "c", &bundle), "no root: runsc decides");

        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("c_sandbox:c.state"), r#"{"id":"c","goferPid":999999999}"#).unwrap();
        std::fs::write(root.join("c_sandbox:d.state"), "{}").unwrap();
        assert!(!remove_ended_sandbox(&runsc, "c", &bundle), "two containers' state: runsc decides");
        assert!(root.exists());

        std::fs::remove_file(root.join("c_sandbox:d.state")).unwrap();
        std::fs::write(root.join("runsc-c.sock"), "").unwrap();
        std::fs::write(bundle.join(ROOTFS).join(".gvisor.filestore.c"), "").unwrap();
        assert!(remove_ended_sandbox(&runsc, "c", &bundle));
        assert!(!root.exists() && !bundle.join(ROOTFS).join(".gvisor.filestore.c").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn not_ready_message_carries_the_cause_and_dockerd_words() {
        let status = "dockerd: failed\npid: -\nrestarts: 0\niptables: off\nlog: /var/log/beta9/dockerd.log\n\
error: dockerd exited with status 125 before it was ready\nlast log lines:\n  unknown flag: --no-such-flag\n  See 'dockerd --help'.\n";
        let m = not_ready_message(status, Duration::from_secs(60));
        assert_eq!(
            m,
            "dockerd exited with status 125 before it was ready; dockerd's last log lines: unknown flag: --no-such-flag | See 'dockerd --help'."
        );
        let m = not_ready_message("dockerd: starting\npid: 7\n", Duration::from_secs(2));
        assert_eq!(m, "dockerd did not answer /_ping within 2s");
    }
}
