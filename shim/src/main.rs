//! containerd-shim-beta9-sandbox: a containerd shim v2 that runs containers under gVisor's runsc.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The shim reaps its own children (reaper.rs); the crate's reaper would steal their statuses.
    let config = containerd_shim::Config { no_reaper: true, ..Default::default() };
    containerd_shim::asynchronous::run::<containerd_shim_beta9_sandbox::service::Service>("io.beta9.sandbox", Some(config)).await;
}
