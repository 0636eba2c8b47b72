//! containerd-shim-beta9-sandbox as a library: the binary (main.rs) hands `service::Service` to
//! the containerd-shim crate, and the integration tests drive `task::TaskService` directly.

pub mod annotations;
pub mod bundle;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod docker;
pub mod error;
pub mod events;
pub mod mountinfo;
pub mod netns;
pub mod options;
pub mod probe;
pub mod process;
pub mod reaper;
pub mod runsc;
pub mod sandbox;
pub mod seccomp;
pub mod service;
pub mod snapshot;
pub mod spec;
pub mod stats;
pub mod stdio;
pub mod task;
pub mod timeline;
