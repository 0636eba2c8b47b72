//! containerd-shim-beta9-sandbox: a containerd shim v2 that runs containers under gVisor's runsc.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // What the shim makes (its socket, runsc roots, process specs with their environment, logs)
    // is its own, whatever umask containerd runs with; what a container must read gets its mode.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // The shim reaps its own children (reaper.rs); the crate's reaper would steal their statuses.
    let config = containerd_shim::Config { no_reaper: true, ..Default::default() };
    containerd_shim::asynchronous::run::<containerd_shim_beta9_sandbox::service::Service>("io.beta9.sandbox", Some(config)).await;
}
