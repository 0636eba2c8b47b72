//! A container's bundle: what the shim keeps in it (the rootfs mount, pid files, runsc's log, the
//! record for the `delete` action) and the one way to remove what a sandbox left on the host.

use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::{
    error::{Error, Result},
    runsc::Runsc,
};

const ROOTFS: &str = "rootfs";
/// Upper and work directories of the overlay that makes a read-only rootfs take mount points.
const ROOTFS_RW: &str = "rootfs.rw";
const INIT_PID: &str = "init.pid";
const RUNSC_LOG: &str = "runsc.log.json";
/// How runsc was called, written before it runs and removed last, so that the `delete` action
/// (containerd's cleanup after a shim died) knows what may be left.
const RECORD: &str = "beta9-runsc.json";

/// A rootfs mount from the request.
#[derive(Clone, Debug)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// How runsc was called for a sandbox, and what the shim made beside it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub binary: PathBuf,
    pub root: PathBuf,
    /// The cgroups the shim made for the sandbox, to remove.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Bundle {
    path: PathBuf,
}

impl Bundle {
    pub fn new(path: impl Into<PathBuf>) -> Bundle {
        Bundle { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where containerd wants the rootfs mounted, which is what the spec's root names.
    pub fn rootfs(&self) -> PathBuf {
        self.path.join(ROOTFS)
    }

    pub fn init_pid_file(&self) -> PathBuf {
        self.path.join(INIT_PID)
    }

    pub fn runsc_log(&self) -> PathBuf {
        self.path.join(RUNSC_LOG)
    }

    /// A file for one exec's process spec, pid and internal pid.
    pub fn exec_file(&self, seq: u64, ext: &str) -> PathBuf {
        self.path.join(format!("exec-{seq}.{ext}"))
    }

    pub fn write_record(&self, record: &Record) -> Result<()> {
        let text = serde_json::to_vec(record).map_err(|e| Error::Other(format!("encode the runsc record: {e}")))?;
        std::fs::write(self.path.join(RECORD), text).map_err(Error::io("record how runsc is called"))
    }

    /// How runsc was called for this bundle, if Create got that far.
    pub fn record(&self) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(self.path.join(RECORD)).ok()?).ok()
    }

    /// The pid runsc wrote for the container (its sandbox's).
    pub fn init_pid(&self) -> Result<u32> {
        read_pid(&self.init_pid_file())
    }

    /// Mounts the request's rootfs on a thread of its own: for an overlay with many layers the
    /// crate unshares the calling thread's cwd and chdirs it, which must not stick to a runtime
    /// thread, and a mount may take long enough to stall every other request. Returns whether
    /// the rootfs is read-only (a read-only snapshot view): then a writable overlay is stacked
    /// on it, whose upper layer only ever holds the mount points runsc's gofer creates for the
    /// spec's bind mounts (the agent's among them); the container's own writes must go to runsc's
    /// memory overlay (`spec::overlay_medium`).
    pub async fn mount_rootfs(&self, mounts: &[Mount]) -> Result<bool> {
        self.mount_with(mounts, |mounts, target| {
            mounts.iter().try_for_each(|m| {
                containerd_shim::mount::mount_rootfs(Some(m.kind.as_str()), Some(m.source.as_str()), &m.options, target)
                    .map_err(|e| Error::Other(format!("mount rootfs ({} {}): {e}", m.kind, m.source)))
            })
        })
        .await
    }

    async fn mount_with(&self, mounts: &[Mount], mount: fn(&[Mount], &Path) -> Result<()>) -> Result<bool> {
        let target = self.rootfs();
        let upper = self.path.join(ROOTFS_RW);
        if mounts.is_empty() && !target.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&target).map_err(Error::io(format!("create {}", target.display())))?;
        let mounts = mounts.to_vec();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("mount".into())
            .spawn(move || {
                let r = mount(&mounts, &target).and_then(|()| {
                    let read_only = is_read_only(&target);
                    if read_only {
                        stack_writable_overlay(&target, &upper)?;
                    }
                    Ok(read_only)
                });
                let _ = tx.send(r);
            })
            .map_err(Error::io("start a thread to mount the rootfs"))?;
        rx.await.unwrap_or_else(|_| Err(Error::Other("mounting the rootfs panicked".into())))
    }

    pub fn unmount_rootfs(&self) {
        let rootfs = self.rootfs();
        if let Err(e) = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH) {
            warn!("unmount {}: {e}", rootfs.display());
        }
        let _ = std::fs::remove_dir_all(self.path.join(ROOTFS_RW));
    }

    /// Removes what a sandbox's container left on the host, whatever state it is in: its runsc
    /// state (with `runsc delete --force`, or by hand when `ended` allows it), a sandbox runsc
    /// no longer knows, the rootfs mount, the runsc root once empty, the cgroups the shim made,
    /// and last the record. Used by Delete, a failed Create and the `delete` action after a
    /// shim died.
    pub async fn destroy(&self, runsc: &Runsc, id: &str, ended: Ended) {
        let mut timeline = crate::timeline::Timeline::start();
        // Read first: after a shim crash the client may remove the bundle while this runs.
        let cgroups = self.record().map(|r| r.cgroups).unwrap_or_default();
        let fast = ended == Ended::ByItself && !runsc.flags.extra.iter().any(|f| f.contains("overlay")) && self.remove_ended_sandbox(runsc, id);
        let state_gone = fast || match runsc.delete(id).await {
            Ok(()) => true,
            Err(e) => {
                warn!("runsc delete {id}: {e}");
                false
            }
        };
        timeline.mark(if fast { "runsc state" } else { "runsc delete" });
        // A sandbox runsc no longer knows about must not outlive its state.
        if let Ok(pid) = self.init_pid() {
            kill_if_runsc(pid, &runsc.flags.root);
        }
        self.unmount_rootfs();
        timeline.mark("rootfs");
        let root = &runsc.flags.root;
        // Only empty: other containers of the same sandbox may still live in it.
        if std::fs::remove_dir(root).is_err() && root.exists() {
            let left = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
            if left > 0 {
                info!("runsc root {} still holds {left} entries", root.display());
            }
        }
        // Whatever runsc said (its delete fails on a rootfs the client already removed): what is
        // still in the sandbox's cgroup is the sandbox's and goes with it.
        let cgroups_gone = crate::cgroup::remove_recorded(&cgroups).await;
        timeline.mark("cgroup");
        info!("timeline of {id} delete: {}", timeline.take_line());
        if state_gone && cgroups_gone {
            // Last: without it the delete action knows that nothing is left to remove.
            let _ = std::fs::remove_file(self.path.join(RECORD));
        }
    }

    /// Does what `runsc delete` does for a sandbox that ended by itself (its gofer exits with
    /// it), without the 20 ms runsc takes just to start: removes the runsc root it had alone,
    /// the gofer if still there, and gVisor's overlay file in the rootfs. False if the root holds
    /// anything but the one container's state: then runsc must do it.
    fn remove_ended_sandbox(&self, runsc: &Runsc, id: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct State {
            #[serde(rename = "goferPid")]
            gofer_pid: Option<u32>,
        }
        let root = &runsc.flags.root;
        let Ok(entries) = std::fs::read_dir(root) else { return false };
        let states: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "state")).collect();
        let [state] = &states[..] else { return false };
        let Some(state) = std::fs::read(state).ok().and_then(|b| serde_json::from_slice::<State>(&b).ok()) else {
            return false;
        };
        if let Some(pid) = state.gofer_pid {
            kill_if_runsc(pid, root);
        }
        let _ = std::fs::remove_file(self.rootfs().join(format!(".gvisor.filestore.{id}")));
        std::fs::remove_dir_all(root).is_ok()
    }
}

/// Whether the sandbox is known to have ended by itself, so that runsc need not be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    ByItself,
    Unknown,
}

pub fn is_read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Mounts an overlay on `target` whose lower layer is what is mounted there now (the path is
/// resolved before the overlay covers it), with its upper and work directories under `rw`.
fn stack_writable_overlay(target: &Path, rw: &Path) -> Result<()> {
    let (upper, work) = (rw.join("upper"), rw.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(Error::io(format!("create {}", d.display())))?;
    }
    // The overlay's root takes the upper directory's mode and owner: the image's root's.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = std::fs::metadata(target).map_err(Error::io(format!("stat {}", target.display())))?;
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(root.mode() & 0o7777)).map_err(Error::io(format!("chmod {}", upper.display())))?;
    std::os::unix::fs::chown(&upper, Some(root.uid()), Some(root.gid())).map_err(Error::io(format!("chown {}", upper.display())))?;
    // overlayfs reads ',' as the end of an option and ':' as a layer separator.
    let escape = |p: &Path| p.display().to_string().replace('\\', "\\\\").replace(',', "\\,").replace(':', "\\:");
    let data = format!("lowerdir={},upperdir={},workdir={}", escape(target), escape(&upper), escape(&work));
    nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::empty(), Some(data.as_str()))
        .map_err(|e| Error::Other(format!("mount a writable overlay on the read-only rootfs {}: {e}", target.display())))
}

pub fn read_pid(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    s.trim().parse().map_err(|e| Error::Other(format!("bad pid in {}: {e}", path.display())))
}

/// Kills `pid` if it is a runsc process of this root: a pid read from a file may have been
/// reused by now, even by another sandbox's runsc.
pub fn kill_if_runsc(pid: u32, root: &Path) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = format!("--root={}", root.display());
    if cmdline.starts_with(b"runsc") && cmdline.split(|b| *b == 0).any(|a| a == ours.as_bytes()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runsc::{Network, RunscFlags};

    #[test]
    fn an_ended_sandbox_is_removed_only_when_its_root_holds_just_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let (root, bundle) = (dir.path().join("root"), Bundle::new(dir.path().join("bundle")));
        std::fs::create_dir_all(bundle.rootfs()).unwrap();
        let runsc = Runsc::new("runsc".into(), RunscFlags::new(root.clone(), bundle.runsc_log(), Network::None));
        assert!(!bundle.remove_ended_sandbox(&runsc, "c"), "no root: runsc decides");

        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("c_sandbox:c.state"), r#"{"id":"c","goferPid":999999999}"#).unwrap();
        std::fs::write(root.join("c_sandbox:d.state"), "{}").unwrap();
        assert!(!bundle.remove_ended_sandbox(&runsc, "c"), "two containers' state: runsc decides");
        assert!(root.exists());

        std::fs::remove_file(root.join("c_sandbox:d.state")).unwrap();
        std::fs::write(root.join("runsc-c.sock"), "").unwrap();
        std::fs::write(bundle.rootfs().join(".gvisor.filestore.c"), "").unwrap();
        assert!(bundle.remove_ended_sandbox(&runsc, "c"));
        assert!(!root.exists() && !bundle.rootfs().join(".gvisor.filestore.c").exists());
    }

    #[tokio::test]
    async fn a_read_only_rootfs_gets_a_writable_overlay_for_mount_points() {
        use nix::mount::{mount, umount, MsFlags};
        let dir = tempfile::tempdir().unwrap();
        let (image, bundle) = (dir.path().join("image"), Bundle::new(dir.path().join("bundle,x:y")));
        std::fs::create_dir_all(&image).unwrap();
        // A read-only view, as the overlayfs snapshotter gives one for a single-layer image (the
        // tests run as root).
        mount(Some("tmpfs"), &image, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        std::fs::create_dir_all(image.join("etc")).unwrap();
        std::fs::write(image.join("etc/hostname"), "image\n").unwrap();
        let view = Mount { kind: "bind".into(), source: image.display().to_string(), options: vec!["ro".into(), "rbind".into()] };
        let read_only = bundle.mount_rootfs(&[view]).await;
        let rootfs = bundle.rootfs();
        let made = std::fs::create_dir(rootfs.join(".beta9"));
        let seen = std::fs::read_to_string(rootfs.join("etc/hostname"));
        bundle.unmount_rootfs();
        let upper_left = dir.path().join("bundle,x:y").join(ROOTFS_RW).exists();
        umount(&image).unwrap();
        assert!(read_only.unwrap(), "the view is read-only");
        made.expect("a mount point can be made on top of it");
        assert_eq!(seen.unwrap(), "image\n", "the view's files show through");
        assert!(!image.join(".beta9").exists(), "nothing reaches the image");
        assert!(!upper_left, "the upper layer goes with the mount");

        let writable = Bundle::new(dir.path().join("plain"));
        std::fs::create_dir_all(writable.rootfs()).unwrap();
        assert!(!writable.mount_rootfs(&[]).await.unwrap(), "a writable rootfs is left as it is");
    }

    #[test]
    fn a_slow_mount_leaves_the_runtimes_thread_free() {
        static RELEASE: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> = std::sync::Mutex::new(None);
        let (release, wait) = std::sync::mpsc::channel();
        *RELEASE.lock().unwrap() = Some(wait);
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle::new(dir.path());
        let mounts = [Mount { kind: "bind".into(), source: "/nowhere".into(), options: vec![] }];
        // The shim's runtime has one thread: anything blocking it would stall every request.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let slow = bundle.mount_with(&mounts, |_, _| {
                let wait = RELEASE.lock().unwrap().take().unwrap();
                wait.recv().unwrap();
                Ok(())
            });
            tokio::pin!(slow);
            // Another request is served while the mount blocks its own thread.
            let other = tokio::task::spawn(async { "answered" });
            tokio::select! {
                _ = &mut slow => panic!("the mount cannot be done before it is released"),
                r = other => assert_eq!(r.unwrap(), "answered"),
            }
            release.send(()).unwrap();
            slow.await.unwrap();
        });
    }

    #[test]
    fn the_record_round_trips_and_reads_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle::new(dir.path());
        assert_eq!(bundle.record(), None);
        let r = Record { binary: "/usr/bin/runsc".into(), root: "/run/beta9/x".into(), cgroups: vec!["/sys/fs/cgroup/pids/a".into()] };
        bundle.write_record(&r).unwrap();
        assert_eq!(bundle.record(), Some(r));
        std::fs::write(dir.path().join(RECORD), r#"{"binary":"runsc","root":"/run/beta9/y"}"#).unwrap();
        assert_eq!(bundle.record().unwrap().cgroups, Vec::<PathBuf>::new());
    }
}
