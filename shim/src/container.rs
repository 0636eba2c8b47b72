//! One container of a sandbox: its init, its execs and their stdio, and the runsc calls that
//! change them. What belongs to the whole sandbox (runsc's flags, pause, network, cgroup) is
//! its `Sandbox`'s, which hands each container what it needs (`Placement`, `SandboxSide`).

use std::{collections::HashMap, future::Future, os::unix::fs::DirBuilderExt, path::PathBuf, time::Duration};

use log::info;
use oci_spec::runtime::{LinuxResources, Spec};
use tokio::sync::oneshot;

use crate::{
    annotations::SandboxAnnotations,
    bundle::{self, Bundle, Ended, Mount, Record},
    config::Config,
    docker,
    error::{Error, Result, RunscFailure},
    process::{Exit, Process, Status},
    reaper::Reaper,
    runsc::{ProcessStdio, Runsc},
    spec::{self, Role},
    stdio::{ProcessIo, StdioPaths},
    timeline::Timeline,
};

/// What Create needs, free of protocol types.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: Bundle,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    pub spec: Spec,
    pub role: Role,
    /// A checkpoint to bring back instead of starting the spec's process.
    pub restore: Option<PathBuf>,
    /// Where Create's time went so far.
    pub timeline: Timeline,
}

/// Where a container goes in its sandbox.
pub struct Placement {
    /// How runsc runs it: the sandbox's flags, the container's own log.
    pub runsc: Runsc,
    /// It boots the sandbox (a container of its own, or a pod's pause), which ends with it.
    pub boots: bool,
    /// The sandbox is a pod's.
    pub pod: bool,
    /// The cgroups the shim makes for the sandbox, recorded before runsc runs (booting only).
    pub cgroups: Vec<PathBuf>,
}

/// The sandbox's part in a container's Create, which the container does not know.
pub trait SandboxSide: Sync {
    /// Right before `runsc create`: for the container that boots the sandbox its network and
    /// cgroup, for a pod's app container its share of the pod's cgroup.
    fn before_runsc_create(&self, id: &str, resources: Option<&LinuxResources>) -> impl Future<Output = Result<()>> + Send;
    /// Why runsc could not create the container, where the sandbox knows better (its limits).
    fn explain(&self, id: &str, e: Error) -> Error;
}

/// What State reports of one process.
pub struct ProcessView {
    pub pid: u32,
    pub status: Status,
    pub stdio: StdioPaths,
    pub exit: Option<Exit>,
}

/// One process of the sandbox as Pids lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessEntry {
    pub pid: u32,
    /// The exec it is, if containerd knows it as one.
    pub exec_id: Option<String>,
}

pub struct Container {
    id: String,
    bundle: Bundle,
    /// It booted its sandbox, which ends with it.
    boots: bool,
    /// Its sandbox is a pod's.
    pod: bool,
    /// The sandbox's runsc, logging to this container's bundle.
    runsc: Runsc,
    init: Process,
    execs: HashMap<String, Exec>,
    /// The init's exit until Start hands it to whoever watches it. A pod's app container gets
    /// it at start, from `runsc wait`.
    init_exit: Option<oneshot::Receiver<i32>>,
    /// A pod's app container's stdio, handed to `runsc start`.
    start_stdio: Option<ProcessStdio>,
    /// How long Start waits for the container's dockerd to answer (zero: it does not wait), with Docker on.
    docker_wait: Option<Duration>,
    /// The spec has poststop hooks, which `runsc delete` runs.
    poststop_hooks: bool,
    /// Execs run behind the container's seccomp program (runsc gives them none).
    exec_seccomp: bool,
    exec_seq: u64,
    /// The sandbox cgroup's OOM kills when this container started: more at its exit, and a
    /// SIGKILL, mean the kernel's OOM killer ended it.
    oom_kills_at_start: u64,
    /// The spec's cgroup, which runsc makes (empty) for an app container.
    cgroups_path: Option<String>,
    /// The init's pid inside the sandbox, once known (Pids).
    init_internal_pid: Option<u32>,
    /// The image layers of its rootfs, which a checkpoint records.
    layers: Vec<String>,
    /// Brought back from a checkpoint at Create: running already, Start has nothing to start.
    restored: bool,
    /// Where its create, start and exit spent their time, logged at each.
    timeline: Timeline,
}

struct Exec {
    process: Process,
    /// The OCI process, as JSON, that runsc exec runs.
    spec: Vec<u8>,
}

impl Container {
    /// Creates the container where `placement` puts it: the sandbox's first container boots it
    /// (`runsc create` of a new sandbox), a pod's app container joins it. Whatever fails, nothing
    /// of the container is left; the caller releases what its sandbox did for it.
    pub async fn create(
        mut req: CreateRequest,
        placement: Placement,
        sandbox: &impl SandboxSide,
        config: &Config,
        annotations: &SandboxAnnotations,
    ) -> Result<Container> {
        let mut spec = req.spec.clone();
        let mut timeline = std::mem::take(&mut req.timeline);
        let agent = annotations.agent_for(&req.role);
        if !agent && spec.process().as_ref().and_then(|p| p.args().as_ref()).is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument("the spec's process has no args".into()));
        }
        spec::check_supported(&spec)?;
        let agent_binary = config.agent.binary.clone().unwrap_or_else(default_agent);
        if agent && !agent_binary.is_file() {
            return Err(Error::NotFound(format!(
                "the sandbox agent {} does not exist ([agent] binary in the {}; or set {}=false to run without it)",
                agent_binary.display(),
                config.origin(),
                crate::annotations::AGENT
            )));
        }
        let Placement { mut runsc, boots, pod, cgroups } = placement;
        let rootfs = req.bundle.path().join(spec.root().as_ref().map(|r| r.path().clone()).unwrap_or("rootfs".into()));
        let poststop_hooks = spec.hooks().as_ref().and_then(|h| h.poststop().as_ref()).is_some_and(|p| !p.is_empty());
        // Pod annotations reach the pause too: there they only shape the sandbox (runsc's
        // flags); dockerd runs in the pod's app containers.
        let docker = annotations.docker.clone().filter(|_| req.role != Role::PodSandbox);
        let docker_wait = match &docker {
            Some(d) => Some(config.docker_wait(d)?),
            None => None,
        };

        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned());
        let layers = crate::snapshot::layers(&req.rootfs);
        if let Some(image) = &req.restore {
            let record = crate::snapshot::CheckpointRecord::read(image)?;
            record.check(&runsc.version().await, &layers)?;
        }
        let result = async {
            let original = spec.clone();
            let read_only = req.bundle.mount_rootfs(&req.rootfs).await?;
            timeline.mark("rootfs");
            spec::check_process_binary(&spec, &rootfs)?;
            runsc.flags.overlay = spec::overlay_medium(&spec, read_only);
            if docker.is_some() {
                spec::check_image_has(&spec, &rootfs, "dockerd", crate::annotations::DOCKER)?;
                spec::add_capabilities(&mut spec, &spec::DOCKER_CAPABILITIES)?;
                // dockerd mounts, unshares and pivots; the sandbox is the boundary it runs in.
                spec::drop_seccomp(&mut spec);
            }
            // runsc's gofer serves a read-only bind whole, submounts included; runc leaves theirs as they are.
            if spec::has_readonly_rbind(&spec) {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(Error::io("read /proc/self/mountinfo"))?;
                spec::split_readonly_bind_submounts(&mut spec, &mountinfo);
            }
            spec::mount_masked_and_readonly_paths(&mut spec, &rootfs)?;
            // runsc 20240729 installs a profile's filter on the init only (with --oci-seccomp), and
            // answers every SCMP_ACT_ERRNO with EPERM whatever its errnoRet (so clone3's ENOSYS,
            // which glibc's posix_spawn needs to fall back to clone, becomes EPERM). The shim
            // compiles the profile itself and runs the init and every exec behind it.
            let exec_seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
                Some(profile) => {
                    let program = req.bundle.path().join("seccomp.bpf");
                    std::fs::write(&program, crate::seccomp::compile(&profile)?).map_err(Error::io("write the seccomp program"))?;
                    // Read by the agent as the container's user.
                    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                        .map_err(Error::io("make the seccomp program readable"))?;
                    if !agent_binary.is_file() {
                        return Err(Error::NotFound(format!(
                            "the sandbox agent {} does not exist; it applies the container's seccomp profile ([agent] binary in the {})",
                            agent_binary.display(),
                            config.origin()
                        )));
                    }
                    spec::mount_exec_seccomp(&mut spec, &agent_binary, agent, &program)?;
                    spec::run_behind_seccomp(&mut spec)?;
                    true
                }
                None => false,
            };
            spec::match_terminal(&mut spec, req.stdio.terminal);
            if agent {
                let agent = contract::args::AgentArgs {
                    keepalive: annotations.keepalive,
                    docker: docker.as_ref().map(|d| docker::agent_docker(runsc.flags.network, config, d, &spec)),
                    command: Vec::new(),
                };
                spec::inject_agent(&mut spec, &agent_binary, &agent)?;
            }
            if spec != original {
                spec::save(&spec, req.bundle.path())?;
            }
            let root = runsc.flags.root.clone();
            req.bundle.write_record(&Record { binary: runsc.binary.clone(), root: root.clone(), cgroups })?;
            // runsc's state and control sockets: root's alone.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(Error::io(format!("create {}", root.display())))?;
            let (child_stdio, mut io) = ProcessIo::open(&req.stdio)?;
            // A pod's app container gets a terminal at create and its pipes at start.
            let (create_stdio, start_stdio) = match (boots, child_stdio.console_socket.is_some()) {
                (false, false) => (ProcessStdio::null(), Some(child_stdio)),
                _ => (child_stdio, None),
            };
            timeline.mark("spec");
            sandbox.before_runsc_create(&req.id, spec.linux().as_ref().and_then(|l| l.resources().as_ref())).await?;
            timeline.mark("limits");
            let mark = Reaper::get().mark();
            let pid_file = req.bundle.init_pid_file();
            let created = runsc.create(&req.id, req.bundle.path(), &pid_file, create_stdio).await;
            created.map_err(|e| sandbox.explain(&req.id, e))?;
            timeline.mark("runsc create");
            let pid = req.bundle.init_pid();
            if !boots {
                // runsc wrote the sandbox's pid: gone before anything can fail, so no teardown of
                // this container can kill its pod.
                let _ = std::fs::remove_file(&pid_file);
            }
            io.attach_console().await?;
            let pid = pid?;
            if let Some(image) = &req.restore {
                // Into the sandbox just created: the restored processes take over its stdio.
                runsc.restore(&req.id, image).await?;
                timeline.mark("runsc restore");
            }
            let exit = boots.then(|| Reaper::get().watch(pid as i32, mark));
            Ok::<_, Error>((pid, exit, io, start_stdio, exec_seccomp))
        }
        .await;

        match result {
            Ok((pid, exit, io, start_stdio, exec_seccomp)) => {
                let mut init = Process::new(req.stdio);
                init.pid = pid;
                init.io = io;
                info!("created {} (sandbox pid {pid}, {:?}, network {:?})", req.id, req.role, runsc.flags.network);
                Ok(Container {
                    id: req.id,
                    bundle: req.bundle,
                    boots,
                    pod,
                    runsc,
                    init,
                    execs: HashMap::new(),
                    init_exit: exit,
                    start_stdio,
                    docker_wait,
                    poststop_hooks,
                    exec_seccomp,
                    exec_seq: 0,
                    oom_kills_at_start: 0,
                    cgroups_path,
                    init_internal_pid: None,
                    layers,
                    restored: req.restore.is_some(),
                    timeline,
                })
            }
            Err(e) => {
                req.bundle.destroy(&runsc, &req.id, Ended::Unknown).await;
                Err(e)
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Whether this container booted its sandbox, which ends with it.
    pub fn is_first(&self) -> bool {
        self.boots
    }

    /// The spec's cgroup, which runsc makes (empty) for a pod's app container.
    pub fn cgroups_path(&self) -> Option<&str> {
        self.cgroups_path.as_deref()
    }

    pub fn runsc(&self) -> &Runsc {
        &self.runsc
    }

    /// The phase `phase` of this container's create, start or exit ended now.
    pub fn mark(&mut self, phase: &'static str) {
        self.timeline.mark(phase);
    }

    /// Logs the phases marked since the last step that logged (`step`: create, start, exit).
    pub fn log_timeline(&mut self, step: &str) {
        info!("timeline of {} {step}: {}", self.id, self.timeline.take_line());
    }

    /// Starts the init; returns its host pid and its exit, for the caller to watch.
    /// `oom_kills` is the sandbox cgroup's count now, which its exit is compared with.
    pub async fn start(&mut self, oom_kills: u64) -> Result<(u32, oneshot::Receiver<i32>)> {
        self.init.can_start()?;
        self.oom_kills_at_start = oom_kills;
        if !self.restored {
            self.runsc.start(&self.id, self.start_stdio.take()).await?;
            self.timeline.mark("runsc start");
        }
        let exit = match self.init_exit.take() {
            Some(exit) => exit,
            None => {
                // Started now, so `runsc wait` finds it running (or exited: it reports that too).
                let (tx, rx) = oneshot::channel();
                let (runsc, id) = (self.runsc.clone(), self.id.clone());
                tokio::spawn(async move {
                    let code = runsc.wait(&id).await.unwrap_or_else(|e| {
                        // The sandbox went away under it: the container died with it.
                        info!("{id}: {e}; reporting it killed");
                        contract::signaled(libc::SIGKILL)
                    });
                    let _ = tx.send(code);
                });
                rx
            }
        };
        self.init.status = Status::Running;
        Ok((self.init.pid, exit))
    }

    /// Destroys a container whose start failed (for the first one, its whole sandbox); its
    /// exit then arrives through what watches it. Returns that exit if nothing watches it yet.
    pub async fn abandon(&mut self) -> oneshot::Receiver<i32> {
        if let Err(e) = self.runsc.delete(&self.id).await {
            log::warn!("runsc delete {} after a failed start: {e}", self.id);
        }
        // The first container's exit comes from its sandbox process dying; an app container has none.
        self.init_exit.take().unwrap_or_else(|| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(contract::signaled(libc::SIGKILL));
            rx
        })
    }

    /// Waits for this container's dockerd to answer, when Docker is on.
    pub fn docker_ready(&self) -> Option<impl Future<Output = Result<()>> + 'static> {
        // A restored sandbox's agent is told so even when Start does not wait for dockerd.
        let wait = self.docker_wait.filter(|w| !w.is_zero() || self.restored)?;
        let (runsc, id) = (self.runsc.clone(), self.id.clone());
        let restored = self.restored;
        Some(async move { docker::wait_ready(&runsc, &id, wait, restored).await })
    }

    pub fn view(&self, exec_id: &str) -> Result<ProcessView> {
        let p = self.process(exec_id)?;
        Ok(ProcessView {
            pid: p.pid,
            status: p.status,
            stdio: p.stdio.clone(),
            exit: p.exit(),
        })
    }

    /// Resolves when the process has exited (None if it was deleted first); usable without
    /// holding the container's lock.
    pub fn exited(&self, exec_id: &str) -> impl Future<Output = Option<Exit>> + Send + 'static {
        let p = self.process(exec_id).ok().map(Process::exited);
        async move {
            match p {
                Some(p) => p.await,
                None => None,
            }
        }
    }

    /// Resolves when every exec that runs now has exited.
    pub fn execs_exited(&self) -> impl Future<Output = ()> + Send + 'static {
        let all: Vec<_> = self.execs.values().filter(|e| e.process.status == Status::Running).map(|e| e.process.exited()).collect();
        async move {
            for e in all {
                e.await;
            }
        }
    }

    /// The process's stdio, to finish once it exited; it is the caller's from now on.
    pub fn take_io(&mut self, exec_id: &str) -> Option<ProcessIo> {
        self.process_mut(exec_id).ok().map(|p| std::mem::take(&mut p.io))
    }

    /// Records a process's exit; returns its pid and the exit to publish, or None if it was
    /// deleted meanwhile.
    pub fn record_exit(&mut self, exec_id: &str, code: i32) -> Option<(u32, Exit)> {
        let p = self.process_mut(exec_id).ok()?;
        let exit = p.set_exited(code);
        Some((p.pid, exit))
    }

    pub fn close_stdin(&self, exec_id: &str) -> Result<()> {
        self.process(exec_id)?.io.close_stdin();
        Ok(())
    }

    /// ResizePty; a process without a terminal has nothing to resize.
    pub fn resize(&self, exec_id: &str, width: u32, height: u32) -> Result<()> {
        self.process(exec_id)?.io.resize(width, height)
    }

    /// Adds an exec; `paused` is whether the sandbox is paused, which refuses it.
    pub fn add_exec(&mut self, exec_id: &str, stdio: StdioPaths, spec: Vec<u8>, paused: bool) -> Result<()> {
        if self.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!("exec {exec_id} already exists in {}", self.id)));
        }
        if self.init.status != Status::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", self.id)));
        }
        if paused {
            return Err(Error::FailedPrecondition(format!("container {} is paused", self.id)));
        }
        let spec = spec::exec_process(&spec, stdio.terminal, self.exec_seccomp)?;
        self.execs.insert(exec_id.to_string(), Exec { process: Process::new(stdio), spec });
        Ok(())
    }

    /// Starts an exec; returns its host pid and its exit. A paused sandbox refuses it.
    pub async fn start_exec(&mut self, exec_id: &str, paused: bool) -> Result<(u32, oneshot::Receiver<i32>)> {
        if paused {
            return Err(Error::FailedPrecondition(format!("container {} is paused", self.id)));
        }
        self.exec_seq += 1;
        let seq = self.exec_seq;
        let (spec_file, pid_file, ipid_file) =
            (self.bundle.exec_file(seq, "json"), self.bundle.exec_file(seq, "pid"), self.bundle.exec_file(seq, "ipid"));
        let exec = self.exec_mut(exec_id)?;
        exec.process.can_start()?;
        std::fs::write(&spec_file, &exec.spec).map_err(Error::io("write the exec's process spec"))?;
        let (child_stdio, mut io) = ProcessIo::open(&exec.process.stdio)?;
        let mark = Reaper::get().mark();
        let started = self.runsc.exec(&self.id, &spec_file, &pid_file, &ipid_file, child_stdio).await;
        let _ = std::fs::remove_file(&spec_file);
        started?;
        let attached = io.attach_console().await;
        let pid = bundle::read_pid(&pid_file);
        let internal = bundle::read_pid(&ipid_file).ok();
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

    fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).map(|e| &e.process).ok_or_else(|| not_found(exec_id))
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.exec_mut(exec_id).map(|e| &mut e.process)
    }

    fn exec_mut(&mut self, exec_id: &str) -> Result<&mut Exec> {
        self.execs.get_mut(exec_id).ok_or_else(|| not_found(exec_id))
    }

    /// Whether a process runs (a signal for it needs its sandbox running).
    pub fn is_running(&self, exec_id: &str) -> Result<bool> {
        Ok(self.process(exec_id)?.status == Status::Running)
    }

    /// The ids of its execs still running, in order.
    pub fn running_execs(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.execs.iter().filter(|(_, e)| e.process.status == Status::Running).map(|(id, _)| id.as_str()).collect();
        ids.sort();
        ids
    }

    /// Signals a process; its sandbox is not paused (runsc refuses to signal a paused one).
    pub async fn kill(&mut self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let (status, internal) = {
            let p = self.process(exec_id)?;
            (p.status, p.internal_pid)
        };
        match status {
            Status::Stopped => Err(Error::NotFound(format!("process {} already finished", self.name(exec_id)))),
            // runsc refuses to signal a created container; runc allows it, and it ends there.
            Status::Created if exec_id.is_empty() => {
                self.runsc.delete(&self.id).await?;
                self.init.set_exited(contract::signaled(signal as i32));
                Ok(())
            }
            Status::Created => {
                self.process_mut(exec_id)?.set_exited(contract::signaled(signal as i32));
                Ok(())
            }
            Status::Running => {
                let pid = if exec_id.is_empty() { None } else { internal };
                match self.runsc.kill(&self.id, signal, all && exec_id.is_empty(), pid).await {
                    // Exiting: its exit is on its way.
                    Err(Error::Runsc { failure: RunscFailure::NotRunning, .. }) => Ok(()),
                    other => other,
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

    /// Destroys the container and everything the shim made for it (for the first one, its
    /// whole sandbox); the init must not be running.
    pub async fn delete(&mut self) -> Result<(u32, Option<Exit>)> {
        self.init.can_delete()?;
        // A sandbox of its own that has ended leaves only state behind; runsc runs poststop hooks.
        let ended = !self.pod && self.init.exit().is_some() && !self.poststop_hooks;
        self.bundle.destroy(&self.runsc, &self.id, if ended { Ended::ByItself } else { Ended::Unknown }).await;
        self.init.io = ProcessIo::default();
        self.execs.clear();
        Ok((self.init.pid, self.init.exit()))
    }

    /// Every process of the sandbox that this container's init sees, as Pids lists them: the
    /// init and each exec under the host pid containerd knows them by, the rest under their pid
    /// inside the sandbox.
    pub async fn pids(&mut self) -> Result<Vec<ProcessEntry>> {
        let listed = self.runsc.ps(&self.id).await?;
        // The init is the sandbox's PID 1, or a pod's app container's first process: pids only
        // grow, so the lowest of its first listing (after which it is known).
        let init = match self.init_internal_pid {
            Some(pid) => pid,
            None if self.boots => 1,
            None => *listed.iter().min().unwrap_or(&0),
        };
        self.init_internal_pid = Some(init);
        let execs: Vec<(&String, &Process)> =
            self.execs.iter().filter(|(_, e)| e.process.status == Status::Running).map(|(id, e)| (id, &e.process)).collect();
        Ok(host_pids(&listed, init, self.init.pid, &execs))
    }

    /// Whether the container has not exited: its sandbox's cgroup holds numbers from Create on.
    pub fn check_not_stopped(&self) -> Result<()> {
        if self.init.status == Status::Stopped {
            return Err(Error::FailedPrecondition(format!("container {} has exited", self.id)));
        }
        Ok(())
    }

    pub fn check_running(&self) -> Result<()> {
        if self.init.status != Status::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", self.id)));
        }
        Ok(())
    }

    /// What runsc reports of the container's usage, for a sandbox without a cgroup of the shim's.
    pub async fn stats(&self) -> Result<crate::stats::Stats> {
        self.check_running()?;
        crate::stats::parse(&self.runsc.stats(&self.id).await?)
    }

    /// The image layers of its rootfs.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// The sandbox cgroup's OOM kills when this container started.
    pub fn oom_kills_at_start(&self) -> u64 {
        self.oom_kills_at_start
    }

    fn name(&self, exec_id: &str) -> String {
        if exec_id.is_empty() { self.id.clone() } else { format!("{}/{exec_id}", self.id) }
    }
}

/// Pids' list from runsc's (pids inside the sandbox): the init (`init`) under `init_pid`, each
/// running exec under its host pid with its id, the rest as runsc numbers them. A pid inside
/// the sandbox that equals one of those host pids is left out: a client looks the task's and its
/// execs' pids up in this list, and would take that process for them (both are numbered from
/// the same range, so a long-lived sandbox can meet one).
fn host_pids(listed: &[u32], init: u32, init_pid: u32, execs: &[(&String, &Process)]) -> Vec<ProcessEntry> {
    let exec_of = |pid: u32| execs.iter().find(|(_, p)| p.internal_pid == Some(pid));
    let known: Vec<u32> = std::iter::once(init_pid).chain(execs.iter().map(|(_, p)| p.pid)).collect();
    listed
        .iter()
        .filter_map(|&pid| {
            if pid == init {
                return Some(ProcessEntry { pid: init_pid, exec_id: None });
            }
            if let Some((id, e)) = exec_of(pid) {
                return Some(ProcessEntry { pid: e.pid, exec_id: Some(id.to_string()) });
            }
            (!known.contains(&pid)).then_some(ProcessEntry { pid, exec_id: None })
        })
        .collect()
}

fn not_found(exec_id: &str) -> Error {
    Error::NotFound(format!("process {exec_id} does not exist"))
}

/// The agent ships next to the shim's own executable.
pub fn default_agent() -> std::path::PathBuf {
    std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("beta9-sandbox-agent"))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, internal: u32) -> Process {
        let mut p = Process::new(StdioPaths::default());
        (p.pid, p.internal_pid, p.status) = (pid, Some(internal), Status::Running);
        p
    }

    #[test]
    fn pids_carry_host_pids_for_the_init_and_execs_and_leave_out_what_would_read_as_them() {
        let (e1, e2) = ("e1".to_string(), "e2".to_string());
        let (x1, x2) = (exec(20757, 5), exec(20784, 6));
        let execs = [(&e1, &x1), (&e2, &x2)];
        // runsc may list an exec first.
        let got = host_pids(&[5, 1, 2, 6, 7], 1, 20706, &execs);
        let want = [(20757, Some("e1")), (20706, None), (2, None), (20784, Some("e2")), (7, None)];
        assert_eq!(got, want.map(|(pid, e)| ProcessEntry { pid, exec_id: e.map(str::to_string) }));

        // A process inside whose pid is the init's or an exec's host pid is left out.
        let pids: Vec<u32> = host_pids(&[1, 20706, 20757, 5, 9], 1, 20706, &execs).iter().map(|e| e.pid).collect();
        assert_eq!(pids, [20706, 20757, 9]);
        // A pod's app container: its init is not 1.
        let pids: Vec<u32> = host_pids(&[12, 13], 12, 20706, &[]).iter().map(|e| e.pid).collect();
        assert_eq!(pids, [20706, 13]);
    }
}
