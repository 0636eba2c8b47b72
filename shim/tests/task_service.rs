//! TaskService without ttrpc or containerd: requests go straight to its `task_*` methods, events
//! into a channel, and runsc is tests/fake-runsc (plain `sleep`s for processes), so the event
//! order, the pod's rules and what never waits on what are tested without a sandbox.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use containerd_shim::{
    api,
    asynchronous::ExitSignal,
    protos::protobuf::{well_known_types::any::Any, MessageDyn, MessageField},
};
use containerd_shim_beta9_sandbox::{
    events::{EventSender, Publish},
    sandbox::ShimContext,
    task::TaskService,
};
use tokio::sync::mpsc;

/// One runtime for every test here: the shim's reaper lives on the runtime that first uses it.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        // The fake sandboxes are reparented to us when fake-runsc exits, as runsc's are to the shim.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    });
    rt.block_on(f)
}

/// Events as (topic, the event's text), in the order the shim sent them.
struct Channel(mpsc::UnboundedSender<(String, String)>);

#[async_trait]
impl Publish for Channel {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) -> Result<(), String> {
        let _ = self.0.send((topic.to_string(), format!("{event:?}")));
        Ok(())
    }
}

/// A shim with its own runsc root, config and bundles, all removed on drop.
struct Shim {
    task: TaskService,
    events: mpsc::UnboundedReceiver<(String, String)>,
    dir: tempfile::TempDir,
    /// Where the shim puts per-sandbox runsc roots ([runsc] root).
    root: PathBuf,
    config: PathBuf,
}

impl Drop for Shim {
    fn drop(&mut self) {
        // Whatever a failed test left: the fake sandboxes are sleeps named in the runsc roots.
        for root in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(root.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "pid") {
                    if let Ok(pid) = std::fs::read_to_string(f.path()).unwrap_or_default().trim().parse::<i32>() {
                        // SAFETY: a plain kill of a pid the test's fake runsc started.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn shim() -> Shim {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    // The roots' base must be short (the shim refuses more than 14 bytes).
    let root = PathBuf::from(format!("/tmp/b9t{}{}", std::process::id() % 10000, N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    let config = dir.path().join("beta9.toml");
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-runsc");
    std::fs::write(
        &config,
        format!(
            "[runsc]\nbinary = {fake:?}\nroot = {root:?}\n[agent]\nbinary = \"/bin/true\"\n[cgroups]\nenforce = false\n",
            fake = fake,
            root = root
        ),
    )
    .unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let ctx = ShimContext { containerd_address: format!("/test/{}", root.display()), namespace: "test".into() };
    let task = TaskService::new(ctx, EventSender::new(Channel(tx), Duration::from_secs(5)), Arc::new(ExitSignal::default()));
    Shim { task, events, dir, root, config }
}

impl Shim {
    /// A bundle whose process is `true`, with these annotations.
    fn bundle(&self, id: &str, annotations: &[(&str, &str)]) -> String {
        let b = self.dir.path().join(id);
        std::fs::create_dir_all(b.join("rootfs/bin")).unwrap();
        let bin = b.join("rootfs/bin/true");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let annotations: serde_json::Map<String, serde_json::Value> =
            annotations.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["true"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": false},
            "annotations": annotations,
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}
        });
        std::fs::write(b.join("config.json"), spec.to_string()).unwrap();
        b.to_string_lossy().into_owned()
    }

    fn options(&self) -> MessageField<Any> {
        // runtimeoptions.v1.Options { config_path }
        let path = self.config.to_string_lossy().into_owned();
        let mut value = vec![0x12, path.len() as u8];
        value.extend(path.as_bytes());
        MessageField::some(Any { type_url: "runtimeoptions.v1.Options".into(), value, ..Default::default() })
    }

    async fn create(&self, id: &str, annotations: &[(&str, &str)]) -> Result<u32, String> {
        let req = api::CreateTaskRequest { id: id.into(), bundle: self.bundle(id, annotations), options: self.options(), ..Default::default() };
        self.task.task_create(req).await.map(|r| r.pid).map_err(|e| e.to_string())
    }

    async fn start(&self, id: &str, exec_id: &str) -> Result<u32, String> {
        let req = api::StartRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() };
        self.task.task_start(req).await.map(|r| r.pid).map_err(|e| e.to_string())
    }

    async fn state(&self, id: &str, exec_id: &str) -> api::Status {
        let req = api::StateRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() };
        self.task.task_state(req).await.unwrap().status.enum_value().unwrap()
    }

    async fn kill(&self, id: &str, signal: u32) {
        let req = api::KillRequest { id: id.into(), signal, ..Default::default() };
        self.task.task_kill(req).await.unwrap();
    }

    async fn wait(&self, id: &str) -> u32 {
        let req = api::WaitRequest { id: id.into(), ..Default::default() };
        tokio::time::timeout(Duration::from_secs(20), self.task.task_wait(req)).await.expect("Wait").unwrap().exit_status
    }

    async fn delete(&self, id: &str) {
        let req = api::DeleteRequest { id: id.into(), ..Default::default() };
        self.task.task_delete(req).await.unwrap();
    }

    async fn exec(&self, id: &str, exec_id: &str) -> Result<(), String> {
        let spec = Any { value: br#"{"args":["true"],"cwd":"/"}"#.to_vec(), ..Default::default() };
        let req = api::ExecProcessRequest { id: id.into(), exec_id: exec_id.into(), spec: MessageField::some(spec), ..Default::default() };
        self.task.task_exec(req).await.map_err(|e| e.to_string())
    }

    /// The one sandbox's runsc root.
    fn runsc_root(&self) -> PathBuf {
        std::fs::read_dir(&self.root).unwrap().flatten().map(|d| d.path()).next().expect("a runsc root")
    }

    /// The next `n` events, as "topic id" (the exec's id for exec events).
    async fn next_events(&mut self, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < n {
            let (topic, text) = tokio::time::timeout(Duration::from_secs(20), self.events.recv()).await.expect("an event").unwrap();
            let field = |name: &str| text.split(&format!("{name}: \"")).nth(1).and_then(|s| s.split('"').next()).unwrap_or("").to_string();
            let exec = field("exec_id");
            let id = if !exec.is_empty() { exec } else if topic == "/tasks/exit" { field(" id") } else { field("container_id") };
            got.push(format!("{topic} {id}"));
        }
        got
    }
}

const POD: &[(&str, &str)] = &[("io.kubernetes.cri.container-type", "sandbox"), ("io.kubernetes.cri.sandbox-id", "pod")];
const APP: &[(&str, &str)] = &[("io.kubernetes.cri.container-type", "container"), ("io.kubernetes.cri.sandbox-id", "pod")];

#[test]
fn events_come_in_order_and_an_exec_exits_before_its_init() {
    block_on(async {
        let mut s = shim();
        s.create("c1", &[]).await.unwrap();
        s.start("c1", "").await.unwrap();
        s.exec("c1", "e1").await.unwrap();
        s.start("c1", "e1").await.unwrap();
        assert_eq!(s.next_events(5).await, ["/tasks/create c1", "/tasks/start c1", "/tasks/exec-added e1", "/tasks/exec-started e1", "/tasks/exit e1"]);
        s.kill("c1", 9).await;
        assert_eq!(s.wait("c1").await, 137);
        s.delete("c1").await;
        assert_eq!(s.next_events(2).await, ["/tasks/exit c1", "/tasks/delete c1"]);
    });
}

#[test]
fn pod_membership_follows_the_cri_annotations() {
    block_on(async {
        let s = shim();
        s.create("pod", POD).await.unwrap();
        let e = s.create("early", APP).await.unwrap_err();
        assert!(e.contains("pod sandbox pod is not running"), "{e}");
        s.start("pod", "").await.unwrap();
        s.create("app", APP).await.expect("an app container joins its running pod");
        let other = [("io.kubernetes.cri.container-type", "container"), ("io.kubernetes.cri.sandbox-id", "elsewhere")];
        let e = s.create("stray", &other).await.unwrap_err();
        assert!(e.contains("pod sandbox elsewhere is not served by this shim"), "{e}");
        let e = s.create("second", &[]).await.unwrap_err();
        assert!(e.contains("already runs a sandbox"), "{e}");
        let docker = [APP, &[("io.beta9.sandbox.docker", "true")]].concat();
        let e = s.create("docker", &docker).await.unwrap_err();
        assert!(e.contains("pod_annotations"), "Docker needs the pod's sandbox to have it: {e}");
        let e = s.create("app", APP).await.unwrap_err();
        assert!(e.contains("already exists"), "{e}");
        s.kill("pod", 9).await;
        s.wait("pod").await;
    });
}

#[test]
fn a_paused_pod_shows_every_container_paused_and_refuses_exec_until_resumed() {
    block_on(async {
        let s = shim();
        s.create("pod", POD).await.unwrap();
        s.start("pod", "").await.unwrap();
        s.create("app", APP).await.unwrap();
        s.start("app", "").await.unwrap();
        let e = s.task.task_pause(api::PauseRequest { id: "app".into(), ..Default::default() }).await.unwrap_err().to_string();
        assert!(e.contains("pause the sandbox's task"), "{e}");
        s.task.task_pause(api::PauseRequest { id: "pod".into(), ..Default::default() }).await.unwrap();
        assert_eq!(s.state("pod", "").await, api::Status::PAUSED);
        assert_eq!(s.state("app", "").await, api::Status::PAUSED, "runsc pauses the whole sandbox");
        let e = s.exec("app", "x").await.unwrap_err();
        assert!(e.contains("paused"), "{e}");
        s.task.task_resume(api::ResumeRequest { id: "pod".into(), ..Default::default() }).await.unwrap();
        assert_eq!(s.state("app", "").await, api::Status::RUNNING);
        s.exec("app", "x").await.expect("exec once resumed");
        s.kill("pod", 9).await;
        s.wait("pod").await;
    });
}

#[test]
fn when_a_pods_sandbox_ends_its_containers_exits_come_first() {
    block_on(async {
        let mut s = shim();
        s.create("pod", POD).await.unwrap();
        s.start("pod", "").await.unwrap();
        s.create("app", APP).await.unwrap();
        s.start("app", "").await.unwrap();
        assert_eq!(s.next_events(4).await, ["/tasks/create pod", "/tasks/start pod", "/tasks/create app", "/tasks/start app"]);
        // The sandbox process dies; the app container's `runsc wait` learns it too.
        let app_pid = s.runsc_root().join("app.pid");
        let app_pid: i32 = std::fs::read_to_string(app_pid).unwrap().trim().parse().unwrap();
        s.kill("pod", 9).await;
        unsafe { libc::kill(app_pid, libc::SIGKILL) };
        assert_eq!(s.next_events(2).await, ["/tasks/exit app", "/tasks/exit pod"]);
    });
}

#[test]
fn a_slow_create_does_not_delay_another_containers_state() {
    block_on(async {
        let s = Arc::new(shim());
        s.create("pod", POD).await.unwrap();
        s.start("pod", "").await.unwrap();
        let slow = {
            let s = s.clone();
            tokio::spawn(async move { s.create("app-slow-create", APP).await })
        };
        // The fake runsc is inside create now, and stays there until released.
        let runsc_root = s.runsc_root();
        while !runsc_root.join("creating").exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.state("pod", "").await, api::Status::RUNNING, "State answers while the other Create waits");
        assert!(!slow.is_finished());
        std::fs::write(runsc_root.join("release"), "").unwrap();
        slow.await.unwrap().expect("the slow Create completes once released");
        s.kill("pod", 9).await;
        s.wait("pod").await;
    });
}
