//! The runtime's configuration: a TOML file an operator writes once per runtime handler.
//! Found through containerd's `ConfigPath` runtime option, else at `DEFAULT_PATH`, else built in.
//! Every error names the file and the key.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use contract::args::Network;

use crate::{
    annotations::{self, DockerAnnotations, SandboxAnnotations},
    error::{Error, Result},
    options::RuntimeOptions,
};

pub const DEFAULT_PATH: &str = "/etc/containerd/beta9-sandbox.toml";
/// The largest config file read: any real one is a few KiB, and the path comes with requests.
const MAX_SIZE: u64 = 1024 * 1024;
/// runsc puts `<root>/<16 hex>/runsc-<id>.sock` there: with a 64-character CRI id that is the
/// root plus 93 bytes, and a unix socket path has 107.
const MAX_ROOT_LEN: usize = 14;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runsc: RunscConfig,
    pub agent: AgentConfig,
    pub docker: DockerConfig,
    pub cgroups: CgroupsConfig,
    pub checkpoint: CheckpointConfig,
    pub policy: Policy,
    /// The file this came from, for error messages; `None` for the built-in defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunscConfig {
    /// runsc to run: a path, or a name looked up on containerd's PATH.
    pub binary: PathBuf,
    /// Where per-sandbox runsc roots go.
    pub root: PathBuf,
    pub platform: String,
    /// `auto` maps the spec's network namespace; `none`, `sandbox` or `host` force one.
    pub network: String,
    /// runsc debug logs (`--debug --debug-log=DIR/`), off when unset.
    pub debug_log_dir: Option<PathBuf>,
    /// More runsc global flags, after the shim's own.
    pub extra_flags: Vec<String>,
}

impl Default for RunscConfig {
    fn default() -> Self {
        RunscConfig {
            binary: "runsc".into(),
            root: "/run/beta9".into(),
            platform: "systrap".into(),
            network: "auto".into(),
            debug_log_dir: None,
            extra_flags: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The agent binary; by default `beta9-sandbox-agent` next to the shim.
    pub binary: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// How long Start waits for dockerd unless `io.beta9.sandbox.docker.wait` says otherwise.
    pub default_wait: String,
    /// Size of the tmpfs on /var/lib/docker (bytes, k, m, g, or a % of the sandbox's memory
    /// limit); unset: `docker::STORE_SHARE_PERCENT` of that limit (see docker::store_size).
    pub tmpfs_size: Option<String>,
    /// dockerd arguments for every Docker sandbox, before the annotation's.
    pub extra_args: Vec<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig { default_wait: "60s".into(), tmpfs_size: None, extra_args: Vec::new() }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupsConfig {
    /// Put every sandbox in its cgroup with the spec's limits; off for operators who manage
    /// cgroups themselves.
    pub enforce: bool,
    /// Where the cgroups of sandboxes whose spec names none go (cgroupfs form).
    pub default_parent: PathBuf,
    /// `linux.cgroupsPath` must be in systemd's form: the request's SystemdCgroup option, no key.
    #[serde(skip)]
    pub systemd_form: bool,
}

impl Default for CgroupsConfig {
    fn default() -> Self {
        CgroupsConfig { enforce: true, default_parent: "/beta9".into(), systemd_form: false }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// How runsc compresses an image: `none` restores fastest, `flate-best-speed` is smaller.
    pub compression: String,
    /// Leave pages the workload never wrote out of the image (`--exclude-committed-zero-pages`).
    pub exclude_zero_pages: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { compression: "none".into(), exclude_zero_pages: true }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Whether `io.beta9.sandbox.docker=true` is allowed.
    pub allow_docker: bool,
    /// Whether `io.beta9.sandbox.gpu=true` is allowed.
    pub allow_gpu: bool,
    /// Whether a container may share the host's network stack (no network namespace, e.g.
    /// `ctr run --net-host`, or `network = "host"`).
    pub allow_host_network: bool,
    /// The `io.beta9.sandbox.*` annotations pod authors may set; all known ones when unset.
    pub allowed_annotations: Option<Vec<String>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { allow_docker: true, allow_gpu: true, allow_host_network: true, allowed_annotations: None }
    }
}

impl Config {
    /// The file named by `ConfigPath`, else the default file if it exists, else the defaults.
    pub fn load(config_path: Option<&Path>) -> Result<Config> {
        let path = match config_path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok(Config::default()),
        };
        Config::parse(&read_bounded(&path)?, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            if toml::from_str::<toml::Table>(text).is_ok() {
                // A config with a wrong key or value: toml quotes the line that has it.
                return Error::InvalidArgument(format!("config {}: {}", path.display(), one_line(&e.to_string())));
            }
            // No TOML at all: where, never what. The path comes with requests, and the error
            // would quote a line of any file root can read.
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
            Error::InvalidArgument(format!("config {}: not TOML{at}: {}", path.display(), one_line(e.message())))
        })?;
        config.source = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    /// What the request's runtime options (runc's) say over the file: runsc's binary
    /// (BinaryName), the parent of the runsc roots (Root), the cgroup path's form (SystemdCgroup).
    pub fn with_runtime_options(mut self, o: &RuntimeOptions) -> Result<Config> {
        let bad = |option: &str, why: String| Error::InvalidArgument(format!("runtime option {option}: {why}"));
        if let Some(binary) = &o.binary_name {
            if !binary.is_absolute() || !binary.is_file() {
                return Err(bad("BinaryName", format!("{binary:?} is not an absolute path to runsc on this host")));
            }
            self.runsc.binary = binary.clone();
        }
        if let Some(root) = &o.root {
            if !root.is_absolute() || root.as_os_str().len() > MAX_ROOT_LEN {
                return Err(bad(
                    "Root",
                    format!("{root:?} must be an absolute path of at most {MAX_ROOT_LEN} bytes (runsc's control socket lives under it)"),
                ));
            }
            self.runsc.root = root.clone();
        }
        self.cgroups.systemd_form = o.systemd_cgroup;
        Ok(self)
    }

    /// Where this config came from, for messages.
    pub fn origin(&self) -> String {
        match &self.source {
            Some(p) => format!("config {}", p.display()),
            None => "built-in config".into(),
        }
    }

    fn bad(&self, key: &str, why: String) -> Error {
        Error::InvalidArgument(format!("{}: {key}: {why}", self.origin()))
    }

    fn validate(&self) -> Result<()> {
        let r = &self.runsc;
        if r.binary.as_os_str().is_empty() {
            return Err(self.bad("[runsc] binary", "must not be empty".into()));
        }
        if !r.root.is_absolute() || r.root.as_os_str().len() > MAX_ROOT_LEN {
            return Err(self.bad(
                "[runsc] root",
                format!("{:?} must be an absolute path of at most {MAX_ROOT_LEN} bytes (runsc's control socket lives under it)", r.root),
            ));
        }
        if !["systrap", "ptrace", "kvm"].contains(&r.platform.as_str()) {
            return Err(self.bad("[runsc] platform", format!("{:?} is not valid; accepted values: systrap, ptrace, kvm", r.platform)));
        }
        self.network()?;
        if let Some(dir) = &r.debug_log_dir {
            if !dir.is_absolute() {
                return Err(self.bad("[runsc] debug_log_dir", format!("{dir:?} must be an absolute path")));
            }
        }
        if let Some(f) = r.extra_flags.iter().find(|f| !f.starts_with('-')) {
            return Err(self.bad("[runsc] extra_flags", format!("{f:?} is not a flag (flags start with -)")));
        }
        if let Some(b) = &self.agent.binary {
            if !b.is_absolute() {
                return Err(self.bad("[agent] binary", format!("{b:?} must be an absolute path")));
            }
        }
        self.default_docker_wait()?;
        if let Some(size) = &self.docker.tmpfs_size {
            if !annotations::valid_tmpfs_size(size) {
                return Err(self.bad("[docker] tmpfs_size", format!("{size:?} is not valid; accepted values: {}", annotations::TMPFS_SIZES)));
            }
        }
        if !["none", "flate-best-speed"].contains(&self.checkpoint.compression.as_str()) {
            return Err(self.bad(
                "[checkpoint] compression",
                format!("{:?} is not valid; accepted values: none, flate-best-speed", self.checkpoint.compression),
            ));
        }
        let parent = &self.cgroups.default_parent;
        if !parent.is_absolute() || parent.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(self.bad("[cgroups] default_parent", format!("{parent:?} must be an absolute cgroup path without ..")));
        }
        if let Some(allowed) = &self.policy.allowed_annotations {
            if let Some(a) = allowed.iter().find(|a| !annotations::KNOWN.contains(&a.as_str())) {
                return Err(self.bad(
                    "[policy] allowed_annotations",
                    format!("{a:?} is not an annotation of this runtime; known: {}", annotations::KNOWN.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// `None` means: from the spec.
    pub fn network(&self) -> Result<Option<Network>> {
        match self.runsc.network.as_str() {
            "auto" => Ok(None),
            "none" => Ok(Some(Network::None)),
            "sandbox" => Ok(Some(Network::Sandbox)),
            "host" => Ok(Some(Network::Host)),
            other => Err(self.bad("[runsc] network", format!("{other:?} is not valid; accepted values: auto, none, sandbox, host"))),
        }
    }

    /// Applies the operator's policy to what a container asked for.
    pub fn admit(&self, a: &SandboxAnnotations) -> Result<()> {
        let forbidden = |why: String| Error::InvalidArgument(format!("{why} ({})", self.origin()));
        if let Some(allowed) = &self.policy.allowed_annotations {
            if let Some(k) = a.keys.iter().find(|k| !allowed.contains(k)) {
                return Err(forbidden(format!(
                    "annotation {k} is not allowed by the runtime's policy: [policy] allowed_annotations = [{}]",
                    allowed.join(", ")
                )));
            }
        }
        if a.docker.is_some() && !self.policy.allow_docker {
            let key = annotations::DOCKER;
            return Err(forbidden(format!("{key}=true is not allowed by the runtime's policy: [policy] allow_docker = false")));
        }
        if a.gpu && !self.policy.allow_gpu {
            let key = annotations::GPU;
            return Err(forbidden(format!("{key}=true is not allowed by the runtime's policy: [policy] allow_gpu = false")));
        }
        Ok(())
    }

    /// How long Start waits for dockerd: the annotation's wait, else `[docker] default_wait`.
    pub fn docker_wait(&self, d: &DockerAnnotations) -> Result<Duration> {
        match d.wait {
            Some(w) => Ok(w),
            None => self.default_docker_wait(),
        }
    }

    pub fn default_docker_wait(&self) -> Result<Duration> {
        let bad = |why: String| {
            self.bad("[docker] default_wait", format!("{:?} is not valid ({why}); a duration up to 1h, e.g. 60s, 1m30s, 0s", self.docker.default_wait))
        };
        let d = humantime::parse_duration(&self.docker.default_wait).map_err(|e| bad(e.to_string()))?;
        if d > annotations::MAX_DOCKER_WAIT {
            return Err(bad("longer than 1h".into()));
        }
        Ok(d)
    }
}

/// A config file's text: a regular file of at most `MAX_SIZE`, opened without blocking (a FIFO
/// at the path must not hold the shim).
fn read_bounded(path: &Path) -> Result<String> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let cannot = |why: String| Error::InvalidArgument(format!("config {}: cannot read it: {why}", path.display()));
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| cannot(e.to_string()))?;
    let meta = f.metadata().map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        return Err(cannot("it is not a regular file".into()));
    }
    if meta.len() > MAX_SIZE {
        return Err(cannot(format!("it has {} bytes, more than a config's {MAX_SIZE}", meta.len())));
    }
    let mut bytes = Vec::new();
    f.by_ref().take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(cannot(format!("it grew past a config's {MAX_SIZE} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| cannot("it is not UTF-8 text".into()))
}

/// toml's errors quote the offending line on several lines; containerd shows one.
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "|").collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/b.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.runsc, RunscConfig::default());
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.default_docker_wait().unwrap(), Duration::from_secs(60));
        assert_eq!(c.network().unwrap(), None);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
            [runsc]
            binary = "/opt/runsc"
            root = "/run/b9"
            platform = "ptrace"
            network = "host"
            debug_log_dir = "/var/log/runsc"
            extra_flags = ["--overlay2=none"]
            [agent]
            binary = "/opt/agent"
            [docker]
            default_wait = "1m30s"
            tmpfs_size = "8g"
            extra_args = ["--debug"]
            [cgroups]
            enforce = false
            default_parent = "/ops/sandboxes"
            [checkpoint]
            compression = "flate-best-speed"
            exclude_zero_pages = false
            [policy]
            allow_docker = false
            allow_gpu = false
            allow_host_network = false
            allowed_annotations = ["io.beta9.sandbox.keepalive"]
            "#,
        )
        .unwrap();
        assert_eq!(c.runsc.binary, PathBuf::from("/opt/runsc"));
        assert_eq!(c.runsc.platform, "ptrace");
        assert_eq!(c.network().unwrap(), Some(Network::Host));
        assert_eq!(c.runsc.extra_flags, ["--overlay2=none"]);
        assert_eq!(c.agent.binary, Some(PathBuf::from("/opt/agent")));
        assert_eq!(c.default_docker_wait().unwrap(), Duration::from_secs(90));
        assert_eq!(c.docker.tmpfs_size.as_deref(), Some("8g"));
        assert!(!c.policy.allow_docker && !c.policy.allow_gpu && !c.policy.allow_host_network);
        assert_eq!(c.cgroups, CgroupsConfig { enforce: false, default_parent: "/ops/sandboxes".into(), systemd_form: false });
        assert_eq!(c.checkpoint, CheckpointConfig { compression: "flate-best-speed".into(), exclude_zero_pages: false });
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            ("[runsc]\nplatfrom = \"ptrace\"", "platfrom"),
            ("[runsc]\nplatform = 3", "platform"),
            ("[runsc]\nplatform = \"vm\"", "[runsc] platform"),
            ("[runsc]\nnetwork = \"bridge\"", "[runsc] network"),
            ("[runsc]\nroot = \"relative\"", "[runsc] root"),
            ("[runsc]\nextra_flags = [\"overlay2=none\"]", "[runsc] extra_flags"),
            ("[docker]\ndefault_wait = \"soon\"", "[docker] default_wait"),
            ("[docker]\ndefault_wait = \"2h\"", "[docker] default_wait"),
            ("[runsc]\nroot = \"/run/a/long/runsc/root\"", "[runsc] root"),
            ("[docker]\ntmpfs_size = \"lots\"", "[docker] tmpfs_size"),
            ("[agent]\nbinary = \"agent\"", "[agent] binary"),
            ("[policy]\nallow_docker = \"no\"", "allow_docker"),
            ("[policy]\nallowed_annotations = [\"io.beta9.sandbox.dockr\"]", "[policy] allowed_annotations"),
            ("[polcy]\nallow_docker = false", "polcy"),
            ("[cgroups]\ndefault_parent = \"beta9\"", "[cgroups] default_parent"),
            ("[cgroups]\nenforce = \"no\"", "enforce"),
            ("[checkpoint]\ncompression = \"gzip\"", "[checkpoint] compression"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("/etc/b.toml") && e.contains(key), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = Config::load(Some(Path::new("/nonexistent/beta9.toml"))).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/beta9.toml") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn only_a_bounded_regular_file_is_read_and_its_text_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let started = std::time::Instant::now();
        for (path, why) in [(fifo.as_path(), "not a regular file"), (Path::new("/dev/zero"), "not a regular file"), (dir.path(), "not a regular file")] {
            let e = Config::load(Some(path)).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()) && e.contains(why), "{e}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "nothing blocked");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_SIZE as usize + 1]).unwrap();
        let e = Config::load(Some(&big)).unwrap_err().to_string();
        assert!(e.contains("more than a config's"), "{e}");
        // A file that is no TOML (a password file, say): where, but not what.
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, "root:$6$s3cr3tHash:19000:0:99999:7:::\n").unwrap();
        let e = Config::load(Some(&secret)).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("s3cr3t") && !e.contains("root:"), "{e}");
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = parse(include_str!("../../config/beta9-sandbox.toml")).unwrap();
        assert_eq!(Config { source: None, ..example }, Config::default());
    }

    fn annotations(pairs: &[(&str, &str)]) -> SandboxAnnotations {
        SandboxAnnotations::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap()
    }

    #[test]
    fn policy_refusals_name_the_policy_key_and_the_file() {
        use annotations::{AGENT, DOCKER, GPU, KEEPALIVE};
        let no_docker = parse("[policy]\nallow_docker = false").unwrap();
        let e = no_docker.admit(&annotations(&[(DOCKER, "true")])).unwrap_err().to_string();
        assert!(e.contains("[policy] allow_docker = false") && e.contains("/etc/b.toml") && e.contains(DOCKER), "{e}");
        assert!(no_docker.admit(&annotations(&[(DOCKER, "false")])).is_ok());

        let e = parse("[policy]\nallow_gpu = false").unwrap().admit(&annotations(&[(GPU, "true")])).unwrap_err().to_string();
        assert!(e.contains("[policy] allow_gpu = false"), "{e}");

        let only_keepalive = parse("[policy]\nallowed_annotations = [\"io.beta9.sandbox.keepalive\"]").unwrap();
        assert!(only_keepalive.admit(&annotations(&[(KEEPALIVE, "true")])).is_ok());
        let e = only_keepalive.admit(&annotations(&[(AGENT, "false")])).unwrap_err().to_string();
        assert!(e.contains(AGENT) && e.contains("[policy] allowed_annotations"), "{e}");
    }

    #[test]
    fn docker_wait_defaults_to_the_config() {
        let c = parse("[docker]\ndefault_wait = \"5s\"").unwrap();
        let a = annotations(&[(annotations::DOCKER, "true")]);
        assert_eq!(c.docker_wait(a.docker.as_ref().unwrap()).unwrap(), Duration::from_secs(5));
        let a = annotations(&[(annotations::DOCKER, "true"), (annotations::DOCKER_WAIT, "0s")]);
        assert_eq!(c.docker_wait(a.docker.as_ref().unwrap()).unwrap(), Duration::ZERO);
    }
}
