//! beta9-sandbox-install: registers the beta9 sandbox runtime with a node's containerd (in the
//! schema of its version), and takes it out again, giving every file back as it was.
//!
//! `schema` knows containerd's config schemas (pure), `check` what a node needs, `host` the node
//! under its root and its processes, `record` what an install did, `install` the two actions.

pub mod check;
pub mod host;
pub mod install;
pub mod record;
pub mod schema;
