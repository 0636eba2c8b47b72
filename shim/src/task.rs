//! The ttrpc Task service: translates containerd's requests into container operations and
//! publishes the task events, in order.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use async_trait::async_trait;
use containerd_shim::{
    api::{self, Empty, Status as ApiStatus},
    asynchronous::{publisher::RemotePublisher, ExitSignal},
    event::Event,
    protos::{
        cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat},
        events::task::{
            TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused, TaskResumed, TaskStart,
        },
        protobuf::{well_known_types::timestamp::Timestamp, MessageField},
        shim_async::Task,
        ttrpc::{self, r#async::TtrpcContext},
    },
};
use log::{debug, info, warn};
use tokio::sync::{oneshot, Mutex};

use crate::{
    config::{self, Config},
    container::{self, Container, CreateConfig, Mount, SandboxContext},
    error::{Error, Result},
    process::{Exit, Status},
    spec::{self, Role},
    stdio::StdioPaths,
};

type Shared = Arc<Mutex<Container>>;

pub struct TaskService {
    /// containerd's address and the namespace: with the container id, they name a runsc root.
    containerd_address: String,
    namespace: String,
    /// One container, or a pod: its sandbox (the pause) and its app containers.
    containers: Arc<Mutex<HashMap<String, Shared>>>,
    /// Ids whose Create is under way: reserved, so the map is not held across a Create.
    creating: std::sync::Mutex<HashSet<String>>,
    events: Events,
    exit: Arc<ExitSignal>,
}

#[derive(Clone)]
struct Events {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl Events {
    async fn send(&self, event: impl Event) {
        let topic = event.topic();
        debug!("publish {topic}");
        if let Err(e) = self
            .publisher
            .publish(ttrpc::context::Context::default(), &topic, &self.namespace, Box::new(event))
            .await
        {
            warn!("publish {topic}: {e}");
        }
    }
}

/// An id reserved while its Create runs; released when dropped, whatever Create returned.
struct Reservation<'a> {
    set: &'a std::sync::Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Reservation<'a> {
    fn take(set: &'a std::sync::Mutex<HashSet<String>>, id: &str, exists: bool) -> Result<Self> {
        if exists || !set.lock().unwrap().insert(id.to_string()) {
            return Err(Error::AlreadyExists(format!("container {id} already exists")));
        }
        Ok(Reservation { set, id: id.to_string() })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.id);
    }
}

/// After a failed start tore the sandbox down: returns once its exit is recorded, so the
/// client's next Delete finds it stopped; the bound covers a sandbox that would not die.
async fn exit_recorded(exited: impl std::future::Future<Output = Option<Exit>>) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), exited).await;
}

fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    MessageField::some(Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32, ..Default::default() })
}

fn exit_fields(exit: Option<Exit>) -> (u32, MessageField<Timestamp>) {
    exit.map(|e| (e.code, timestamp(e.at))).unwrap_or((0, MessageField::none()))
}

impl TaskService {
    pub fn new(containerd_address: String, namespace: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        TaskService {
            containerd_address,
            namespace: namespace.clone(),
            containers: Arc::new(Mutex::new(HashMap::new())),
            creating: std::sync::Mutex::new(HashSet::new()),
            events: Events { publisher: Arc::new(publisher), namespace },
            exit,
        }
    }

    async fn get(&self, id: &str) -> Result<Shared> {
        self.containers
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} does not exist")))
    }

    /// Publishes TaskExit once `exit` fires: for an init only after its execs' exits, and for
    /// any process only after its start event, which the caller has already sent.
    fn watch_exit(&self, c: Shared, exec_id: String, exit: oneshot::Receiver<i32>) {
        let events = self.events.clone();
        let containers = self.containers.clone();
        tokio::spawn(async move {
            let code = exit.await.unwrap_or(255);
            if exec_id.is_empty() {
                let (mut execs, sandbox): (Vec<_>, bool) = {
                    let c = c.lock().await;
                    let execs = c.execs.values().filter(|e| e.process.status == Status::Running).map(|e| e.process.exited()).collect();
                    (execs, c.role == Role::PodSandbox)
                };
                // A pod's sandbox exiting takes its app containers along: their exits go first.
                let others: Vec<Shared> = if sandbox {
                    containers.lock().await.values().filter(|o| !Arc::ptr_eq(o, &c)).cloned().collect()
                } else {
                    Vec::new()
                };
                for o in &others {
                    let o = o.lock().await;
                    if o.init.status == Status::Running {
                        execs.push(o.init.exited());
                    }
                }
                // The sandbox is gone, so its exec waiters are exiting too; the bound is a safety net.
                let all = async {
                    for e in execs {
                        e.await;
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), all).await;
                // Each publishes its exit under its own lock: taking it once orders ours after.
                for o in &others {
                    drop(o.lock().await);
                }
            }
            // Recorded and queued under the container's lock: State and Delete never see a
            // process that containerd was told had exited still running, and an init waiting for
            // its execs can only queue its own exit after theirs.
            let mut c = c.lock().await;
            let id = c.id.clone();
            let Ok(p) = c.process_mut(&exec_id) else { return };
            let exit = p.set_exited(code);
            let (pid, mut io) = (p.pid, std::mem::take(&mut p.io));
            info!("{id} {exec_id} exited with {}", exit.code);
            events
                .send(TaskExit {
                    container_id: id.clone(),
                    id: if exec_id.is_empty() { id } else { exec_id },
                    pid,
                    exit_status: exit.code,
                    exited_at: timestamp(exit.at),
                    ..Default::default()
                })
                .await;
            drop(c);
            tokio::spawn(async move { io.finish().await });
        });
    }

    pub async fn task_create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented("restoring from a checkpoint is not supported".into()));
        }
        let spec = spec::load(Path::new(&req.bundle))?;
        let role = spec::role(&spec)?;
        let containers = self.containers.lock().await;
        let pod = match &role {
            Role::PodContainer { sandbox_id } => {
                let sandbox = containers.get(sandbox_id).ok_or_else(|| {
                    Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is not served by this shim"))
                })?;
                let sandbox = sandbox.lock().await;
                if sandbox.role != Role::PodSandbox || sandbox.init.status != Status::Running {
                    return Err(Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is not running")));
                }
                Some(sandbox.runsc.clone())
            }
            _ if !containers.is_empty() || !self.creating.lock().unwrap().is_empty() => {
                return Err(Error::FailedPrecondition(format!(
                    "this shim already runs a sandbox; a second container joins it only as a pod's app container ({}=container, {})",
                    spec::CONTAINER_TYPE,
                    spec::SANDBOX_ID
                )));
            }
            _ => None,
        };
        let reservation = Reservation::take(&self.creating, &req.id, containers.contains_key(&req.id))?;
        // Not held across Create: State, Kill and Delete of the pod's other containers go on.
        drop(containers);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let cfg = CreateConfig {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| Mount { kind: m.type_.clone(), source: m.source.clone(), options: m.options.clone() })
                .collect(),
            stdio,
            spec,
            role,
            pod,
        };
        let config_path = req.options.as_ref().and_then(|o| config::config_path_from_options(&o.type_url, &o.value));
        let ctx = SandboxContext {
            config: Config::load(config_path.as_deref())?,
            containerd_address: self.containerd_address.clone(),
            namespace: self.namespace.clone(),
        };
        let c = Container::create(cfg, &ctx).await?;
        let pid = c.init.pid;
        self.containers.lock().await.insert(req.id.clone(), Arc::new(Mutex::new(c)));
        drop(reservation);
        self.events
            .send(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint,
                pid,
                ..Default::default()
            })
            .await;
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    pub async fn task_start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let shared = self.get(&req.id).await?;
        let mut c = shared.lock().await;
        if req.exec_id.is_empty() {
            let pid = match c.start().await {
                Ok(pid) => pid,
                Err(e) => {
                    // Nothing runs on after a failed start; its exit is published as runc's
                    // shim does for an init that could not start.
                    let exit = c.abandon().await;
                    let exited = c.init.exited();
                    drop(c);
                    self.watch_exit(shared.clone(), String::new(), exit);
                    exit_recorded(exited).await;
                    return Err(e);
                }
            };
            let exit = c.init_exit.take().ok_or_else(|| Error::Other("init exit already watched".into()))?;
            self.events.send(TaskStart { container_id: req.id.clone(), pid, ..Default::default() }).await;
            self.watch_exit(shared.clone(), String::new(), exit);
            let docker = c.docker_wait.map(|wait| (c.runsc.clone(), c.bundle.clone(), wait));
            // Not held while dockerd starts: State and Kill must answer meanwhile.
            drop(c);
            if let Some((runsc, bundle, wait)) = docker {
                if let Err(e) = Container::wait_docker_ready(&runsc, &req.id, wait).await {
                    warn!("{}: Docker not ready, tearing the sandbox down: {e}", req.id);
                    let exited = shared.lock().await.init.exited();
                    container::teardown(&runsc, &req.id, &bundle).await;
                    exit_recorded(exited).await;
                    return Err(e);
                }
            }
            return Ok(api::StartResponse { pid, ..Default::default() });
        }
        let (pid, exit) = c.start_exec(&req.exec_id).await?;
        self.events
            .send(TaskExecStarted { container_id: req.id.clone(), exec_id: req.exec_id.clone(), pid, ..Default::default() })
            .await;
        self.watch_exit(shared.clone(), req.exec_id, exit);
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    pub async fn task_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let shared = self.get(&req.id).await?;
        let c = shared.lock().await;
        let p = c.process(&req.exec_id)?;
        let status = match p.status {
            Status::Created => ApiStatus::CREATED,
            Status::Running if c.paused => ApiStatus::PAUSED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped => ApiStatus::STOPPED,
        };
        let (exit_status, exited_at) = exit_fields(p.exit());
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            status: status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status,
            exited_at,
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    pub async fn task_kill(&self, req: api::KillRequest) -> Result<()> {
        let shared = self.get(&req.id).await?;
        let mut c = shared.lock().await;
        c.kill(&req.exec_id, req.signal, req.all).await?;
        Ok(())
    }

    pub async fn task_wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let exited = {
            let shared = self.get(&req.id).await?;
            let c = shared.lock().await;
            c.process(&req.exec_id)?.exited()
        };
        let exit = exited.await.ok_or_else(|| Error::NotFound(format!("{} was deleted while waiting", req.id)))?;
        Ok(api::WaitResponse { exit_status: exit.code, exited_at: timestamp(exit.at), ..Default::default() })
    }

    pub async fn task_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let shared = self.get(&req.id).await?;
        let mut c = shared.lock().await;
        if !req.exec_id.is_empty() {
            let (pid, exit) = c.delete_exec(&req.exec_id)?;
            let (exit_status, exited_at) = exit_fields(exit);
            return Ok(api::DeleteResponse { pid, exit_status, exited_at, ..Default::default() });
        }
        let (pid, exit) = c.delete().await?;
        drop(c);
        self.containers.lock().await.remove(&req.id);
        let (exit_status, exited_at) = exit_fields(exit);
        self.events
            .send(TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status,
                exited_at: exited_at.clone(),
                id: req.id,
                ..Default::default()
            })
            .await;
        Ok(api::DeleteResponse { pid, exit_status, exited_at, ..Default::default() })
    }

    pub async fn task_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        let shared = self.get(&req.id).await?;
        let spec = req.spec.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        let stdio = StdioPaths { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
        shared.lock().await.add_exec(&req.exec_id, stdio, spec)?;
        self.events
            .send(TaskExecAdded { container_id: req.id, exec_id: req.exec_id, ..Default::default() })
            .await;
        Ok(())
    }

    pub async fn task_pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let shared = self.get(&req.id).await?;
        let runsc = shared.lock().await.runsc.clone();
        let processes = runsc
            .ps(&req.id)
            .await?
            .into_iter()
            .map(|pid| containerd_shim::protos::types::task::ProcessInfo { pid, ..Default::default() })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    pub async fn task_close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let shared = self.get(&req.id).await?;
        let c = shared.lock().await;
        if req.stdin {
            c.process(&req.exec_id)?.io.close_stdin();
        }
        Ok(())
    }

    pub async fn task_connect(&self, req: api::ConnectRequest) -> Result<api::ConnectResponse> {
        let task_pid = match self.get(&req.id).await {
            Ok(c) => c.lock().await.init.pid,
            Err(_) => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    pub async fn task_pause(&self, req: api::PauseRequest) -> Result<()> {
        let shared = self.get(&req.id).await?;
        shared.lock().await.pause().await?;
        self.events.send(TaskPaused { container_id: req.id, ..Default::default() }).await;
        Ok(())
    }

    pub async fn task_resume(&self, req: api::ResumeRequest) -> Result<()> {
        let shared = self.get(&req.id).await?;
        shared.lock().await.resume().await?;
        self.events.send(TaskResumed { container_id: req.id, ..Default::default() }).await;
        Ok(())
    }

    /// runsc's numbers in containerd's cgroup v1 metrics type, which `ctr task metrics` reads.
    pub async fn task_stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let shared = self.get(&req.id).await?;
        let s = shared.lock().await.stats().await?;
        let mut m = Metrics::new();
        m.cpu = MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total: s.cpu.usage.total,
                kernel: s.cpu.usage.kernel,
                user: s.cpu.usage.user,
                per_cpu: s.cpu.usage.percpu,
                ..Default::default()
            }),
            ..Default::default()
        });
        let entry = |e: &crate::stats::MemoryEntry| {
            MessageField::some(MemoryEntry { limit: e.limit, usage: e.usage, max: e.max, failcnt: e.failcnt, ..Default::default() })
        };
        m.memory = MessageField::some(MemoryStat {
            cache: s.memory.cache,
            usage: entry(&s.memory.usage),
            swap: entry(&s.memory.swap),
            kernel: entry(&s.memory.kernel),
            ..Default::default()
        });
        m.pids = MessageField::some(PidsStat { current: s.pids.current, limit: s.pids.limit, ..Default::default() });
        let any = containerd_shim::util::convert_to_any(Box::new(m)).map_err(|e| Error::Other(format!("encode metrics: {e}")))?;
        Ok(api::StatsResponse { stats: MessageField::some(any), ..Default::default() })
    }

    pub async fn task_shutdown(&self) -> Result<()> {
        let containers = self.containers.lock().await;
        if containers.is_empty() && self.creating.lock().unwrap().is_empty() {
            self.exit.signal();
        }
        Ok(())
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        Ok(self.task_create(req).await?)
    }
    async fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        Ok(self.task_start(req).await?)
    }
    async fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        Ok(self.task_state(req).await?)
    }
    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        self.task_kill(req).await?;
        Ok(Empty::new())
    }
    async fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        Ok(self.task_wait(req).await?)
    }
    async fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        Ok(self.task_delete(req).await?)
    }
    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.task_exec(req).await?;
        Ok(Empty::new())
    }
    async fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        Ok(self.task_pids(req).await?)
    }
    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        self.task_close_io(req).await?;
        Ok(Empty::new())
    }
    async fn connect(&self, _: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        Ok(self.task_connect(req).await?)
    }
    async fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        self.task_shutdown().await?;
        Ok(Empty::new())
    }
    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        self.task_pause(req).await?;
        Ok(Empty::new())
    }
    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        self.task_resume(req).await?;
        Ok(Empty::new())
    }
    async fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(Error::Unimplemented(
            "Checkpoint is not supported by the beta9 sandbox shim: runsc's checkpoint is experimental and restores need the same runsc and host".into(),
        )
        .into())
    }
    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        let shared = self.get(&req.id).await?;
        shared.lock().await.process(&req.exec_id)?.io.resize(req.width, req.height)?;
        Ok(Empty::new())
    }
    async fn update(&self, _: &TtrpcContext, _: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        // runsc has no update command, and under --ignore-cgroups no limit is applied by cgroups.
        Err(Error::Unimplemented("Update is not supported: runsc cannot change a running sandbox's resources".into()).into())
    }
    async fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        Ok(self.task_stats(req).await?)
    }
}
