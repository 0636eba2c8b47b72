//! The shim's lifecycle as containerd drives it: `start` (spawn the long-lived shim),
//! `delete` (clean up after a shim that is gone) and the server's life.

use std::{env, sync::Arc};

use async_trait::async_trait;
use containerd_shim::{
    api::DeleteResponse,
    asynchronous::{publisher::RemotePublisher, spawn, util::write_str_to_file, ExitSignal},
    protos::protobuf::MessageField,
    Config, Flags, StartOpts,
};

use crate::{
    bundle::{Bundle, Ended},
    cgroup,
    options::RuntimeOptions,
    events::{self, EventSender},
    runsc::{Network, Runsc, RunscFlags},
    sandbox::ShimContext,
    spec,
    task::TaskService,
    timeline,
};

pub struct Service {
    id: String,
    ctx: ShimContext,
    exit: Arc<ExitSignal>,
}

/// The shim groups containers by pod; outside a pod each container has its own shim.
fn grouping(id: &str) -> String {
    spec::load(&env::current_dir().unwrap_or_default())
        .ok()
        .and_then(|s| s.annotations().as_ref().and_then(|a| a.get(spec::SANDBOX_ID).cloned()))
        .unwrap_or_else(|| id.to_string())
}

#[async_trait]
impl containerd_shim::asynchronous::Shim for Service {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            id: args.id.clone(),
            ctx: ShimContext { containerd_address: args.address.clone(), namespace: args.namespace.clone() },
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let launched = timeline::now().as_nanos().to_string();
        // containerd writes the container's runtime options on stdin, in whichever type its
        // client chose; read here, before the crate's spawn would (it reads runc.v1's alone). The
        // shim is then born in the ShimCgroup they name.
        let mut stdin = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(std::io::stdin(), 1 << 20), &mut stdin)
            .map_err(|e| containerd_shim::Error::Other(format!("read the runtime options on stdin: {e}")))?;
        let options = RuntimeOptions::decode_any(&stdin).map_err(|e| containerd_shim::Error::Other(e.to_string()))?;
        if let Some(cgroup) = &options.shim_cgroup {
            cgroup::move_self_to(cgroup).map_err(|e| containerd_shim::Error::Other(format!("runtime option ShimCgroup: {e}")))?;
        }
        let grouping = grouping(&opts.id);
        // The crate's spawn also gives the shim containerd's OOM score + 1, so that it goes first.
        let address = spawn(opts, &grouping, vec![(timeline::LAUNCHED_ENV, &launched)]).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = Bundle::new(env::current_dir().unwrap_or_default());
        let pid = bundle.init_pid().unwrap_or_default();
        // containerd runs this after every shim exit, also after a clean Delete, and waits for
        // it: without a record (written before runsc ran, removed last) no runsc state exists,
        // so only a rootfs mount can be left.
        match bundle.record() {
            Some(r) => {
                let runsc = Runsc::new(r.binary, RunscFlags::new(r.root, bundle.runsc_log(), Network::None));
                bundle.destroy(&runsc, &self.id, Ended::Unknown).await;
            }
            None => bundle.unmount_rootfs(),
        }
        Ok(DeleteResponse {
            pid,
            exit_status: contract::signaled(libc::SIGKILL) as u32,
            exited_at: MessageField::some(containerd_shim::util::timestamp().unwrap_or_default()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        // Our own sender, in order and with a deadline per event; the crate's publisher only
        // tells where containerd listens.
        let containerd = events::Containerd::new(publisher.address.clone(), self.ctx.namespace.clone());
        let events = EventSender::new(containerd, events::DEADLINE);
        TaskService::new(self.ctx.clone(), events, self.exit.clone())
    }
}
