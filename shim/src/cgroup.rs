//! The sandbox's cgroup: limits, OOM, stats and update.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::{config::Config, container::Container, error::Result, spec::Role};

pub struct SandboxCgroup {}

impl SandboxCgroup {
    pub fn plan(_spec: &Spec, _role: &Role, _config: &Config, _id: &str, _namespace: &str) -> Result<Option<SandboxCgroup>> {
        Ok(None)
    }
    pub fn created_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    pub fn create(&self) -> Result<()> {
        Ok(())
    }
    pub fn adopt_sandbox(&self, _pid: u32, _root: &Path) -> Result<()> {
        Ok(())
    }
    pub fn adopt_new(&self, _root: &Path) -> Result<()> {
        Ok(())
    }
    pub fn oom_killed(&self) -> bool {
        false
    }
    pub fn remove(&self) {}
}

pub fn update(_c: &Container, _resources: &[u8]) -> Result<()> {
    Err(crate::error::Error::Unimplemented("Update is not supported yet".into()))
}

pub fn remove_recorded(_paths: &[PathBuf]) {}
