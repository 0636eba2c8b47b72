//! One runsc sandbox and what belongs to it rather than to one of its containers: how runsc
//! runs it, whether it is paused, its network and its cgroup, and the pod's rules. A sandbox is
//! booted by its first container (a container of its own, or a pod's pause) and holds that one
//! or, for a pod, its app containers too; it ends with the first one.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::{LinuxResources, Spec};
use tokio::sync::oneshot;

use crate::{
    annotations::{self, SandboxAnnotations},
    cgroup::{Limits, SandboxCgroup},
    config::{CheckpointConfig, Config},
    container::{Container, CreateRequest, Placement, SandboxSide},
    error::{Error, Result},
    netns::Netns,
    options::CheckpointOptions,
    process::Exit,
    runsc::{self, CheckpointFlags, Runsc, RunscFlags},
    snapshot::{self, CheckpointRecord, Layer},
    spec::{self, Role},
};

/// A container of the sandbox, shared by the requests about it and its exit watcher.
pub type Shared = Arc<tokio::sync::Mutex<Container>>;

/// Where the shim runs and what containerd it serves: with an id, they name a runsc root.
#[derive(Clone, Debug)]
pub struct ShimContext {
    pub containerd_address: String,
    pub namespace: String,
}

/// The sandbox's life, driven by its first container and by Pause/Resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `runsc create` ran; nothing runs yet.
    Created,
    Running,
    /// `runsc pause`: every process of every container is frozen.
    Paused,
    /// Its first container exited: every process in it is gone.
    Stopped,
}

pub struct Sandbox {
    /// The id of the container that booted it (a pod's sandbox id).
    id: String,
    pod: bool,
    /// How runsc runs it; fixed at boot.
    runsc: Runsc,
    /// `--net-raw`, which dockerd needs, and GPUs: fixed at boot for every container in it.
    docker: bool,
    gpu: bool,
    state: Mutex<State>,
    network: Netns,
    cgroup: Option<SandboxCgroup>,
    /// Every container in it, the first one included.
    members: Mutex<HashMap<String, Shared>>,
    /// How its checkpoints are taken.
    checkpoint: CheckpointConfig,
}

impl Sandbox {
    /// Plans the sandbox that the container `id` (with `spec`) boots: runsc's flags from the
    /// config, the annotations and the spec; its network and its cgroup. Nothing runs yet.
    pub async fn plan(
        id: &str,
        bundle: &Path,
        spec: &Spec,
        role: &Role,
        config: &Config,
        annotations: &SandboxAnnotations,
        ctx: &ShimContext,
    ) -> Result<Sandbox> {
        let binary = find_program(&config.runsc.binary).ok_or_else(|| {
            Error::NotFound(format!(
                "runsc binary {:?} was not found ([runsc] binary in the {})",
                config.runsc.binary,
                config.origin()
            ))
        })?;
        let network = Netns::plan(spec, config, &binary).await?;
        let root = spec::runsc_root(&config.runsc.root, &ctx.containerd_address, &ctx.namespace, id);
        let mut flags = RunscFlags::new(root, bundle.join("runsc.log.json"), network.mode());
        flags.platform = config.runsc.platform.clone();
        flags.debug_log_dir = config.runsc.debug_log_dir.clone();
        flags.extra = config.runsc.extra_flags.clone();
        let docker = annotations.docker.is_some();
        if docker {
            flags.net_raw = true;
            flags.allow_packet_socket_write = runsc::known_flags(&binary, &config.runsc.root).await.contains("allow-packet-socket-write");
        }
        flags.nvproxy = annotations.gpu;
        flags.nvproxy_docker = annotations.gpu && docker;
        let cgroup = SandboxCgroup::plan(spec, role, config, id, &ctx.namespace)?;
        let mut runsc = Runsc::new(binary, flags);
        runsc.isolate_proc_sys_net = network.needs_private_proc_sys_net();
        runsc.cgroup = cgroup.as_ref().map(SandboxCgroup::join);
        Ok(Sandbox {
            id: id.to_string(),
            pod: *role == Role::PodSandbox,
            runsc,
            docker,
            gpu: annotations.gpu,
            state: Mutex::new(State::Created),
            network,
            cgroup,
            members: Mutex::new(HashMap::new()),
            checkpoint: config.checkpoint.clone(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_pod(&self) -> bool {
        self.pod
    }

    /// Whether `id` is the container that booted the sandbox, whose end is the sandbox's.
    pub fn is_first(&self, id: &str) -> bool {
        self.id == id
    }

    /// How runsc runs a container of this sandbox: the sandbox's flags, the container's own log;
    /// only the first container's runsc sets up the network.
    fn runsc_for(&self, id: &str, bundle: &Path) -> Runsc {
        let mut runsc = self.runsc.clone();
        runsc.flags.log = bundle.join("runsc.log.json");
        runsc.isolate_proc_sys_net &= self.is_first(id);
        runsc
    }

    pub fn cgroup(&self) -> Option<&SandboxCgroup> {
        self.cgroup.as_ref()
    }

    /// Creates a container in the sandbox: its first one boots it, a pod's app container joins.
    /// A failed Create leaves nothing of the container; the caller releases a sandbox that never
    /// booted.
    pub async fn create(&self, req: CreateRequest, config: &Config, annotations: &SandboxAnnotations) -> Result<Container> {
        let (id, boots) = (req.id.clone(), self.is_first(&req.id));
        let placement = Placement {
            runsc: self.runsc_for(&req.id, req.bundle.path()),
            boots,
            pod: self.pod,
            cgroups: self.cgroup.as_ref().filter(|_| boots).map(SandboxCgroup::created_paths).unwrap_or_default(),
        };
        let cgroups_path = req.spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned());
        let created = Container::create(req, placement, self, config, annotations).await;
        if created.is_err() && !boots {
            self.leave_cgroup(&id, cgroups_path.as_deref());
        }
        created
    }

    /// A pod's app container is gone: the pod's cgroup shrinks back, and the empty cgroup runsc
    /// made for it goes.
    fn leave_cgroup(&self, id: &str, cgroups_path: Option<&str>) {
        if let Some(cg) = &self.cgroup {
            cg.leave(id);
            if let Some(path) = cgroups_path {
                cg.remove_app_container_cgroup(path);
            }
        }
    }

    /// Starts a container's init; returns its host pid and its exit, for the caller to watch.
    pub async fn start(&self, c: &mut Container) -> Result<(u32, oneshot::Receiver<i32>)> {
        let started = c.start(self.oom_kills()).await?;
        if c.is_first() {
            self.set_state(State::Running);
        }
        Ok(started)
    }

    fn oom_kills(&self) -> u64 {
        self.cgroup.as_ref().map(SandboxCgroup::oom_kills).unwrap_or(0)
    }

    /// Whether the kernel's OOM killer ended a container's init (exit `code`): it was killed,
    /// and the sandbox's cgroup counted an OOM kill since the container started. In a pod that
    /// is every container's end, as the killed process is the pod's one sandbox.
    pub fn oom_killed(&self, c: &Container, code: i32) -> bool {
        code == contract::signaled(libc::SIGKILL) && self.cgroup.is_some() && self.oom_kills() > c.oom_kills_at_start()
    }

    /// Signals a process of a container. A paused sandbox is resumed first (runsc refuses to
    /// signal it; runc's shim kills paused tasks): returns whether it had to be.
    pub async fn kill(&self, c: &mut Container, exec_id: &str, signal: u32, all: bool) -> Result<bool> {
        let resume = self.is_paused() && c.is_running(exec_id)?;
        if resume {
            self.runsc.resume(&self.id).await?;
            self.set_state(State::Running);
        }
        c.kill(exec_id, signal, all).await.map(|()| resume)
    }

    /// Freezes every process of every container (Pause of its first container).
    pub async fn pause(&self) -> Result<()> {
        if self.state() != State::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", self.id)));
        }
        self.runsc.pause(&self.id).await?;
        self.set_state(State::Paused);
        Ok(())
    }

    pub async fn resume(&self) -> Result<()> {
        if self.state() != State::Paused {
            return Err(Error::FailedPrecondition(format!("container {} is not paused", self.id)));
        }
        self.runsc.resume(&self.id).await?;
        self.set_state(State::Running);
        Ok(())
    }

    /// Saves the whole sandbox into `path` (and into the client's image path, when it named one),
    /// with the record restore reads. A paused sandbox stays paused; with `exit` the sandbox
    /// ends once saved (a paused one when resumed), else it runs on.
    pub async fn checkpoint(&self, c: &Container, path: &Path, o: &CheckpointOptions) -> Result<()> {
        if self.pod || !c.is_first() {
            return Err(Error::FailedPrecondition(format!(
                "{} runs in pod sandbox {}: runsc saves a sandbox whole, and containerd restores containers one at a time, \
so a pod cannot come back through the Task API; checkpoint a sandbox of its own",
                c.id(),
                self.id
            )));
        }
        match self.state() {
            State::Running | State::Paused => {}
            State::Created => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is created but not started: runsc would save an image that cannot be restored",
                    self.id
                )))
            }
            State::Stopped => return Err(Error::FailedPrecondition(format!("container {} is not running", self.id))),
        }
        // runsc 20240729 saves an exec's host stdio with no key to find it by at restore, so the
        // image it writes meanwhile fails there ("no host FD available for :host:2").
        let execs = c.running_execs();
        if !execs.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "container {} has execs still running ({}): runsc cannot give an exec its stdio back at restore \
                 (\"no host FD available\"), so the image could not be restored; checkpoint once they have ended",
                self.id,
                execs.join(", ")
            )));
        }
        let image = o.image_path.clone().unwrap_or_else(|| path.to_path_buf());
        std::fs::create_dir_all(&image).map_err(Error::io(format!("create {}", image.display())))?;
        let paths = c.layers().to_vec();
        let layers = tokio::task::spawn_blocking(move || {
            paths.into_iter().map(|path| Layer { digest: snapshot::digest(Path::new(&path)), path }).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Other(format!("read the rootfs's layers: {e}")))?;
        let record = CheckpointRecord { runsc: self.runsc.version().await, id: self.id.clone(), layers, docker: self.docker };
        let how = CheckpointFlags {
            leave_running: !o.exit,
            compression: self.checkpoint.compression.clone(),
            exclude_zero_pages: self.checkpoint.exclude_zero_pages,
        };
        let started = std::time::Instant::now();
        self.runsc.checkpoint(&self.id, &image, &how).await?;
        record.write(&image)?;
        if image != path {
            snapshot::copy_image(&image, path)?;
        }
        log::info!("checkpoint of {} into {} in {:?} (leave running: {})", self.id, image.display(), started.elapsed(), how.leave_running);
        Ok(())
    }

    /// Destroys a container (its first one: the whole sandbox) and what the sandbox held for it.
    pub async fn delete(&self, c: &mut Container) -> Result<(u32, Option<Exit>)> {
        let deleted = c.delete().await?;
        if !c.is_first() {
            self.leave_cgroup(c.id(), c.cgroups_path());
        }
        Ok(deleted)
    }

    /// A container's usage: the sandbox's cgroup's, or what runsc reports without one.
    pub async fn stats(&self, c: &Container) -> Result<Any> {
        match &self.cgroup {
            Some(cg) => {
                c.check_not_stopped()?;
                crate::stats::from_cgroup(cg)
            }
            None => crate::stats::from_runsc(&c.stats().await?),
        }
    }

    /// Update: new limits for a container. One sandbox, one cgroup: an app container's new
    /// memory limit resizes the pod's.
    pub async fn update(&self, c: &Container, r: &LinuxResources) -> Result<()> {
        let Some(cg) = &self.cgroup else {
            return Err(Error::FailedPrecondition(
                "Update needs the shim to manage the sandbox's cgroup, which [cgroups] enforce = false turned off".into(),
            ));
        };
        if !c.is_first() {
            return cg.resize(c.id(), r).await;
        }
        cg.update(&Limits::from(r)).await
    }

    pub fn state(&self) -> State {
        *self.state.lock().unwrap()
    }

    pub fn set_state(&self, state: State) {
        let mut s = self.state.lock().unwrap();
        // A sandbox never comes back from Stopped.
        if *s != State::Stopped {
            *s = state;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.state() == State::Paused
    }

    /// Whether a pod's app container may join: only this pod's sandbox, running, and only with
    /// what the sandbox was booted with (runsc's flags are fixed for the whole sandbox).
    pub fn admit(&self, sandbox_id: &str, annotations: &SandboxAnnotations) -> Result<()> {
        if !self.pod || self.id != sandbox_id {
            return Err(Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is not served by this shim")));
        }
        match self.state() {
            State::Running => {}
            State::Paused => return Err(Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is paused"))),
            _ => return Err(Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is not running"))),
        }
        let pod_level = |key: &str| {
            Error::FailedPrecondition(format!(
                "{key}=true needs the pod sandbox to be created with it: put it in the pod's annotations \
(containerd passes them on with the runtime's pod_annotations setting)"
            ))
        };
        if annotations.docker.is_some() && !self.docker {
            return Err(pod_level(annotations::DOCKER));
        }
        if annotations.gpu && !self.gpu {
            return Err(pod_level(annotations::GPU));
        }
        Ok(())
    }

    pub fn add(&self, id: &str, container: Shared) {
        self.members.lock().unwrap().insert(id.to_string(), container);
    }

    pub fn remove(&self, id: &str) {
        self.members.lock().unwrap().remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Shared> {
        self.members.lock().unwrap().get(id).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.members.lock().unwrap().is_empty()
    }

    /// When the first container exits, the sandbox is gone with every other container in it:
    /// their exits are published first. Returns once each has published its exit (bounded:
    /// the sandbox is gone, so their waiters are ending too).
    pub async fn others_exited(&self) {
        let others: Vec<Shared> =
            self.members.lock().unwrap().iter().filter(|(id, _)| !self.is_first(id)).map(|(_, c)| c.clone()).collect();
        let mut exits = Vec::new();
        for o in &others {
            exits.push(o.lock().await.exited(""));
        }
        let all = async {
            for e in exits {
                e.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
        // Each records and queues its exit under its own lock: taking it once orders ours after.
        for o in &others {
            drop(o.lock().await);
        }
    }

    /// Removes what the sandbox has on the host besides its containers: its cgroup, and what
    /// runsc took from its network namespace. After its first container is gone.
    pub async fn release(&self) {
        self.release_cgroup().await;
        self.network.release().await;
    }

    /// After its last container is gone: whatever runsc left in the sandbox's root (the state
    /// and lock of an app container whose `runsc delete` failed as its sandbox had died) is
    /// garbage now, as every process of the sandbox is gone.
    pub fn remove_runsc_root(&self) {
        let root = &self.runsc.flags.root;
        if let Err(e) = std::fs::remove_dir_all(root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("remove runsc root {}: {e}", root.display());
            }
        }
    }

    /// Removes the cgroups the shim made for the sandbox. Again after its last container is
    /// gone: a pod cgroup the shim made holds runsc's app container cgroups until then.
    pub async fn release_cgroup(&self) {
        if let Some(cg) = &self.cgroup {
            cg.remove().await;
        }
    }
}

/// A program given as a path, or looked up on the shim's PATH like a shell would.
fn find_program(program: &Path) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    spec::find_executable(Path::new("/"), &program.to_string_lossy(), &path, Path::new("/"))
}

impl SandboxSide for Sandbox {
    async fn before_runsc_create(&self, id: &str, resources: Option<&LinuxResources>) -> Result<()> {
        if self.is_first(id) {
            self.network.prepare().await?;
            if let Some(cg) = &self.cgroup {
                cg.create()?;
            }
        } else if let Some(cg) = &self.cgroup {
            cg.admit(id, resources)?;
        }
        Ok(())
    }

    fn explain(&self, id: &str, e: Error) -> Error {
        match self.cgroup.as_ref().filter(|_| self.is_first(id)) {
            Some(cg) => cg.explain(e),
            None => e,
        }
    }
}
