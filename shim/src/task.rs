//! The ttrpc Task service: each method translates containerd's request, finds the sandbox or
//! container it is about, and publishes the task events in the order they happen.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use containerd_shim::{
    api::{self, Empty, Status as ApiStatus},
    asynchronous::ExitSignal,
    protos::{
        events::task::{
            TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed,
            TaskStart,
        },
        protobuf::{well_known_types::timestamp::Timestamp, MessageField},
        shim::oci::ProcessDetails,
        shim_async::Task,
        ttrpc::{self, r#async::TtrpcContext},
        types::task::ProcessInfo,
    },
};
use log::{info, warn};
use oci_spec::runtime::LinuxResources;
use tokio::sync::oneshot;

use crate::{
    annotations::SandboxAnnotations,
    bundle::{Bundle, Mount},
    config::Config,
    options::{CheckpointOptions, RuntimeOptions},
    container::CreateRequest,
    events::EventSender,
    process::{Exit, Status},
    sandbox::{Sandbox, Shared, ShimContext, State},
    spec::{self, Role},
    stdio::StdioPaths,
    timeline::Timeline,
};

use crate::error::{Error, Result};

pub struct TaskService {
    ctx: ShimContext,
    /// The sandbox this shim serves, once its first container was created.
    sandbox: Mutex<Option<Arc<Sandbox>>>,
    /// Ids whose Create is under way: reserved, so no lock is held across a Create.
    creating: Mutex<HashSet<String>>,
    events: EventSender,
    exit: Arc<ExitSignal>,
}

/// An id reserved while its Create runs; released when dropped, whatever Create returned.
struct Reservation<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.id);
    }
}

/// After a failed start tore the sandbox down: returns once its exit is recorded, so the
/// client's next Delete finds it stopped; the bound covers a sandbox that would not die.
async fn exit_recorded(exited: impl std::future::Future<Output = Option<Exit>>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), exited).await;
}

fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    MessageField::some(Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32, ..Default::default() })
}

fn exit_fields(exit: Option<Exit>) -> (u32, MessageField<Timestamp>) {
    exit.map(|e| (e.code, timestamp(e.at))).unwrap_or((0, MessageField::none()))
}

impl TaskService {
    pub fn new(ctx: ShimContext, events: EventSender, exit: Arc<ExitSignal>) -> Self {
        TaskService { ctx, sandbox: Mutex::new(None), creating: Mutex::new(HashSet::new()), events, exit }
    }

    fn sandbox(&self) -> Option<Arc<Sandbox>> {
        self.sandbox.lock().unwrap().clone()
    }

    /// The container `id` and the sandbox it runs in.
    fn get(&self, id: &str) -> Result<(Arc<Sandbox>, Shared)> {
        self.sandbox()
            .and_then(|s| s.get(id).map(|c| (s, c)))
            .ok_or_else(|| Error::NotFound(format!("container {id} does not exist")))
    }

    /// Reserves `id` for a Create: a sandbox's first container only in a shim that serves none
    /// yet, a pod's app container only beside its sandbox.
    fn reserve(&self, id: &str, role: &Role) -> Result<(Reservation<'_>, Option<Arc<Sandbox>>)> {
        let sandbox = self.sandbox();
        let mut creating = self.creating.lock().unwrap();
        if creating.contains(id) || sandbox.as_ref().is_some_and(|s| s.get(id).is_some()) {
            return Err(Error::AlreadyExists(format!("container {id} already exists")));
        }
        let joins = matches!(role, Role::PodContainer { .. });
        if !joins && (sandbox.is_some() || !creating.is_empty()) {
            return Err(Error::FailedPrecondition(format!(
                "this shim already runs a sandbox; a second container joins it only as a pod's app container ({}=container, {})",
                spec::CONTAINER_TYPE,
                spec::SANDBOX_ID
            )));
        }
        if let (Role::PodContainer { sandbox_id }, None) = (role, &sandbox) {
            return Err(Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is not served by this shim")));
        }
        creating.insert(id.to_string());
        Ok((Reservation { set: &self.creating, id: id.to_string() }, sandbox.filter(|_| joins)))
    }

    /// Publishes TaskExit once `exit` fires: for an init only after its execs' exits (and for a
    /// sandbox's first container, after every other container's), for any process only after
    /// its start event, which the caller has already queued, and only once the output the
    /// process wrote has reached the client.
    fn watch_exit(&self, sandbox: Arc<Sandbox>, c: Shared, exec_id: String, exit: oneshot::Receiver<i32>) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let code = exit.await.unwrap_or(255);
            let (id, first) = {
                let mut c = c.lock().await;
                if exec_id.is_empty() {
                    c.mark("run");
                }
                (c.id().to_string(), c.is_first())
            };
            if exec_id.is_empty() {
                // The sandbox is gone when its first container is, so these are ending too; the
                // bound is a safety net.
                let execs = c.lock().await.execs_exited();
                let _ = tokio::time::timeout(Duration::from_secs(2), execs).await;
                if first {
                    sandbox.set_state(State::Stopped);
                    sandbox.others_exited().await;
                }
            }
            let io = c.lock().await.take_io(&exec_id);
            if let Some(mut io) = io {
                io.finish().await;
            }
            // Recorded and queued under the container's lock: State and Delete never see a
            // process that containerd was told had exited still running.
            let mut c = c.lock().await;
            let Some((pid, exit)) = c.record_exit(&exec_id, code) else { return };
            info!("{id} {exec_id} exited with {}", exit.code);
            if exec_id.is_empty() && sandbox.oom_killed(&c, exit.code as i32) {
                // Before the exit, so CRI reports the container OOMKilled.
                info!("{id} was killed by the kernel's OOM killer (cgroup {})", sandbox.cgroup().map(|cg| cg.path()).unwrap_or_default());
                events.send(TaskOOM { container_id: id.clone(), ..Default::default() });
            }
            if exec_id.is_empty() {
                c.mark("exit");
                c.log_timeline("exit");
            }
            events.send(TaskExit {
                container_id: id.clone(),
                id: if exec_id.is_empty() { id } else { exec_id },
                pid,
                exit_status: exit.code,
                exited_at: timestamp(exit.at),
                ..Default::default()
            });
        });
    }

    pub async fn task_create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        let mut timeline = Timeline::for_create();
        let bundle = Bundle::new(&req.bundle);
        let mut spec = spec::load(bundle.path())?;
        let role = spec::role(&spec)?;
        let options = req.options.as_ref().map(|o| RuntimeOptions::decode(&o.type_url, &o.value)).transpose()?.unwrap_or_default();
        let config = Config::load(options.config_path.as_deref())?.with_runtime_options(&options)?;
        // containerd 2.x names the checkpoint to restore; 1.6's client, given an image path, only
        // the option.
        let restore = Some(req.checkpoint.clone()).filter(|c| !c.is_empty()).map(PathBuf::from).or(options.image_path.clone());
        if restore.is_some() {
            if role != Role::Single {
                return Err(Error::FailedPrecondition(format!(
                    "{} is a pod's container: a pod's sandbox is saved whole, and containerd restores containers one at a time",
                    req.id
                )));
            }
            if spec::cgroup_for_restore(&mut spec, &req.id) {
                spec::save(&spec, bundle.path())?;
            }
        }
        let annotations = SandboxAnnotations::parse(spec.annotations().as_ref().unwrap_or(&Default::default()))?;
        config.admit(&annotations)?;
        let (_reservation, joined) = self.reserve(&req.id, &role)?;
        let sandbox = match (&joined, &role) {
            (Some(s), Role::PodContainer { sandbox_id }) => {
                s.admit(sandbox_id, &annotations)?;
                s.clone()
            }
            _ => Arc::new(Sandbox::plan(&req.id, bundle.path(), &spec, &role, &config, &annotations, &self.ctx).await?),
        };
        timeline.mark("plan");
        let create = CreateRequest {
            id: req.id.clone(),
            bundle,
            rootfs: req
                .rootfs
                .iter()
                .map(|m| Mount { kind: m.type_.clone(), source: m.source.clone(), options: m.options.clone() })
                .collect(),
            stdio: StdioPaths { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal },
            spec,
            role,
            restore,
            timeline,
        };
        let mut c = match sandbox.create(create, &config, &annotations).await {
            Ok(c) => c,
            Err(e) => {
                if joined.is_none() {
                    sandbox.release().await;
                }
                return Err(e);
            }
        };
        let pid = c.view("").map(|v| v.pid).unwrap_or_default();
        c.log_timeline("create");
        sandbox.add(&req.id, Arc::new(tokio::sync::Mutex::new(c)));
        if joined.is_none() {
            *self.sandbox.lock().unwrap() = Some(sandbox);
        }
        self.events.send(TaskCreate {
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
        });
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    pub async fn task_start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let (sandbox, shared) = self.get(&req.id)?;
        let mut c = shared.lock().await;
        if !req.exec_id.is_empty() {
            let (pid, exit) = c.start_exec(&req.exec_id, sandbox.is_paused()).await?;
            self.events.send(TaskExecStarted { container_id: req.id.clone(), exec_id: req.exec_id.clone(), pid, ..Default::default() });
            self.watch_exit(sandbox, shared.clone(), req.exec_id, exit);
            return Ok(api::StartResponse { pid, ..Default::default() });
        }
        c.mark("to Start");
        let (pid, exit) = match sandbox.start(&mut c).await {
            Ok(started) => started,
            Err(e) => {
                // Nothing runs on after a failed start; its exit is published as runc's shim
                // does for an init that could not start.
                let exit = c.abandon().await;
                let exited = c.exited("");
                drop(c);
                self.watch_exit(sandbox, shared.clone(), String::new(), exit);
                exit_recorded(exited).await;
                return Err(e);
            }
        };
        self.events.send(TaskStart { container_id: req.id.clone(), pid, ..Default::default() });
        self.watch_exit(sandbox, shared.clone(), String::new(), exit);
        let docker = c.docker_ready();
        if docker.is_none() {
            c.log_timeline("start");
        }
        // Not held while dockerd starts: State and Kill must answer meanwhile.
        drop(c);
        if let Some(ready) = docker {
            let mut c = match ready.await {
                Ok(()) => shared.lock().await,
                Err(e) => {
                    warn!("{}: Docker not ready, tearing the sandbox down: {e}", req.id);
                    let mut c = shared.lock().await;
                    let exited = c.exited("");
                    drop(c.abandon().await);
                    drop(c);
                    exit_recorded(exited).await;
                    return Err(e);
                }
            };
            c.mark("docker ready");
            c.log_timeline("start");
        }
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    pub async fn task_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let (sandbox, shared) = self.get(&req.id)?;
        let c = shared.lock().await;
        let p = c.view(&req.exec_id)?;
        let status = match p.status {
            Status::Created => ApiStatus::CREATED,
            // Frozen with its sandbox.
            Status::Running if sandbox.is_paused() => ApiStatus::PAUSED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped => ApiStatus::STOPPED,
        };
        let (exit_status, exited_at) = exit_fields(p.exit);
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: c.bundle().path().to_string_lossy().into_owned(),
            pid: p.pid,
            status: status.into(),
            stdin: p.stdio.stdin,
            stdout: p.stdio.stdout,
            stderr: p.stdio.stderr,
            terminal: p.stdio.terminal,
            exit_status,
            exited_at,
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    pub async fn task_kill(&self, req: api::KillRequest) -> Result<()> {
        let (sandbox, shared) = self.get(&req.id)?;
        let mut c = shared.lock().await;
        if sandbox.kill(&mut c, &req.exec_id, req.signal, req.all).await? {
            self.events.send(TaskResumed { container_id: sandbox.id().to_string(), ..Default::default() });
        }
        Ok(())
    }

    pub async fn task_wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let exited = {
            let (_, shared) = self.get(&req.id)?;
            let c = shared.lock().await;
            c.view(&req.exec_id)?;
            c.exited(&req.exec_id)
        };
        let exit = exited.await.ok_or_else(|| Error::NotFound(format!("{} was deleted while waiting", req.id)))?;
        Ok(api::WaitResponse { exit_status: exit.code, exited_at: timestamp(exit.at), ..Default::default() })
    }

    pub async fn task_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let (sandbox, shared) = self.get(&req.id)?;
        let mut c = shared.lock().await;
        if !req.exec_id.is_empty() {
            let (pid, exit) = c.delete_exec(&req.exec_id)?;
            let (exit_status, exited_at) = exit_fields(exit);
            return Ok(api::DeleteResponse { pid, exit_status, exited_at, ..Default::default() });
        }
        let (pid, exit) = sandbox.delete(&mut c).await?;
        drop(c);
        sandbox.remove(&req.id);
        if sandbox.is_first(&req.id) {
            // Its other containers ended with it; their Deletes find nothing more to remove.
            sandbox.release().await;
        }
        if sandbox.is_empty() {
            if !sandbox.is_first(&req.id) {
                sandbox.release_cgroup().await;
            }
            if sandbox.is_pod() {
                sandbox.remove_runsc_root();
            }
            *self.sandbox.lock().unwrap() = None;
        }
        let (exit_status, exited_at) = exit_fields(exit);
        self.events.send(TaskDelete {
            container_id: req.id.clone(),
            pid,
            exit_status,
            exited_at: exited_at.clone(),
            id: req.id,
            ..Default::default()
        });
        Ok(api::DeleteResponse { pid, exit_status, exited_at, ..Default::default() })
    }

    pub async fn task_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        let (sandbox, shared) = self.get(&req.id)?;
        let spec = req.spec.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        let stdio = StdioPaths { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
        shared.lock().await.add_exec(&req.exec_id, stdio, spec, sandbox.is_paused())?;
        self.events.send(TaskExecAdded { container_id: req.id, exec_id: req.exec_id, ..Default::default() });
        Ok(())
    }

    pub async fn task_pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let (_, shared) = self.get(&req.id)?;
        let listed = shared.lock().await.pids().await?;
        let processes = listed
            .into_iter()
            .map(|p| {
                let info = p.exec_id.and_then(|exec_id| {
                    containerd_shim::util::convert_to_any(Box::new(ProcessDetails { exec_id, ..Default::default() })).ok()
                });
                ProcessInfo { pid: p.pid, info: info.into(), ..Default::default() }
            })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    pub async fn task_close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let (_, shared) = self.get(&req.id)?;
        if req.stdin {
            shared.lock().await.close_stdin(&req.exec_id)?;
        }
        Ok(())
    }

    pub async fn task_connect(&self, req: api::ConnectRequest) -> Result<api::ConnectResponse> {
        let task_pid = match self.get(&req.id) {
            Ok((_, c)) => c.lock().await.view("").map(|v| v.pid).unwrap_or_default(),
            Err(_) => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    /// Pause and Resume act on the whole sandbox (runsc freezes every process in it), so they
    /// are asked of the container that booted it; every container of it then shows PAUSED.
    async fn first_container(&self, id: &str, verb: &str) -> Result<(Shared, Arc<Sandbox>)> {
        let (sandbox, shared) = self.get(id)?;
        if !sandbox.is_first(id) {
            return Err(Error::FailedPrecondition(format!(
                "{id} runs in pod sandbox {}, which runsc {verb}s as a whole: {verb} the sandbox's task",
                sandbox.id()
            )));
        }
        Ok((shared, sandbox))
    }

    pub async fn task_pause(&self, req: api::PauseRequest) -> Result<()> {
        let (shared, sandbox) = self.first_container(&req.id, "pause").await?;
        let _c = shared.lock().await;
        sandbox.pause().await?;
        self.events.send(TaskPaused { container_id: req.id, ..Default::default() });
        Ok(())
    }

    pub async fn task_resume(&self, req: api::ResumeRequest) -> Result<()> {
        let (shared, sandbox) = self.first_container(&req.id, "resume").await?;
        let _c = shared.lock().await;
        sandbox.resume().await?;
        self.events.send(TaskResumed { container_id: req.id, ..Default::default() });
        Ok(())
    }

    pub async fn task_stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let (sandbox, shared) = self.get(&req.id)?;
        let c = shared.lock().await;
        let metrics = sandbox.stats(&c).await?;
        Ok(api::StatsResponse { stats: MessageField::some(metrics), ..Default::default() })
    }

    pub async fn task_update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let (sandbox, shared) = self.get(&req.id)?;
        let c = shared.lock().await;
        // containerd's LinuxResources as JSON (what `typeurl` makes of it).
        let resources = req.resources.as_ref().map(|a| a.value.as_slice()).unwrap_or_default();
        let r: LinuxResources = serde_json::from_slice(resources)
            .map_err(|e| Error::InvalidArgument(format!("Update: resources are not OCI LinuxResources: {e}")))?;
        sandbox.update(&c, &r).await
    }

    pub async fn task_checkpoint(&self, req: api::CheckpointTaskRequest) -> Result<()> {
        let options = req.options.as_ref().map(|o| CheckpointOptions::decode(&o.type_url, &o.value)).transpose()?.unwrap_or_default();
        let (sandbox, shared) = self.get(&req.id)?;
        let c = shared.lock().await;
        sandbox.checkpoint(&c, Path::new(&req.path), &options).await
    }

    pub async fn task_shutdown(&self) -> Result<()> {
        let idle = self.sandbox().is_none_or(|s| s.is_empty()) && self.creating.lock().unwrap().is_empty();
        if idle {
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
    async fn checkpoint(&self, _: &TtrpcContext, req: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        self.task_checkpoint(req).await?;
        Ok(Empty::new())
    }
    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        let (_, shared) = self.get(&req.id)?;
        shared.lock().await.resize(&req.exec_id, req.width, req.height)?;
        Ok(Empty::new())
    }
    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.task_update(req).await?;
        Ok(Empty::new())
    }
    async fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        Ok(self.task_stats(req).await?)
    }
}
