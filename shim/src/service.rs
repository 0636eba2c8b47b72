//! The shim's lifecycle as containerd drives it: `start` (spawn the long-lived shim),
//! `delete` (clean up after a dead shim) and the server's life.

use std::{
    env,
    process::{Command, Stdio},
    sync::Arc,
    time::SystemTime,
};

use async_trait::async_trait;
use containerd_shim::{
    api::DeleteResponse,
    asynchronous::{publisher::RemotePublisher, util::write_str_to_file, ExitSignal},
    protos::protobuf::{well_known_types::timestamp::Timestamp, MessageField},
    socket_address, Config, Flags, StartOpts,
};
use log::warn;

use crate::{
    container::{recorded_runsc, teardown, unmount_rootfs},
    runsc::{Network, Runsc, RunscFlags},
    spec,
    task::TaskService,
};

pub struct Service {
    id: String,
    namespace: String,
    /// containerd's own address, which tells containerds apart.
    address: String,
    exit: Arc<ExitSignal>,
}

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> containerd_shim::Error + '_ {
    move |err| containerd_shim::Error::IoError { context: context.into(), err }
}


/// The shim groups containers by pod; outside a pod each container has its own shim.
fn grouping(id: &str) -> String {
    spec::load(&env::current_dir().unwrap_or_default())
        .ok()
        .and_then(|s| s.annotations().as_ref().and_then(|a| a.get(spec::SANDBOX_ID).cloned()))
        .unwrap_or_else(|| id.to_string())
}

/// containerd's oom_score_adj + 1, so the shim dies before containerd; a root without
/// CAP_SYS_RESOURCE cannot lower scores, and that must not stop the shim.
fn adjust_oom_score(pid: u32) {
    let parent = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", std::os::unix::process::parent_id()));
    if let Some(score) = parent.ok().and_then(|s| s.trim().parse::<i64>().ok()) {
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), (score + 1).min(1000).to_string()) {
            warn!("cannot set the shim's oom_score_adj: {e}");
        }
    }
}

#[async_trait]
impl containerd_shim::asynchronous::Shim for Service {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let address = socket_address(&opts.address, &opts.namespace, &grouping(&opts.id));
        let mut cmd = Command::new(env::current_exe().map_err(io_err("current exe"))?);
        cmd.current_dir(env::current_dir().map_err(io_err("cwd"))?)
            .args(["-namespace", &opts.namespace, "-id", &opts.id, "-address", &opts.address, "-socket", &address])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if opts.debug {
            cmd.arg("-debug");
        }
        let mut child = cmd.spawn().map_err(io_err("spawn shim"))?;
        adjust_oom_score(child.id());
        // The server points its stdout at stderr once it listens: EOF here means ready.
        let mut out = child.stdout.take().unwrap();
        tokio::task::spawn_blocking(move || std::io::copy(&mut out, &mut std::io::stderr()))
            .await
            .ok();
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = env::current_dir().unwrap_or_default();
        // containerd runs this after every shim exit, also after a clean Delete, and waits for
        // it: without a record (written before runsc ran, removed last by teardown) no runsc
        // state exists, so only a rootfs mount can be left.
        match recorded_runsc(&bundle) {
            Some(r) => {
                let flags = RunscFlags::new(r.root, bundle.join("runsc.log.json"), Network::None);
                teardown(&Runsc::new(r.binary, flags), &self.id, &bundle).await;
            }
            None => unmount_rootfs(&bundle),
        }
        let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(Timestamp {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(self.address.clone(), self.namespace.clone(), publisher, self.exit.clone())
    }
}
