//! What an install did, kept on the node so that uninstall can undo exactly that: every file it
//! wrote with its original bytes (or its absence), the directories it made, the binaries it copied.
//!
//!   /var/lib/beta9-sandbox/record.json        this record
//!   /var/lib/beta9-sandbox/original/<path>    a file's bytes before the first install touched it
//!   /var/lib/beta9-sandbox/written/<path>     the bytes the install left in it

use std::{
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::host::Host;

pub const STATE: &str = "/var/lib/beta9-sandbox";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// containerd's config: if the operator changed it since, our part alone is taken out.
    Containerd,
    /// A runtime config of ours: if the operator changed it since, it is theirs and stays.
    Runtime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub kind: Kind,
    /// None: the file did not exist.
    pub original: Option<Original>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub installer: String,
    pub containerd: String,
    /// CRI's restrict_oom_score_adj was set by us (this host's root may not lower OOM scores).
    pub restrict_oom: bool,
    /// The default runtime install wrote into a 1.x config that had no runtimes of its own.
    #[serde(default)]
    pub default_runtime: Option<String>,
    pub files: Vec<Change>,
    pub dirs: Vec<String>,
    pub binaries: Vec<String>,
}

impl Record {
    fn path(host: &Host) -> PathBuf {
        host.path(&format!("{STATE}/record.json"))
    }

    pub fn load(host: &Host) -> Result<Option<Record>> {
        let p = Self::path(host);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{} is not an install record", p.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    pub fn save(&self, host: &Host) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        write_atomic(&Self::path(host), text.as_bytes(), None)
    }

    pub fn remove(host: &Host) -> Result<()> {
        remove_file(&Self::path(host))
    }

    pub fn change(&self, path: &str) -> Option<&Change> {
        self.files.iter().find(|c| c.path == path)
    }
}

/// Where a copy of a node file is kept under the state directory (`original` or `written`).
pub fn copy_path(host: &Host, which: &str, path: &str) -> PathBuf {
    host.path(&format!("{STATE}/{which}{path}"))
}

pub fn read_opt(p: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

pub fn metadata_of(p: &Path) -> Result<Option<Original>> {
    match std::fs::metadata(p) {
        Ok(m) => Ok(Some(Original {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", p.display())),
    }
}

/// Writes a file whole or not at all (a temporary file beside it, synced, then renamed over it),
/// with the mode and owner given (else 0644, root).
pub fn write_atomic(p: &Path, bytes: &[u8], meta: Option<&Original>) -> Result<()> {
    let dir = p.parent().context("a file path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.beta9-tmp",
        p.file_name().unwrap_or_default().to_string_lossy()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        let m = meta.cloned().unwrap_or(Original {
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        f.set_permissions(std::fs::Permissions::from_mode(m.mode))?;
        std::os::unix::fs::fchown(&f, Some(m.uid), Some(m.gid))?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", p.display()))
}

pub fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_writes_keep_mode_and_bytes() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        assert_eq!(Record::load(&host).unwrap(), None);
        let r = Record {
            installer: "0.1.0".into(),
            containerd: "1.6".into(),
            restrict_oom: true,
            default_runtime: Some("runc".into()),
            files: vec![Change {
                path: "/etc/containerd/config.toml".into(),
                kind: Kind::Containerd,
                original: Some(Original {
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }),
            }],
            dirs: vec!["/etc/containerd".into()],
            binaries: vec![],
        };
        r.save(&host).unwrap();
        assert_eq!(Record::load(&host).unwrap(), Some(r.clone()));
        let f = t.path().join("a/b.toml");
        write_atomic(
            &f,
            b"x = 1\n",
            Some(&Original {
                mode: 0o600,
                uid: 0,
                gid: 0,
            }),
        )
        .unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"x = 1\n");
        assert_eq!(metadata_of(&f).unwrap().unwrap().mode, 0o600);
        assert_eq!(
            copy_path(&host, "original", "/etc/x"),
            t.path().join("var/lib/beta9-sandbox/original/etc/x")
        );
        Record::remove(&host).unwrap();
        assert_eq!(Record::load(&host).unwrap(), None);
    }
}
