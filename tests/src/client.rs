//! containerd's gRPC API as its Go client (nerdctl, the kubelet's CRI plugin) drives a runtime:
//! the container record and its snapshot come from `ctr containers create` (what the Go client's
//! `NewContainer` makes), and everything of the task goes through containerd's Tasks service,
//! with fifos the test opens and reads itself.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use containerd_client::{
    services::v1::{
        containers_client::ContainersClient, leases_client::LeasesClient, snapshots::snapshots_client::SnapshotsClient,
        snapshots::*, tasks_client::TasksClient, *,
    },
    types::{Descriptor, Mount},
};
use tonic::{transport::Channel, Request, Status};

pub use containerd_client::services::v1::DeleteResponse;

/// ctr's namespace: containers made by `ctr containers create` live there.
pub const NAMESPACE: &str = "default";

pub type GrpcResult<T> = Result<T, Status>;

pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

fn namespaced<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("containerd-namespace", NAMESPACE.parse().unwrap());
    r
}

impl Client {
    pub fn connect() -> Client {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let channel = rt.block_on(containerd_client::connect(crate::address())).expect("connect to containerd's gRPC API");
        Client { rt, channel }
    }

    /// One call, bounded so a hung shim fails the test instead of hanging it.
    fn call<T, F: std::future::Future<Output = GrpcResult<tonic::Response<T>>>>(&self, f: F) -> GrpcResult<T> {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), f).await })
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the call hung for 120 s")))
            .map(tonic::Response::into_inner)
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Tasks.Update of a task in ctr's namespace (no ctr has `task update`): `resources` is OCI's
    /// LinuxResources as JSON, which is how containerd's clients encode it (typeurl of a Go type).
    pub fn update(&self, id: &str, resources: &serde_json::Value) -> GrpcResult<()> {
        let req = UpdateTaskRequest {
            container_id: id.into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: resources.to_string().into_bytes(),
            }),
            ..Default::default()
        };
        self.call(self.tasks().update(namespaced(req))).map(drop)
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
}

/// A container record of the test whose task is driven over gRPC; on drop the task and record
/// are removed and nothing of it may remain on the host.
pub struct Task<'a> {
    client: &'a Client,
    pub id: String,
    /// Where the fifos of its processes live.
    dir: PathBuf,
    /// A read-only view of its image made for it (snapshotter, key), and the lease that keeps
    /// it from containerd's garbage collector; removed with it.
    view: Option<(String, String)>,
    lease: Option<String>,
}

impl<'a> Task<'a> {
    /// Makes the container record and its writable snapshot (`ctr containers create FLAGS IMAGE
    /// ID`), with `args` as its process's (set in the spec, as the Go client's
    /// `WithProcessArgs`: ctr would read a command's own flags as its); no task yet.
    pub fn container(client: &'a Client, prefix: &str, image: &str, flags: &[&str], args: &[&str]) -> Task<'a> {
        let id = crate::unique_id(prefix);
        let dir = std::env::temp_dir().join(format!("fifos-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let task = Task { client, id, dir, view: None, lease: None };
        let mut ctr = crate::ctr();
        ctr.args(["containers", "create", "--runtime", crate::RUNTIME]).args(flags).args([image, &task.id]);
        let r = crate::run_cmd(&mut ctr, None);
        assert_eq!(r.code, 0, "ctr containers create {}: {}{}", task.id, r.stdout, r.stderr);
        if !args.is_empty() {
            let mut spec = task.spec();
            spec["process"]["args"] = serde_json::json!(args);
            task.set_spec(&spec);
        }
        task
    }

    /// The container's OCI spec, as JSON.
    pub fn spec(&self) -> serde_json::Value {
        let c = self.record();
        serde_json::from_slice(&c.spec.expect("the container has a spec").value).unwrap()
    }

    /// Replaces the container's OCI spec, as a client's `WithSpec` option would have made it.
    pub fn set_spec(&self, spec: &serde_json::Value) {
        let mut c = self.record();
        c.spec.as_mut().unwrap().value = serde_json::to_vec(spec).unwrap();
        let req = UpdateContainerRequest {
            container: Some(c),
            update_mask: Some(prost_types::FieldMask { paths: vec!["spec".into()] }),
        };
        self.client.call(self.client.containers().update(namespaced(req))).expect("update the container's spec");
    }

    fn record(&self) -> Container {
        self.try_record().expect("the container record")
    }

    fn try_record(&self) -> GrpcResult<Container> {
        let req = GetContainerRequest { id: self.id.clone() };
        Ok(self.client.call(self.client.containers().get(namespaced(req)))?.container.unwrap_or_default())
    }

    /// The mounts of the container's own (writable) snapshot, as the Go client's NewTask reads them.
    pub fn rootfs(&self) -> Vec<Mount> {
        let c = self.record();
        let req = MountsRequest { snapshotter: c.snapshotter, key: c.snapshot_key };
        self.client.call(self.client.snapshots().mounts(namespaced(req))).expect("snapshot mounts").mounts
    }

    /// A read-only view of the container's image (a snapshot View of its parent), as
    /// user-namespaced or remapped containers use; held by a lease, as the Go client does.
    pub fn readonly_rootfs(&mut self) -> Vec<Mount> {
        let c = self.record();
        let stat = StatSnapshotRequest { snapshotter: c.snapshotter.clone(), key: c.snapshot_key };
        let parent = self.client.call(self.client.snapshots().stat(namespaced(stat))).unwrap().info.unwrap().parent;
        let lease = self.lease();
        let key = format!("{}-view", self.id);
        let view = ViewSnapshotRequest { snapshotter: c.snapshotter.clone(), key: key.clone(), parent, labels: Default::default() };
        let mut req = namespaced(view);
        req.metadata_mut().insert("containerd-lease", lease.parse().unwrap());
        let mounts = self.client.call(self.client.snapshots().view(req)).expect("a read-only view").mounts;
        self.view = Some((c.snapshotter, key));
        mounts
    }

    /// The lease that keeps what was made for this task (a view, a checkpoint's content) from
    /// containerd's garbage collector while the task lives, as the Go client holds one.
    fn lease(&mut self) -> String {
        if let Some(lease) = &self.lease {
            return lease.clone();
        }
        let lease = format!("{}-lease", self.id);
        let create = CreateRequest { id: lease.clone(), labels: Default::default() };
        self.client.call(self.client.leases().create(namespaced(create))).expect("a lease");
        self.lease = Some(lease.clone());
        lease
    }

    /// A fifo for one stream of a process, in this task's directory.
    pub fn fifo(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p
    }

    pub fn create(&self, stdio: &Stdio, rootfs: Vec<Mount>) -> GrpcResult<u32> {
        self.create_with(stdio, rootfs, None)
    }

    /// Create with task options, as the Go client's `NewTask(WithRuntimeOptions...)` sends them.
    pub fn create_with(&self, stdio: &Stdio, rootfs: Vec<Mount>, options: Option<prost_types::Any>) -> GrpcResult<u32> {
        self.create_from(stdio, rootfs, options, None)
    }

    /// Create that restores `checkpoint` (the descriptor Checkpoint returned, as the Go client's
    /// `NewTask(WithTaskCheckpoint)` sends it; containerd hands the runtime its files).
    pub fn create_from(
        &self,
        stdio: &Stdio,
        rootfs: Vec<Mount>,
        options: Option<prost_types::Any>,
        checkpoint: Option<Descriptor>,
    ) -> GrpcResult<u32> {
        let req = CreateTaskRequest {
            container_id: self.id.clone(),
            rootfs,
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            options,
            checkpoint,
            ..Default::default()
        };
        self.client.call(self.client.tasks().create(namespaced(req))).map(|r| r.pid)
    }

    /// Tasks.Checkpoint (what the Go client's `task.Checkpoint` and `container.Checkpoint` call):
    /// the checkpoint's files as a content blob; its descriptor, of the criu tar's media type.
    /// The checkpoint's content is held by the task's lease until the task is dropped. None when
    /// the options named an image path and containerd (2.x) stored nothing of its own.
    pub fn checkpoint(&mut self, options: Option<prost_types::Any>) -> GrpcResult<Option<Descriptor>> {
        let lease = self.lease();
        let mut req = namespaced(CheckpointTaskRequest { container_id: self.id.clone(), options, ..Default::default() });
        req.metadata_mut().insert("containerd-lease", lease.parse().unwrap());
        let r = self.client.call(self.client.tasks().checkpoint(req))?;
        Ok(r.descriptors.into_iter().find(|d| d.media_type.ends_with("checkpoint.criu.tar")))
    }

    pub fn pause(&self) -> GrpcResult<()> {
        let req = PauseTaskRequest { container_id: self.id.clone() };
        self.client.call(self.client.tasks().pause(namespaced(req))).map(drop)
    }

    pub fn resume(&self) -> GrpcResult<()> {
        let req = ResumeTaskRequest { container_id: self.id.clone() };
        self.client.call(self.client.tasks().resume(namespaced(req))).map(drop)
    }

    /// The task's status as containerd reports it (Tasks.Get).
    pub fn status(&self) -> GrpcResult<i32> {
        let req = GetRequest { container_id: self.id.clone(), ..Default::default() };
        Ok(self.client.call(self.client.tasks().get(namespaced(req)))?.process.map(|p| p.status).unwrap_or_default())
    }

    /// The container's runtime options (`WithRuntime(name, options)`): containerd hands them to
    /// the shim's `start` on stdin. containerd never updates a record's runtime, so the record is
    /// made again with them (its snapshot stays).
    pub fn set_runtime_options(&mut self, options: prost_types::Any) {
        let mut c = self.record();
        // Held by the task's lease meanwhile: without its record, containerd's collector would take
        // the container's snapshot.
        let lease = self.lease();
        let resource = Resource { id: c.snapshot_key.clone(), r#type: format!("snapshots/{}", c.snapshotter) };
        let add = AddResourceRequest { id: lease, resource: Some(resource) };
        self.client.call(self.client.leases().add_resource(namespaced(add))).expect("hold the snapshot with a lease");
        c.runtime.as_mut().expect("the container has a runtime").options = Some(options);
        let delete = DeleteContainerRequest { id: self.id.clone() };
        self.client.call(self.client.containers().delete(namespaced(delete))).expect("delete the container record");
        let create = CreateContainerRequest { container: Some(c) };
        self.client.call(self.client.containers().create(namespaced(create))).expect("the container record with runtime options");
    }

    pub fn start(&self, exec_id: &str) -> GrpcResult<u32> {
        let req = StartRequest { container_id: self.id.clone(), exec_id: exec_id.into() };
        self.client.call(self.client.tasks().start(namespaced(req))).map(|r| r.pid)
    }

    /// The container's process spec with other args, for an exec (what `ctr task exec` sends).
    pub fn process(&self, args: &[&str], terminal: bool) -> serde_json::Value {
        let mut p = self.spec()["process"].clone();
        p["args"] = serde_json::json!(args);
        p["terminal"] = serde_json::json!(terminal);
        p
    }

    pub fn exec(&self, exec_id: &str, process: &serde_json::Value, stdio: &Stdio) -> GrpcResult<()> {
        let spec = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(process).unwrap(),
        };
        let req = ExecProcessRequest {
            container_id: self.id.clone(),
            exec_id: exec_id.into(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            spec: Some(spec),
        };
        self.client.call(self.client.tasks().exec(namespaced(req))).map(drop)
    }

    /// Waits for the process's exit and returns its status.
    pub fn wait(&self, exec_id: &str) -> GrpcResult<u32> {
        let req = WaitRequest { container_id: self.id.clone(), exec_id: exec_id.into() };
        self.client.call(self.client.tasks().wait(namespaced(req))).map(|r| r.exit_status)
    }

    pub fn kill(&self, exec_id: &str, signal: u32) -> GrpcResult<()> {
        let req = KillRequest { container_id: self.id.clone(), exec_id: exec_id.into(), signal, all: false };
        self.client.call(self.client.tasks().kill(namespaced(req))).map(drop)
    }

    pub fn resize(&self, exec_id: &str, width: u32, height: u32) -> GrpcResult<()> {
        let req = ResizePtyRequest { container_id: self.id.clone(), exec_id: exec_id.into(), width, height };
        self.client.call(self.client.tasks().resize_pty(namespaced(req))).map(drop)
    }

    /// `task.Pids`: each process's pid and, for an exec, the exec id it belongs to.
    pub fn pids(&self) -> GrpcResult<Vec<(u32, Option<String>)>> {
        let req = ListPidsRequest { container_id: self.id.clone() };
        let listed = self.client.call(self.client.tasks().list_pids(namespaced(req)))?;
        Ok(listed
            .processes
            .into_iter()
            .map(|p| {
                let exec = p.info.and_then(|i| <ProcessDetails as prost::Message>::decode(i.value.as_slice()).ok());
                (p.pid, exec.map(|d| d.exec_id))
            })
            .collect())
    }

    pub fn delete_process(&self, exec_id: &str) -> GrpcResult<DeleteResponse> {
        let req = DeleteProcessRequest { container_id: self.id.clone(), exec_id: exec_id.into() };
        self.client.call(self.client.tasks().delete_process(namespaced(req)))
    }

    pub fn delete(&self) -> GrpcResult<DeleteResponse> {
        let req = DeleteTaskRequest { container_id: self.id.clone() };
        self.client.call(self.client.tasks().delete(namespaced(req)))
    }
}

/// runc's `ProcessDetails` (containerd.runc.v1), which Pids carries for an exec.
#[derive(Clone, PartialEq, prost::Message)]
struct ProcessDetails {
    #[prost(string, tag = "1")]
    exec_id: String,
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        let _ = self.kill("", libc::SIGKILL as u32);
        if self.delete().is_err() {
            // Not stopped yet: the kill's exit is on its way.
            let _ = self.wait("");
            let _ = self.delete();
        }
        // As the Go client's Delete(WithSnapshotCleanup): the record, then its snapshots.
        let record = self.try_record().ok().map(|c| (c.snapshotter, c.snapshot_key));
        let req = DeleteContainerRequest { id: self.id.clone() };
        let removed = self.client.call(self.client.containers().delete(namespaced(req)));
        let snapshots = record.into_iter().chain(self.view.take());
        for (snapshotter, key) in snapshots {
            let req = RemoveSnapshotRequest { snapshotter, key };
            let _ = self.client.call(self.client.snapshots().remove(namespaced(req)));
        }
        if let Some(id) = self.lease.take() {
            let _ = self.client.call(self.client.leases().delete(namespaced(DeleteRequest { id, sync: false })));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if std::thread::panicking() {
            return;
        }
        removed.unwrap_or_else(|e| panic!("removing container {}: {e}", self.id));
        crate::assert_no_leftovers(&[&self.id]);
    }
}

/// The stdio paths of one process.
#[derive(Clone, Debug, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// How a test reads an output fifo: at once, or a chunk at a time with pauses, as a client
/// that is busy elsewhere.
#[derive(Clone, Copy, Debug)]
pub enum Reader {
    Fast,
    Slow { chunk: usize, pause: Duration },
    /// Reads at once, but stops reading for `pause` once it has `after` bytes.
    Stall { after: usize, pause: Duration },
}

/// A client's reader of an output fifo: everything it read, in memory, until the shim closed it.
pub struct Output {
    read: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<std::io::Result<Vec<u8>>>,
}

impl Output {
    /// Starts reading `fifo` in the background; the open waits for the shim's writer.
    pub fn read(fifo: &Path, how: Reader) -> Output {
        let path = fifo.to_path_buf();
        let read = Arc::new(AtomicUsize::new(0));
        let counter = read.clone();
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::File::open(&path)?;
            let mut all = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut stalled = false;
            loop {
                let want = match how {
                    Reader::Slow { chunk, .. } => chunk.min(buf.len()),
                    _ => buf.len(),
                };
                let n = f.read(&mut buf[..want])?;
                if n == 0 {
                    return Ok(all);
                }
                all.extend_from_slice(&buf[..n]);
                counter.store(all.len(), Ordering::SeqCst);
                // A client busy elsewhere, not a wait for an event.
                match how {
                    Reader::Slow { pause, .. } => std::thread::sleep(pause),
                    Reader::Stall { after, pause } if !stalled && all.len() >= after => {
                        stalled = true;
                        std::thread::sleep(pause);
                    }
                    _ => {}
                }
            }
        });
        Output { read, thread }
    }

    /// How much was read so far.
    pub fn so_far(&self) -> usize {
        self.read.load(Ordering::SeqCst)
    }

    /// Everything, once the shim closed its end (it does before it publishes the exit).
    pub fn all(self) -> Vec<u8> {
        self.thread.join().expect("the reader panicked").expect("reading the fifo")
    }
}

/// A field of runc's option messages, encoded by hand (the tests speak containerd's API, which
/// has no Rust type for them): a string, or a varint (bools and ids).
pub enum OptionField<'a> {
    Text(u32, &'a str),
    Number(u32, u64),
}

/// One of runc's option types (`containerd.runc.v1.Options`, `containerd.linux.runc.CreateOptions`)
/// with `fields`, as an Any.
pub fn runc_options(type_name: &str, fields: &[OptionField]) -> prost_types::Any {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut value = Vec::new();
    for f in fields {
        match f {
            OptionField::Text(n, s) => {
                varint(u64::from(*n) << 3 | 2, &mut value);
                varint(s.len() as u64, &mut value);
                value.extend_from_slice(s.as_bytes());
            }
            OptionField::Number(n, v) => {
                varint(u64::from(*n) << 3, &mut value);
                varint(*v, &mut value);
            }
        }
    }
    prost_types::Any { type_url: type_name.into(), value }
}
