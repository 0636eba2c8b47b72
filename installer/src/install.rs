//! install and uninstall: the plan for a node (pure), then its changes, each recorded before it
//! is made, so uninstall can give every file back as it was.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use toml_edit::DocumentMut;

use crate::{
    check::{self, Level},
    host::{self, Host, Sandbox},
    record::{self, Change, Kind, Record},
    schema::{self, Version, DROP_IN, HANDLERS, MAIN_CONFIG},
};

pub const BINARIES: [&str; 2] = [host::SHIM, "beta9-sandbox-agent"];
/// Where copied binaries go: on containerd's PATH under systemd, and not the package manager's.
pub const BIN_DIR: &str = "/usr/local/bin";
const EXAMPLE: &str = include_str!("../../config/beta9-sandbox.toml");

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// containerd's version when it should not be asked (`--containerd-version`).
    pub version: Option<Version>,
    /// Where the shim and the agent are (`--from`); by default beside this installer.
    pub from: Option<PathBuf>,
    pub no_restart: bool,
    /// uninstall: stop our sandboxes instead of refusing.
    pub drain: bool,
}

/// The runtime config of a handler, from the example config (every key, commented): Docker is
/// allowed only in beta9-docker's.
pub fn runtime_config(allow_docker: bool) -> String {
    let who = if allow_docker {
        "beta9-docker: Docker allowed"
    } else {
        "beta9 (and ctr, Docker Engine): Docker refused"
    };
    let header = format!("# Written by beta9-sandbox-install for the CRI handler {who}. Yours to edit:\n# install never overwrites it, uninstall keeps it once changed.\n");
    let body = EXAMPLE.replace(
        "\nallow_docker = true\n",
        &format!("\nallow_docker = {allow_docker}\n"),
    );
    header + &body
}

/// containerd's version: as told, else from the node's own `containerd --version`.
pub fn containerd_version(host: &Host, told: Option<Version>) -> Result<Version, String> {
    if let Some(v) = told {
        return Ok(v);
    }
    if host.find("containerd").is_none() {
        return Err(format!(
            "not found on {} at {} (Debian: apt install containerd)",
            host::NODE_PATH,
            host.root.display()
        ));
    }
    let out = host.output("containerd", &["--version"])?;
    Version::parse(&out).ok_or_else(|| {
        format!(
            "cannot read a version from `containerd --version`: {}",
            out.trim()
        )
    })
}

fn read_doc(host: &Host, path: &str) -> Result<(Option<Vec<u8>>, DocumentMut)> {
    let bytes = record::read_opt(&host.path(path))?;
    let doc = match &bytes {
        Some(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<DocumentMut>().ok())
            .with_context(|| {
                format!("{path} is not valid TOML: containerd could not read it either")
            })?,
        None => DocumentMut::new(),
    };
    Ok((bytes, doc))
}

/// One file the install wants, with the bytes it wants in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub path: String,
    pub kind: Kind,
    pub bytes: Vec<u8>,
    /// A runtime config is created only where none exists: the operator's is never overwritten.
    pub only_if_absent: bool,
}

/// What the node's containerd config should hold. Pure: the current main config in, files out.
/// `defaults` is `containerd config default` (1.x, where the config has no runtimes of its own).
pub fn plan_containerd(
    version: Version,
    main: Option<&DocumentMut>,
    defaults: Option<&DocumentMut>,
    ours_before: bool,
    restrict_oom: bool,
) -> Result<Vec<Planned>, String> {
    let mut out = Vec::new();
    if version.merges_drop_ins() {
        if let Some(doc) = main {
            // A drop-in would silently override a same-named handler of the operator's.
            let (_, foreign) = schema::existing(doc);
            if !foreign.is_empty() {
                return Err(format!("{MAIN_CONFIG} already has a runtime handler named {} that is not ours: remove or rename it", foreign.join(" and ")));
            }
        }
        out.push(Planned {
            path: DROP_IN.into(),
            kind: Kind::Containerd,
            bytes: schema::drop_in(main.map(|d| schema::schema_of(d).max(2)).unwrap_or(3), restrict_oom).into_bytes(),
            only_if_absent: false,
        });
        let main_text = match main {
            None => schema::new_main_v3(),
            Some(doc) => {
                let mut d = doc.clone();
                schema::ensure_import(&mut d, "/etc/containerd", DROP_IN)?;
                d.to_string()
            }
        };
        out.push(Planned {
            path: MAIN_CONFIG.into(),
            kind: Kind::Containerd,
            bytes: main_text.into_bytes(),
            only_if_absent: false,
        });
    } else {
        let mut d = match main {
            Some(doc) => doc.clone(),
            None => format!("{}\nversion = 2\n", schema::MARK)
                .parse()
                .expect("a valid document"),
        };
        if let Some(defaults) = defaults {
            schema::keep_default_runtime(&mut d, defaults).map_err(|e| format!("{MAIN_CONFIG}: {e}"))?;
        }
        schema::add_in_place(&mut d, ours_before, restrict_oom)
            .map_err(|e| format!("{MAIN_CONFIG}: {e}"))?;
        out.push(Planned {
            path: MAIN_CONFIG.into(),
            kind: Kind::Containerd,
            bytes: d.to_string().into_bytes(),
            only_if_absent: false,
        });
    }
    for h in HANDLERS {
        let docker = h.name == "beta9-docker";
        out.push(Planned {
            path: h.config_path.into(),
            kind: Kind::Runtime,
            bytes: runtime_config(docker).into_bytes(),
            only_if_absent: true,
        });
    }
    Ok(out)
}

pub struct Installer<'a> {
    pub host: &'a Host,
    pub opts: Options,
    /// What it says, line by line (stdout).
    pub say: &'a mut dyn FnMut(String),
}

impl Installer<'_> {
    fn tell(&mut self, line: String) {
        (self.say)(line)
    }

    fn node(&self, path: &str) -> String {
        if self.host.is_root() {
            path.to_string()
        } else {
            format!("{}{path}", self.host.root.display())
        }
    }

    /// Prints the checks; the findings that block an install.
    pub fn check(&mut self) -> Result<Vec<check::Finding>> {
        let (_, doc) = read_doc(self.host, MAIN_CONFIG)?;
        let version = containerd_version(self.host, self.opts.version);
        let findings = check::all(self.host, version, &doc);
        for f in &findings {
            self.tell(f.to_string());
        }
        Ok(findings
            .into_iter()
            .filter(|f| f.level == Level::Missing)
            .collect())
    }

    fn mkdirs(&self, rec: &mut Record, dir: &str) -> Result<()> {
        let mut made = Vec::new();
        let mut p = PathBuf::from(dir);
        while !self.host.path(&p.display().to_string()).exists() {
            made.push(p.display().to_string());
            if !p.pop() {
                break;
            }
        }
        for d in made.into_iter().rev() {
            std::fs::create_dir(self.host.path(&d))
                .with_context(|| format!("cannot create {}", self.node(&d)))?;
            if !rec.dirs.contains(&d) {
                rec.dirs.push(d);
            }
        }
        Ok(())
    }

    /// The files the main config imports (globs, relative to its directory), as the node has them.
    fn imported(&self, main: &DocumentMut) -> Result<Vec<(String, DocumentMut)>> {
        let mut out = Vec::new();
        for pattern in schema::imports(main) {
            let full = if pattern.starts_with('/') { pattern.clone() } else { format!("/etc/containerd/{pattern}") };
            let root = self.host.root.display().to_string();
            let on_node = self.host.path(&full).display().to_string();
            let Ok(paths) = glob::glob(&on_node) else { continue };
            for p in paths.flatten() {
                let node_path = p.display().to_string();
                let node_path = node_path.strip_prefix(root.trim_end_matches('/')).unwrap_or(&node_path).to_string();
                let (_, doc) = read_doc(self.host, &node_path)?;
                out.push((node_path, doc));
            }
        }
        Ok(out)
    }

    /// Where the shim and agent come from, and whether they must be copied onto the node.
    fn binaries(&self) -> Result<(PathBuf, bool)> {
        let from = match &self.opts.from {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .context("cannot find this installer's path")?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        for b in BINARIES {
            if !from.join(b).is_file() {
                bail!(
                    "{b} is not in {}: pass --from DIR, the directory that holds {} and {}",
                    from.display(),
                    BINARIES[0],
                    BINARIES[1]
                );
            }
        }
        // Installed by the package (or by hand) into a directory on containerd's PATH: used where it is.
        let in_place = self.host.is_root()
            && host::NODE_PATH
                .split(':')
                .any(|d| Path::new(d) == from.as_path());
        Ok((from, !in_place))
    }

    pub fn install(&mut self) -> Result<()> {
        let missing = self.check()?;
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|f| f.what).collect();
            bail!(
                "nothing was installed: the node lacks {} (see above)",
                names.join(", ")
            );
        }
        let version =
            containerd_version(self.host, self.opts.version).map_err(anyhow::Error::msg)?;
        let (from, copy) = self.binaries()?;
        let mut rec = Record::load(self.host)?.unwrap_or_default();
        if !rec.containerd.is_empty() && rec.containerd != version.to_string() {
            bail!("the runtime was installed for containerd {}, and containerd is now {version}: run `beta9-sandbox-install uninstall` first, then install", rec.containerd);
        }
        let (_, main) = read_doc(self.host, MAIN_CONFIG)?;
        let main_exists = self.host.path(MAIN_CONFIG).exists();
        if !version.merges_drop_ins() {
            if let Some(file) = schema::cri_overridden_by(&self.imported(&main)?) {
                bail!("nothing was installed: {file}, imported by {MAIN_CONFIG}, sets CRI's plugin section, which replaces config.toml's whole on containerd {version}: move that section into {MAIN_CONFIG} (or register the runtime in {file} by hand)");
            }
        }
        let restrict =
            rec.restrict_oom || (!host::can_lower_oom_score() && !schema::sets_restrict_oom(&main));
        let defaults = if !version.merges_drop_ins() && schema::lacks_runtimes(&main) {
            let text = self.host.output("containerd", &["config", "default"]).map_err(|e| anyhow::anyhow!("cannot read containerd's defaults: {e}"))?;
            Some(text.parse::<DocumentMut>().context("`containerd config default` is not TOML")?)
        } else {
            None
        };
        let plan = plan_containerd(
            version,
            main_exists.then_some(&main),
            defaults.as_ref(),
            rec.change(MAIN_CONFIG).is_some(),
            restrict,
        )
        .map_err(anyhow::Error::msg)?;

        let fresh = rec.installer.is_empty();
        if let Some(d) = &defaults {
            rec.default_runtime.get_or_insert_with(|| schema::default_runtime_name(&main, d));
        }
        rec.installer = env!("CARGO_PKG_VERSION").into();
        rec.containerd = version.to_string();
        rec.restrict_oom = restrict;
        let mut changed_containerd = false;
        let mut changed = false;
        self.mkdirs(&mut rec, record::STATE)?;
        if fresh {
            rec.save(self.host)?;
        }
        for p in &plan {
            let target = self.host.path(&p.path);
            let current = record::read_opt(&target)?;
            if current.as_deref() == Some(&p.bytes[..]) {
                continue;
            }
            if p.only_if_absent && current.is_some() {
                if rec.change(&p.path).is_none() {
                    self.tell(format!("kept {} (the operator's)", self.node(&p.path)));
                }
                continue;
            }
            let dir = Path::new(&p.path)
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            self.mkdirs(&mut rec, &dir)?;
            // The original is kept, and the record saved, before the file changes.
            if rec.change(&p.path).is_none() {
                let original = record::metadata_of(&target)?;
                if let Some(bytes) = &current {
                    record::write_atomic(
                        &record::copy_path(self.host, "original", &p.path),
                        bytes,
                        original.as_ref(),
                    )?;
                }
                rec.files.push(Change {
                    path: p.path.clone(),
                    kind: p.kind,
                    original,
                });
                rec.save(self.host)?;
            }
            let meta = rec.change(&p.path).and_then(|c| c.original.clone());
            record::write_atomic(&target, &p.bytes, meta.as_ref())?;
            record::write_atomic(
                &record::copy_path(self.host, "written", &p.path),
                &p.bytes,
                None,
            )?;
            let verb = if current.is_some() {
                "updated"
            } else {
                "created"
            };
            self.tell(format!("{verb} {}", self.node(&p.path)));
            changed = true;
            changed_containerd |= p.kind == Kind::Containerd;
        }
        if copy {
            self.mkdirs(&mut rec, BIN_DIR)?;
            for b in BINARIES {
                let dest = format!("{BIN_DIR}/{b}");
                let bytes = std::fs::read(from.join(b))
                    .with_context(|| format!("cannot read {}", from.join(b).display()))?;
                if !rec.binaries.contains(&dest) {
                    rec.binaries.push(dest.clone());
                    rec.save(self.host)?;
                }
                if record::read_opt(&self.host.path(&dest))?.as_deref() == Some(&bytes[..]) {
                    continue;
                }
                record::write_atomic(
                    &self.host.path(&dest),
                    &bytes,
                    Some(&record::Original {
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    }),
                )?;
                self.tell(format!("installed {}", self.node(&dest)));
                changed = true;
            }
        } else {
            self.tell(format!(
                "using {} and {} in {} (on containerd's PATH)",
                BINARIES[0],
                BINARIES[1],
                from.display()
            ));
        }
        if changed {
            rec.save(self.host)?;
        }
        if restrict && changed_containerd {
            self.tell("set CRI's restrict_oom_score_adj = true: this host's root may not lower OOM scores, so every CRI pod would fail".into());
        }
        if !changed {
            self.tell(format!(
                "nothing changed: the runtime is installed for containerd {version}"
            ));
            return Ok(());
        }
        self.tell(format!(
            "registered runtime {} for containerd {version}: CRI handlers {} and {}",
            schema::RUNTIME_TYPE,
            HANDLERS[0].name,
            HANDLERS[1].name
        ));
        if changed_containerd {
            self.restart()?;
        }
        Ok(())
    }

    /// Restarts containerd so it reads its config again: through systemd where it runs the
    /// node; otherwise says which process to restart.
    fn restart(&mut self) -> Result<()> {
        let config = self.node(MAIN_CONFIG);
        if self.opts.no_restart {
            self.tell(format!(
                "containerd was not restarted (--no-restart): restart it to load {config}"
            ));
            return Ok(());
        }
        if self.host.systemd() {
            let active = self.host.systemctl(&["is-active", "--quiet", "containerd"]).map_err(anyhow::Error::msg)?.status().is_ok_and(|s| s.success());
            if !active {
                self.tell("containerd.service is not running: it loads the runtime when it starts".into());
                return Ok(());
            }
            let out = self.host.systemctl(&["restart", "containerd"]).map_err(anyhow::Error::msg)?.output().context("cannot run systemctl")?;
            if !out.status.success() {
                bail!("restarting containerd failed: systemctl restart containerd: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            self.tell("restarted containerd.service".into());
            return Ok(());
        }
        let running = host::containerds(self.host, MAIN_CONFIG);
        if running.is_empty() {
            self.tell(format!("no systemd runs this node and no containerd runs with {config}: containerd loads the runtime when it starts"));
        }
        for p in running {
            self.tell(format!("containerd was not restarted (no systemd runs this node): restart containerd (pid {}: {}) so it reads {config} again", p.pid, p.args.join(" ")));
        }
        Ok(())
    }

    /// The sandboxes of ours this node's containerd runs.
    pub fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        let (_, doc) = read_doc(self.host, MAIN_CONFIG)?;
        Ok(host::sandboxes(self.host, &schema::address(&doc)))
    }

    /// Stops every sandbox of ours: its containerd deletes their tasks (SIGKILL first).
    fn drain(&mut self, running: &[Sandbox]) -> Result<()> {
        let (_, doc) = read_doc(self.host, MAIN_CONFIG)?;
        let address = schema::address(&doc);
        // The node's own ctr, inside its root; else ours, at the node's socket.
        let (node_ctr, addr) = match self.host.find("ctr") {
            Some(_) => (true, address.clone()),
            None => (false, self.host.path(&address).display().to_string()),
        };
        let ctr = |args: &[&str]| {
            let mut c = if node_ctr {
                self.host.command("ctr")
            } else {
                std::process::Command::new("ctr")
            };
            c.arg("--address").arg(&addr).args(args);
            c.output()
        };
        let mut namespaces: Vec<&str> = running.iter().map(|s| s.namespace.as_str()).collect();
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            let out = ctr(&["-n", ns, "containers", "ls"]).context("cannot run ctr")?;
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.last() == Some(&schema::RUNTIME_TYPE) {
                    let _ = ctr(&["-n", ns, "tasks", "rm", "-f", f[0]]);
                    self.tell(format!("stopped {ns}/{}", f[0]));
                }
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = host::sandboxes(self.host, &address);
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("sandboxes still run after 60 s: {}", describe(&left));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn uninstall(&mut self) -> Result<()> {
        let Some(rec) = Record::load(self.host)? else {
            self.tell(format!(
                "nothing to uninstall: beta9-sandbox-install has not installed the runtime at {}",
                self.host.root.display()
            ));
            return Ok(());
        };
        let running = self.sandboxes()?;
        if !running.is_empty() {
            if !self.opts.drain {
                bail!(
                    "{} sandbox(es) of ours still run ({}): stop them, or run `beta9-sandbox-install uninstall --drain` to kill them; nothing was changed",
                    running.len(),
                    describe(&running)
                );
            }
            self.drain(&running)?;
        }
        let mut changed_containerd = false;
        let mut kept_original = false;
        for c in rec.files.iter().rev() {
            let target = self.host.path(&c.path);
            let current = record::read_opt(&target)?;
            let written = record::read_opt(&record::copy_path(self.host, "written", &c.path))?;
            let original_copy = record::copy_path(self.host, "original", &c.path);
            if current.is_some() && current != written {
                match c.kind {
                    Kind::Runtime => self.tell(format!(
                        "kept {}: changed since install, so it is the operator's",
                        self.node(&c.path)
                    )),
                    Kind::Containerd => {
                        let (_, mut doc) = read_doc(self.host, &c.path)?;
                        let mut edited = schema::remove(&mut doc, rec.restrict_oom, rec.default_runtime.as_deref());
                        edited |= schema::remove_import(&mut doc, DROP_IN);
                        if edited {
                            record::write_atomic(
                                &target,
                                doc.to_string().as_bytes(),
                                c.original.as_ref(),
                            )?;
                            changed_containerd = true;
                        }
                        kept_original |= c.original.is_some();
                        self.tell(format!(
                            "{} changed since install: took out only the runtime; its original stays at {}",
                            self.node(&c.path),
                            original_copy.display()
                        ));
                    }
                }
                continue;
            }
            match &c.original {
                Some(meta) => {
                    let bytes = std::fs::read(&original_copy).with_context(|| {
                        format!(
                            "the original of {} is gone from {}",
                            c.path,
                            original_copy.display()
                        )
                    })?;
                    record::write_atomic(&target, &bytes, Some(meta))?;
                    self.tell(format!("restored {}", self.node(&c.path)));
                }
                None => {
                    record::remove_file(&target)?;
                    self.tell(format!("removed {}", self.node(&c.path)));
                }
            }
            changed_containerd |= c.kind == Kind::Containerd;
        }
        for b in &rec.binaries {
            record::remove_file(&self.host.path(b))?;
            self.tell(format!("removed {}", self.node(b)));
        }
        // The state directory goes last, with the record; a kept original keeps it.
        let state = self.host.path(record::STATE);
        let _ = std::fs::remove_dir_all(state.join("written"));
        if !kept_original {
            let _ = std::fs::remove_dir_all(state.join("original"));
        }
        Record::remove(self.host)?;
        for d in rec.dirs.iter().rev() {
            let _ = std::fs::remove_dir(self.host.path(d));
        }
        self.tell(format!("unregistered runtime {}", schema::RUNTIME_TYPE));
        if changed_containerd {
            self.restart()?;
        }
        Ok(())
    }
}

pub fn describe(s: &[Sandbox]) -> String {
    s.iter()
        .map(|s| format!("{}/{} (shim pid {})", s.namespace, s.id, s.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_beta9_sandbox::config::Config;

    const V16: Version = Version { major: 1, minor: 6 };
    const V21: Version = Version { major: 2, minor: 1 };

    #[test]
    fn the_runtime_configs_parse_with_the_shims_own_reader_and_differ_only_in_docker() {
        for docker in [false, true] {
            let c = Config::parse(&runtime_config(docker), Path::new("/etc/containerd/x.toml"))
                .unwrap();
            assert_eq!(c.policy.allow_docker, docker);
        }
        let (a, b) = (runtime_config(false), runtime_config(true));
        assert_eq!(
            a.lines()
                .filter(|l| !b.contains(l))
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            vec!["allow_docker = false"]
        );
    }

    #[test]
    fn plans_follow_the_version_one_file_in_place_on_1x_a_drop_in_and_import_on_2x() {
        let p = plan_containerd(V16, None, None, false, false).unwrap();
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                MAIN_CONFIG,
                HANDLERS[0].config_path,
                HANDLERS[1].config_path
            ]
        );
        let main: toml::Table = String::from_utf8(p[0].bytes.clone())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(main["version"].as_integer(), Some(2));
        assert!(
            main["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
                .get("beta9")
                .is_some()
        );

        let p = plan_containerd(V21, None, None, false, false).unwrap();
        assert_eq!(
            p.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            vec![
                DROP_IN,
                MAIN_CONFIG,
                HANDLERS[0].config_path,
                HANDLERS[1].config_path
            ]
        );
        assert_eq!(
            String::from_utf8(p[1].bytes.clone()).unwrap(),
            schema::new_main_v3()
        );

        let operator: DocumentMut = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.beta9]\nruntime_type = \"x\"\n".parse().unwrap();
        assert!(plan_containerd(V21, Some(&operator), None, false, false)
            .unwrap_err()
            .contains("not ours"));
        assert!(plan_containerd(V16, Some(&operator), None, false, false)
            .unwrap_err()
            .contains("already exists"));
    }

    /// The whole install and uninstall are tested end to end (installer/tests/node.rs).
    #[test]
    fn install_refuses_and_changes_nothing_where_the_node_lacks_runsc() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("node");
        let from = t.path().join("bin");
        std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
        std::fs::create_dir_all(&from).unwrap();
        for b in BINARIES {
            std::fs::write(from.join(b), b).unwrap();
        }
        let original = "# the operator's\nversion = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n";
        std::fs::write(root.join("etc/containerd/config.toml"), original).unwrap();
        std::fs::set_permissions(
            root.join("etc/containerd/config.toml"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let host = Host::new(&root);
        let opts = Options {
            version: Some(V16),
            from: Some(from),
            ..Default::default()
        };
        let mut lines = Vec::new();
        let mut say = |l: String| lines.push(l);
        let mut i = Installer {
            host: &host,
            opts: opts.clone(),
            say: &mut say,
        };
        let missing = i.check().unwrap();
        assert!(missing.iter().any(|f| f.what == "runsc"));
        assert!(i
            .install()
            .unwrap_err()
            .to_string()
            .contains("nothing was installed: the node lacks runsc"));
        assert!(!root.join("var/lib/beta9-sandbox").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap(),
            original
        );
    }
}
