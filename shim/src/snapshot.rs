//! Snapshot and restore of a whole sandbox with runsc's checkpoint and restore: its kernel,
//! memory and the files its overlay holds, dockerd and its images included. Checkpoint writes
//! runsc's image files and, beside them, a record of what took them; containerd tars the
//! directory into its content store. Restore reads the record first, so an image from another
//! runsc or of another rootfs is refused in words, where runsc would fail obscurely or not at all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    bundle::Mount,
    error::{Error, Result},
};

/// The record's name in the image directory, beside runsc's files.
pub const RECORD: &str = "beta9-checkpoint.json";
/// The file every runsc image has (`pages*.img` come with `--compression=none`).
const STATE_FILE: &str = "checkpoint.img";

/// What took a checkpoint, and of what.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// `runsc --version`'s first line: only the same runsc restores its images.
    pub runsc: String,
    /// The container the sandbox was checkpointed as.
    pub id: String,
    /// The image layers of its rootfs (the overlay's lower directories, or the bind source):
    /// files the saved processes had open must be found again at restore.
    pub layers: Vec<Layer>,
    /// Whether dockerd ran in it (its nested network is made again after a restore).
    pub docker: bool,
}

/// One image layer: where it is on this node, and what it holds (the same image has the same
/// digest on another node, where the path differs).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    pub path: String,
    pub digest: String,
}

/// How deep and how much of a layer its digest reads: names, kinds and sizes of what is near
/// its root (binaries, libraries, configuration), enough to tell images apart in milliseconds.
const DIGEST_DEPTH: usize = 3;
const DIGEST_ENTRIES: usize = 4096;

/// A layer's digest: FNV-1a over the sorted names, kinds and sizes of its first entries.
pub fn digest(layer: &Path) -> String {
    fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if out.len() >= DIGEST_ENTRIES {
                return;
            }
            let Ok(meta) = e.metadata() else { continue };
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            let kind = if meta.is_dir() { 'd' } else if meta.is_file() { 'f' } else { 'o' };
            out.push(format!("{name} {kind} {}", if meta.is_file() { meta.len() } else { 0 }));
            if meta.is_dir() && depth > 1 {
                walk(&e.path(), &name, depth - 1, out);
            }
        }
    }
    let mut entries = Vec::new();
    walk(layer, "", DIGEST_DEPTH, &mut entries);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entries.join("\n").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}:{}", entries.len())
}

/// The image layers a rootfs is made of, as containerd's mounts name them.
pub fn layers(rootfs: &[Mount]) -> Vec<String> {
    let mut out = Vec::new();
    for m in rootfs {
        match m.options.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
            Some(lower) => out.extend(lower.split(':').map(str::to_string)),
            None if m.kind == "bind" || m.kind.is_empty() => out.push(m.source.clone()),
            None => {}
        }
    }
    out
}

impl CheckpointRecord {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Other(format!("encode the checkpoint record: {e}")))?;
        std::fs::write(dir.join(RECORD), text).map_err(Error::io(format!("write {}", dir.join(RECORD).display())))
    }

    /// The record of the image in `dir`; an image without one (or no image at all) is refused.
    pub fn read(dir: &Path) -> Result<CheckpointRecord> {
        if !dir.join(STATE_FILE).is_file() {
            return Err(Error::InvalidArgument(format!("checkpoint {}: no runsc image there ({STATE_FILE} is missing)", dir.display())));
        }
        let text = std::fs::read_to_string(dir.join(RECORD)).map_err(|e| {
            Error::InvalidArgument(format!("checkpoint {}: {RECORD} cannot be read ({e}): not a checkpoint of this runtime", dir.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| Error::InvalidArgument(format!("checkpoint {}: {RECORD}: {e}", dir.display())))
    }

    /// Whether this image can come back with `runsc` (its version line) on a rootfs of `layers`:
    /// the same layers on this node, or layers of the same digests on another.
    pub fn check(&self, runsc: &str, layers: &[String]) -> Result<()> {
        if self.runsc != runsc {
            return Err(Error::FailedPrecondition(format!(
                "the checkpoint was taken by {:?}, and only that runsc can restore it; this node runs {runsc:?}",
                self.runsc
            )));
        }
        let same_paths = self.layers.len() == layers.len() && self.layers.iter().zip(layers).all(|(a, b)| &a.path == b);
        if same_paths || self.layers.iter().zip(layers).all(|(a, b)| a.digest == digest(Path::new(b))) && self.layers.len() == layers.len() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "the checkpoint of {} was taken on another image ({} layers, this container's rootfs has {} that differ): restore it into a container of the image it was taken from",
            self.id,
            self.layers.len(),
            layers.len()
        )))
    }
}

/// Copies runsc's image (and the record) from `from` into `to`, which containerd archives when
/// a client named an image path of its own.
pub fn copy_image(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(Error::io(format!("read {}", from.display())))? {
        let entry = entry.map_err(Error::io(format!("read {}", from.display())))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let dest: PathBuf = to.join(entry.file_name());
            std::fs::copy(entry.path(), &dest).map_err(Error::io(format!("copy the checkpoint into {}", dest.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lower: &str) -> Mount {
        Mount { kind: "overlay".into(), source: "overlay".into(), options: vec![format!("lowerdir={lower}"), "upperdir=/u".into()] }
    }

    #[test]
    fn layers_are_the_overlays_lower_directories() {
        assert_eq!(layers(&[overlay("/s/2/fs:/s/1/fs")]), ["/s/2/fs", "/s/1/fs"]);
        let bind = Mount { kind: "bind".into(), source: "/s/3/fs".into(), options: vec!["rbind".into()] };
        assert_eq!(layers(&[bind]), ["/s/3/fs"]);
    }

    #[test]
    fn a_record_travels_with_the_image_and_refuses_what_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let e = CheckpointRecord::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("checkpoint.img is missing"), "{e}");
        std::fs::write(dir.path().join(STATE_FILE), "x").unwrap();
        let e = CheckpointRecord::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a checkpoint of this runtime"), "{e}");

        // Two copies of one layer on two "nodes", and a layer of another image.
        let (here, there, other) = (dir.path().join("here"), dir.path().join("there"), dir.path().join("other"));
        for (d, size) in [(&here, 5), (&there, 5), (&other, 6)] {
            std::fs::create_dir_all(d.join("bin")).unwrap();
            std::fs::write(d.join("bin/busybox"), vec![0u8; size]).unwrap();
        }
        let (here_s, there_s, other_s) = (here.display().to_string(), there.display().to_string(), other.display().to_string());
        let r = CheckpointRecord {
            runsc: "runsc version 0.0~20240729.0".into(),
            id: "a".into(),
            layers: vec![Layer { path: here_s.clone(), digest: digest(&here) }],
            docker: true,
        };
        r.write(dir.path()).unwrap();
        let back = CheckpointRecord::read(dir.path()).unwrap();
        assert_eq!(back, r);
        let v = "runsc version 0.0~20240729.0";
        assert!(back.check(v, &[here_s.clone()]).is_ok());
        assert!(back.check(v, &[there_s]).is_ok(), "the same image elsewhere");
        let e = back.check("runsc version 0.0~20221219.0", &[here_s]).unwrap_err().to_string();
        assert!(e.contains("20240729") && e.contains("20221219") && e.contains("only that runsc"), "{e}");
        let e = back.check(v, &[other_s]).unwrap_err().to_string();
        assert!(e.contains("another image"), "{e}");
    }
}
