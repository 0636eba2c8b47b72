//! containerd-shim-beta9-sandbox: a containerd shim v2 that runs containers under gVisor's runsc.

mod annotations;
mod bundle;
mod cgroup;
mod config;
mod container;
mod docker;
mod error;
mod events;
mod netns;
mod process;
mod reaper;
mod runsc;
mod sandbox;
mod service;
mod spec;
mod stats;
mod stdio;
mod task;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The shim reaps its own children (reaper.rs); the crate's reaper would steal their statuses.
    let config = containerd_shim::Config { no_reaper: true, ..Default::default() };
    containerd_shim::asynchronous::run::<service::Service>("io.beta9.sandbox", Some(config)).await;
}
