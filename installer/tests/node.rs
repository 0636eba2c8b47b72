//! The installer on a node, end to end, for containerd 1.6, 1.7 and 2.1 and three host configs
//! each (none at all; the version's Debian default; an operator's own, with its runtimes,
//! registry settings and imports): install against a node root (`--root`, as the DaemonSet
//! does), run that version's real containerd on the result in a private mount namespace rooted
//! there (the configs hold absolute paths), and then: ctr runs a sandbox, a CRI pod of the
//! `beta9` handler runs (crictl), Docker is allowed through `beta9-docker` and refused through
//! `beta9` by policy, `containerd config dump` shows the operator's settings unchanged, a second
//! install changes nothing, uninstall refuses while a sandbox runs and then gives every file back
//! byte for byte.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::*;

const BUSYBOX: &str = "docker.io/beta9/busybox:latest";
const DEBIAN: &str = "docker.io/beta9/debian:latest";
/// Where the node sees the test images.
const IMAGES: &str = "/opt/images";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fixture {
    /// No /etc/containerd at all: containerd's defaults.
    None,
    /// The config file the version's Debian package ships.
    Distro,
    /// An operator's own: a runtime, registry settings, an import, comments, mode 0600, and a
    /// beta9-sandbox.toml of its own that install must keep.
    Operator,
}

struct Node {
    version: &'static str,
    dir: PathBuf,
    root: PathBuf,
    local: PathBuf,
    /// The host's view with the node's mounts in place: where the installer runs (`--root`).
    ns: Option<Namespace>,
    /// The node's own view, rooted at its root: where containerd and its clients run.
    node_ns: Option<Namespace>,
    containerd: Option<Daemon>,
    /// Every container and pod id the test made: none may leave a cgroup behind.
    ids: std::cell::RefCell<Vec<String>>,
}

fn containerd_bin(version: &str) -> PathBuf {
    let d = if version == "1.6" { PathBuf::from("/usr/bin") } else { cache().join(format!("containerd-{version}/usr/bin")) };
    assert!(d.join("containerd").is_file(), "containerd {version} is missing at {}: hack/install-deps.sh unpacks it", d.display());
    d
}

fn distro_config(version: &str) -> String {
    let p = if version == "1.6" { PathBuf::from("/etc/containerd/config.toml") } else { cache().join(format!("containerd-{version}/etc/containerd/config.toml")) };
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("Debian's containerd {version} config {}: {e}", p.display()))
}

/// An operator's config for the version: what install must leave as it found it.
fn operator_config(version: &str) -> (String, String) {
    if version == "2.1" {
        let main = r#"# The operator's containerd: schema 3, with a config of its own for every registry.
version = 3
imports = ["/etc/containerd/operator.d/*.toml"]

[plugins]
    [plugins."io.containerd.cri.v1.images".registry]
        config_path = "/etc/containerd/certs.d"   # mirrors, hosts.toml per registry
    [plugins."io.containerd.cri.v1.runtime"]
        # This host's root may not lower OOM scores.
        restrict_oom_score_adj = true
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc-debug]
            runtime_type = "io.containerd.runc.v2"
            [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc-debug.options]
                BinaryName = "/usr/bin/runc"
                SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".cni]
        bin_dirs = ["/usr/lib/cni"]
        conf_dir = "/etc/cni/net.d"
"#;
        let import = "version = 3\n[debug]\n  level = \"info\"\n";
        return (main.into(), import.into());
    }
    let main = r#"# The operator's containerd: its own runtimes and a registry mirror.
version = 2
imports = ["/etc/containerd/operator.d/*.toml"]
oom_score = 0

[plugins]
    [plugins."io.containerd.grpc.v1.cri"]
        # This host's root may not lower OOM scores.
        restrict_oom_score_adj = true
        max_container_log_line_size = 32768
        [plugins."io.containerd.grpc.v1.cri".cni]
            bin_dir = "/usr/lib/cni"
            conf_dir = "/etc/cni/net.d"
        [plugins."io.containerd.grpc.v1.cri".containerd]
            default_runtime_name = "runc"
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                runtime_type = "io.containerd.runc.v2"
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-debug]
                runtime_type = "io.containerd.runc.v2"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-debug.options]
                    BinaryName = "/usr/bin/runc"
        [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
            endpoint = ["https://mirror.invalid"]
"#;
    let import = "version = 2\n[debug]\n  level = \"info\"\n";
    (main.into(), import.into())
}

const OPERATORS_RUNTIME_CONFIG: &str = "# The operator's own: install keeps it.\n[runsc]\nplatform = \"ptrace\"\n[policy]\nallow_docker = false\n";

impl Node {
    fn new(version: &'static str, fixture: Fixture) -> Node {
        let dir = std::env::temp_dir().join(beta9_e2e::unique_id(&format!("beta9-node-{}", version.replace('.', ""))));
        let root = dir.join("root");
        let local = dir.join("usr-local");
        for d in ["usr", "proc", "sys", "dev", "run", "tmp", "var/lib", "var/log/pods", "opt/cni", "opt/images", "etc/cni/net.d"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for d in ["bin", "sbin", "share"] {
            std::fs::create_dir_all(local.join(d)).unwrap();
        }
        // A merged-/usr root, as Debian's: everything but /usr/local is the host's, read-only.
        for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("var/run", "../run"), ("opt/cni/bin", "/usr/lib/cni")] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        for f in ["hosts", "ld.so.cache", "passwd", "group"] {
            std::fs::copy(Path::new("/etc").join(f), root.join("etc").join(f)).unwrap();
        }
        write(&root.join("etc/resolv.conf"), "nameserver 127.0.0.1\n");
        write(&root.join("etc/cni/net.d/10-beta9-install-test.conflist"), &conflist());
        match fixture {
            Fixture::None => {}
            Fixture::Distro => write(&root.join("etc/containerd/config.toml"), &distro_config(version)),
            Fixture::Operator => {
                let (main, import) = operator_config(version);
                write(&root.join("etc/containerd/config.toml"), &main);
                std::fs::set_permissions(root.join("etc/containerd/config.toml"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
                write(&root.join("etc/containerd/operator.d/10-debug.toml"), &import);
                write(&root.join("etc/containerd/beta9-sandbox.toml"), OPERATORS_RUNTIME_CONFIG);
            }
        }
        let r = root.display();
        // The version's containerd, ctr and shims where a node of that Debian release has them.
        let mut binaries = String::new();
        if version != "1.6" {
            for e in std::fs::read_dir(containerd_bin(version)).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if Path::new("/usr/bin").join(&name).is_file() {
                    binaries += &format!("\nmount --bind {} {r}/usr/bin/{name}", e.path().display());
                }
            }
        }
        let setup = format!(
            "mount --bind /usr {r}/usr\nmount -o remount,bind,ro {r}/usr\nmount --bind {local} {r}/usr/local\nmount -t proc proc {r}/proc\n\
             mount --rbind /sys {r}/sys\nmount --rbind /dev {r}/dev\n\
             mount --bind {images} {r}{IMAGES}\nmount -o remount,bind,ro {r}{IMAGES}{binaries}",
            local = local.display(),
            images = cache().join("images").display(),
        );
        let ns = Namespace::new(&setup);
        let node_ns = ns.rooted_at(&root, "");
        Node { version, dir, root, local, ns: Some(ns), node_ns: Some(node_ns), containerd: None, ids: Default::default() }
    }

    fn ns(&self) -> &Namespace {
        self.ns.as_ref().unwrap()
    }

    /// A program of the node, run inside it, on the PATH systemd gives containerd.
    fn inside(&self, program: &str) -> Command {
        let mut c = self.node_ns.as_ref().unwrap().command("env");
        c.arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").arg(program);
        c
    }

    /// The installer, outside the node's root, as the DaemonSet runs it (`--root`).
    fn installer(&self, args: &[&str]) -> Run {
        let mut c = self.ns().command(release_dir().join("beta9-sandbox-install").to_str().unwrap());
        c.arg("--root").arg(&self.root);
        run_cmd(c.args(args), None)
    }

    fn socket(&self) -> PathBuf {
        self.root.join("run/containerd/containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> Run {
        run_cmd(self.inside("ctr").args(args), None)
    }

    fn crictl(&self, args: &[&str]) -> Run {
        let crictl = repo().join("../shared/critest/bin/crictl");
        assert!(crictl.is_file(), "crictl is missing at {} (the CRI tools beside this repository)", crictl.display());
        let ep = format!("unix://{}", self.socket().display());
        run_cmd(Command::new(crictl).args(["--runtime-endpoint", &ep, "--image-endpoint", &ep, "--timeout", "120s"]).args(args), None)
    }

    /// containerd's effective config. 1.x's dump needs a file (an empty one reads as no file:
    /// the defaults), and lists the file it read among the imports, which is left out here.
    fn dump(&self) -> toml::Table {
        let mut c = self.inside("containerd");
        if !self.root.join("etc/containerd/config.toml").exists() {
            c.args(["--config", "/dev/null"]);
        }
        let r = ok(c.args(["config", "dump"]));
        let mut t: toml::Table = r.stdout.parse().unwrap_or_else(|e| panic!("config dump is not TOML: {e}\n{}", r.stdout));
        if let Some(imports) = t.get_mut("imports").and_then(|i| i.as_array_mut()) {
            imports.retain(|i| !matches!(i.as_str(), Some("/dev/null" | "/etc/containerd/config.toml")));
        }
        t
    }

    fn start_containerd(&mut self) {
        assert!(self.containerd.is_none());
        let log = std::fs::File::options().create(true).append(true).open(self.dir.join("containerd.log")).unwrap();
        let mut c = self.inside("containerd");
        c.stdout(log.try_clone().unwrap()).stderr(log).stdin(std::process::Stdio::null());
        let mut d = Daemon::spawn(&mut c);
        // Up when its API answers (and CRI loaded, which the pod tests need).
        let up = eventually(Duration::from_secs(30), || d.alive() && self.ctr(&["version"]).code == 0);
        assert!(up, "containerd {} did not come up; its log:\n{}", self.version, self.log_tail());
        let plugins = self.ctr(&["plugins", "ls"]).stdout;
        assert!(plugins.lines().any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok")), "CRI did not load:\n{plugins}\n{}", self.log_tail());
        self.containerd = Some(d);
    }

    fn stop_containerd(&mut self) {
        if let Some(mut d) = self.containerd.take() {
            d.stop();
        }
    }

    fn log_tail(&self) -> String {
        let l = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        l.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The node's files the installer may touch: /etc, /usr/local and its state directory.
    fn files(&self) -> Tree {
        let mut t: Tree = snapshot(&self.root.join("etc")).into_iter().map(|(k, v)| (format!("etc/{k}"), v)).collect();
        t.extend(snapshot(&self.local).into_iter().map(|(k, v)| (format!("usr/local/{k}"), v)));
        t.extend(snapshot(&self.root.join("var/lib/beta9-sandbox")).into_iter().map(|(k, v)| (format!("var/lib/beta9-sandbox/{k}"), v)));
        t
    }

    fn import_images(&self, sandbox_image: &str) {
        for (ns, image) in [("default", "busybox"), ("k8s.io", "busybox"), ("k8s.io", "pause"), ("k8s.io", "debian")] {
            ok(self.inside("ctr").args(["-n", ns, "images", "import", "--base-name", &format!("docker.io/beta9/{image}"), &format!("{IMAGES}/beta9_{image}.tar")]));
        }
        // CRI's own pause image (no registry is reachable), under the name this config gives it.
        ok(self.inside("ctr").args(["-n", "k8s.io", "images", "tag", "--force", "docker.io/beta9/pause:latest", sandbox_image]));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_containerd();
        // Everything in the namespaces goes with them, then their mounts; only then the files.
        self.node_ns.take();
        self.ns.take();
        delete_bridge();
        // What a killed shim could not remove: its sandboxes' cgroups, deepest first.
        for id in self.ids.borrow().iter() {
            let mut dirs = beta9_e2e::cgroups::named(id);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The CRI plugin key that holds runtimes in a dump of this version.
fn cri_runtime_key(version: &str) -> &'static str {
    if version == "2.1" { "io.containerd.cri.v1.runtime" } else { "io.containerd.grpc.v1.cri" }
}

fn sandbox_image(version: &str, dump: &toml::Table) -> String {
    let p = &dump["plugins"];
    let v = if version == "2.1" { &p["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] } else { &p["io.containerd.grpc.v1.cri"]["sandbox_image"] };
    v.as_str().expect("a sandbox image").to_string()
}

/// The dump after install, less what install added, must equal the dump before.
fn assert_operator_settings_kept(version: &str, before: &toml::Table, after: &toml::Table, restrict_set: bool) {
    let mut after = after.clone();
    let key = cri_runtime_key(version);
    let cri = after["plugins"].as_table_mut().unwrap()[key].as_table_mut().unwrap();
    let runtimes = cri["containerd"]["runtimes"].as_table().unwrap();
    for (name, config) in [("beta9", "/etc/containerd/beta9-sandbox.toml"), ("beta9-docker", "/etc/containerd/beta9-sandbox-docker.toml")] {
        let r = &runtimes[name];
        assert_eq!(r["runtime_type"].as_str(), Some("io.beta9.sandbox"), "{name}: {r}");
        assert_eq!(r["options"]["ConfigPath"].as_str(), Some(config), "{name}: {r}");
        assert_eq!(r["pod_annotations"][0].as_str(), Some("io.beta9.sandbox.*"), "{name}: {r}");
    }
    let runtimes = cri["containerd"].as_table_mut().unwrap()["runtimes"].as_table_mut().unwrap();
    runtimes.remove("beta9");
    runtimes.remove("beta9-docker");
    if restrict_set {
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        cri["restrict_oom_score_adj"] = toml::Value::Boolean(false);
    }
    if let Some(imports) = after.get_mut("imports").and_then(|i| i.as_array_mut()) {
        imports.retain(|i| i.as_str() != Some("/etc/containerd/conf.d/beta9-sandbox.toml"));
    }
    if &after != before {
        let (b, a) = (toml::to_string_pretty(before).unwrap(), toml::to_string_pretty(&after).unwrap());
        let diff: Vec<String> = b.lines().filter(|l| !a.contains(l)).map(|l| format!("- {l}")).chain(a.lines().filter(|l| !b.contains(l)).map(|l| format!("+ {l}"))).collect();
        panic!("containerd {version}: install changed the operator's settings (config dump, our runtimes aside):\n{}", diff.join("\n"));
    }
}

fn pod_config(dir: &Path, name: &str, docker: bool) -> PathBuf {
    let uid = beta9_e2e::unique_id(name);
    let annotations = if docker { r#"{"io.beta9.sandbox.docker": "true"}"# } else { "{}" };
    let p = dir.join(format!("{name}-pod.json"));
    write(&p, &format!(r#"{{"metadata": {{"name": "{uid}", "namespace": "beta9-install", "uid": "{uid}", "attempt": 0}}, "log_directory": "/var/log/pods/{uid}", "annotations": {annotations}, "linux": {{}}}}"#));
    std::fs::create_dir_all(dir.join(format!("root/var/log/pods/{uid}"))).unwrap();
    p
}

fn container_config(dir: &Path, name: &str, image: &str, command: &[&str], docker: bool) -> PathBuf {
    let annotations = if docker { r#"{"io.beta9.sandbox.docker": "true"}"# } else { "{}" };
    let cmd = serde_json::to_string(command).unwrap();
    let p = dir.join(format!("{name}-container.json"));
    write(&p, &format!(r#"{{"metadata": {{"name": "{name}"}}, "image": {{"image": "{image}"}}, "command": {cmd}, "log_path": "{name}.log", "annotations": {annotations}, "linux": {{}}}}"#));
    p
}

/// What one running pod costs the node: its sandbox's cgroup (the sentry, gofer and workload),
/// the most it held, the CPU it used while idle, and its shim beside it.
#[derive(Debug)]
struct Cost {
    cgroup: u64,
    peak: u64,
    idle_millicores: u64,
    shim_rss: u64,
}

fn cgroup_file(pid: u32, v1_controller: &str, v1: &str, v2: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1_line = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == v1_controller).then(|| path.to_string())
    });
    let path = match v1_line {
        Some(p) => format!("/sys/fs/cgroup/{v1_controller}{p}/{v1}"),
        None => format!("/sys/fs/cgroup{}/{v2}", text.lines().find_map(|l| l.strip_prefix("0::"))?),
    };
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn cpu_ns(pid: u32) -> u64 {
    match cgroup_file(pid, "cpuacct", "cpuacct.usage", "cpu.stat") {
        Some(s) if s.starts_with("usage_usec") => s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1000,
        Some(s) => s.parse().unwrap_or(0),
        None => 0,
    }
}

fn measure(node: &Node) -> Cost {
    let members = node.node_ns.as_ref().unwrap().members();
    let (sandbox, _) = members.iter().find(|(_, c)| c.starts_with("runsc-sandbox")).expect("the pod's runsc sandbox");
    let (shim, _) = members.iter().find(|(_, c)| c.contains("containerd-shim-beta9-sandbox")).expect("the pod's shim");
    let mem = |v1, v2| cgroup_file(*sandbox, "memory", v1, v2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let start = (std::time::Instant::now(), cpu_ns(*sandbox));
    std::thread::sleep(Duration::from_secs(2)); // a window of idleness to measure, not a wait
    let used = cpu_ns(*sandbox).saturating_sub(start.1);
    let rss = std::fs::read_to_string(format!("/proc/{shim}/status")).unwrap_or_default();
    let rss_kb: u64 = rss.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    Cost {
        cgroup: mem("memory.usage_in_bytes", "memory.current"),
        peak: mem("memory.max_usage_in_bytes", "memory.peak"),
        idle_millicores: used * 1000 / start.0.elapsed().as_nanos() as u64,
        shim_rss: rss_kb * 1024,
    }
}

/// A RuntimeClass's podFixed overhead in deploy/runtimeclasses.yaml: (memory bytes, millicores).
fn declared_overhead(handler: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(repo().join("deploy/runtimeclasses.yaml")).unwrap();
    let doc = text.split("\n---").find(|d| d.lines().any(|l| l.trim() == format!("handler: {handler}"))).expect("a RuntimeClass for the handler");
    let value = |key: &str| doc.lines().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().trim_matches('"').to_string()).expect(key);
    let memory = value("memory:").strip_suffix("Mi").expect("memory in Mi").parse::<u64>().unwrap() << 20;
    let cpu = value("cpu:").strip_suffix('m').expect("cpu in millicores").parse::<u64>().unwrap();
    (memory, cpu)
}

/// A pod of `handler` running one container until its log says `expect`; measured while it runs.
fn run_pod(node: &Node, handler: &str, name: &str, image: &str, command: &[&str], docker: bool, expect: &str) -> Cost {
    let pod = pod_config(&node.dir, name, docker);
    let r = node.crictl(&["runp", "--runtime", handler, pod.to_str().unwrap()]);
    assert_eq!(r.code, 0, "crictl runp --runtime {handler}: {}{}\n{}", r.stdout, r.stderr, node.log_tail());
    let pod_id = r.stdout.trim().to_string();
    node.ids.borrow_mut().push(pod_id.clone());
    let ctr = container_config(&node.dir, name, image, command, docker);
    let c = node.crictl(&["create", "--no-pull", &pod_id, ctr.to_str().unwrap(), pod.to_str().unwrap()]);
    let outcome = (|| {
        if c.code != 0 {
            return Err(format!("crictl create: {}", c.stderr));
        }
        let cid = c.stdout.trim();
        node.ids.borrow_mut().push(cid.to_string());
        let s = node.crictl(&["start", cid]);
        if s.code != 0 {
            return Err(format!("crictl start: {}", s.stderr));
        }
        let uid: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pod).unwrap()).unwrap();
        let log = node.root.join(format!("var/log/pods/{}/{name}.log", uid["metadata"]["uid"].as_str().unwrap()));
        if !eventually(Duration::from_secs(90), || std::fs::read_to_string(&log).is_ok_and(|l| l.contains(expect))) {
            return Err(format!("{} never said {expect:?}: {:?}", log.display(), std::fs::read_to_string(&log)));
        }
        Ok(measure(node))
    })();
    let stop = node.crictl(&["stopp", &pod_id]);
    let rm = node.crictl(&["rmp", &pod_id]);
    let cost = outcome.unwrap_or_else(|e| panic!("a pod of {handler} on containerd {}: {e}\n{}", node.version, node.log_tail()));
    assert_eq!((stop.code, rm.code), (0, 0), "stopp/rmp: {}{}", stop.stderr, rm.stderr);
    // The RuntimeClass's overhead covers what the sandbox and its shim cost beyond the workload.
    let (memory, cpu) = declared_overhead(handler);
    eprintln!("   {handler} pod on containerd {}: {cost:?} (RuntimeClass overhead: {} MiB, {cpu}m)", node.version, memory >> 20);
    assert!(cost.peak.max(cost.cgroup) + cost.shim_rss <= memory, "{handler}: {cost:?} is more than the RuntimeClass's {} MiB", memory >> 20);
    assert!(cost.idle_millicores <= cpu, "{handler}: idle {}m is more than the RuntimeClass's {cpu}m", cost.idle_millicores);
    cost
}

fn exercise(version: &'static str, fixture: Fixture) {
    eprintln!("== containerd {version}, host config: {fixture:?}");
    let mut node = Node::new(version, fixture);
    let original = node.files();
    let dump_before = node.dump();

    if fixture == Fixture::Operator && version != "2.1" {
        // On 1.x an imported CRI section would replace config.toml's, and with it the runtime.
        let import = node.root.join("etc/containerd/operator.d/20-cri.toml");
        write(&import, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  max_concurrent_downloads = 2\n");
        let r = node.installer(&["install"]);
        assert_ne!(r.code, 0, "install should refuse: {}", r.stdout);
        assert!(r.stderr.contains("/etc/containerd/operator.d/20-cri.toml, imported by /etc/containerd/config.toml, sets CRI's plugin section"), "{}", r.stderr);
        std::fs::remove_file(import).unwrap();
        assert_trees_equal(&original, &node.files(), "a refused install changed files");
    }

    // The operator's containerd runs; install says to restart it (no systemd runs here).
    node.start_containerd();
    let check = node.installer(&["check"]);
    assert_eq!(check.code, 0, "check: {}{}", check.stdout, check.stderr);
    for what in ["containerd", "runsc", "kernel", "cgroups", "cni"] {
        assert!(check.stdout.lines().any(|l| l.starts_with("ok") && l.contains(&format!(" {what}: "))), "check should find {what}:\n{}", check.stdout);
    }
    let install = node.installer(&["install"]);
    assert_eq!(install.code, 0, "install: {}{}", install.stdout, install.stderr);
    let pid = node.containerd.as_ref().unwrap().pid();
    assert!(install.stdout.contains(&format!("restart containerd (pid {pid}:")), "install should say which containerd to restart:\n{}", install.stdout);
    assert!(install.stdout.contains(&format!("for containerd {version}")), "{}", install.stdout);
    let restrict_set = install.stdout.contains("restrict_oom_score_adj = true");
    assert_eq!(restrict_set, fixture != Fixture::Operator, "restrict_oom_score_adj is set only where the operator did not set it:\n{}", install.stdout);
    if fixture == Fixture::Operator {
        assert!(install.stdout.contains("kept ") && install.stdout.contains("beta9-sandbox.toml (the operator's)"), "{}", install.stdout);
        assert_eq!(std::fs::read_to_string(node.root.join("etc/containerd/beta9-sandbox.toml")).unwrap(), OPERATORS_RUNTIME_CONFIG);
    }
    let installed = node.files();
    let installed_mtimes = mtimes(&node.root.join("etc"));
    if version == "2.1" {
        assert!(installed.contains_key("etc/containerd/conf.d/beta9-sandbox.toml"), "2.x gets a drop-in");
    } else {
        assert!(!installed.contains_key("etc/containerd/conf.d"), "1.x is edited in place, no drop-in");
    }
    assert!(installed.contains_key("usr/local/bin/containerd-shim-beta9-sandbox") && installed.contains_key("usr/local/bin/beta9-sandbox-agent"));

    node.stop_containerd();
    let dump_after = node.dump();
    assert_operator_settings_kept(version, &dump_before, &dump_after, restrict_set);
    node.start_containerd();
    node.import_images(&sandbox_image(version, &dump_after));

    // ctr, as an admin (and Docker Engine) would use it.
    let id = beta9_e2e::unique_id("inst");
    node.ids.borrow_mut().push(id.clone());
    let r = node.ctr(&["run", "--rm", "--runtime", "io.beta9.sandbox", BUSYBOX, &id, "echo", "installed"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "installed\n"), "ctr run --runtime io.beta9.sandbox: {}\n{}", r.stderr, node.log_tail());

    // CRI, as the kubelet would with RuntimeClass beta9.
    let script = "echo from a beta9 pod; sleep 600";
    run_pod(&node, "beta9", "plain", BUSYBOX, &["sh", "-c", script], false, "from a beta9 pod");
    // Docker: refused through beta9 by its policy, allowed through beta9-docker.
    let pod = pod_config(&node.dir, "nodocker", true);
    let r = node.crictl(&["runp", "--runtime", "beta9", pod.to_str().unwrap()]);
    assert_ne!(r.code, 0, "a Docker pod through beta9 should be refused: {}", r.stdout);
    assert!(r.stderr.contains("[policy] allow_docker = false"), "the refusal names the policy: {}", r.stderr);
    let script = "docker version --format 'docker server {{.Server.Version}}'; sleep 600";
    run_pod(&node, "beta9-docker", "docker", DEBIAN, &["sh", "-c", script], true, "docker server 20.10");

    // A second install changes nothing, and does not ask for a restart.
    let again = node.installer(&["install"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("nothing changed") && !again.stdout.contains("restart"), "{}", again.stdout);
    assert_trees_equal(&installed, &node.files(), "a second install changed files");
    assert_eq!(installed_mtimes, mtimes(&node.root.join("etc")), "a second install rewrote files");

    // Uninstall refuses while a sandbox of ours runs, naming it.
    let id = beta9_e2e::unique_id("busy");
    node.ids.borrow_mut().push(id.clone());
    let r = node.ctr(&["run", "-d", "--runtime", "io.beta9.sandbox", BUSYBOX, &id, "sleep", "600"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let refused = node.installer(&["uninstall"]);
    assert_ne!(refused.code, 0, "uninstall should refuse: {}", refused.stdout);
    assert!(refused.stderr.contains(&format!("default/{id}")) && refused.stderr.contains("--drain"), "{}", refused.stderr);
    assert_trees_equal(&installed, &node.files(), "a refused uninstall changed files");
    let uninstall = if fixture == Fixture::Distro {
        // --drain stops it instead.
        let u = node.installer(&["uninstall", "--drain"]);
        assert!(u.stdout.contains(&format!("stopped default/{id}")), "{}{}", u.stdout, u.stderr);
        u
    } else {
        ok(node.inside("ctr").args(["task", "rm", "-f", &id]));
        node.installer(&["uninstall"])
    };
    let _ = node.ctr(&["containers", "rm", &id]);
    assert_eq!(uninstall.code, 0, "uninstall: {}{}", uninstall.stdout, uninstall.stderr);
    assert!(uninstall.stdout.contains("restart containerd (pid"), "{}", uninstall.stdout);
    assert_trees_equal(&original, &node.files(), "uninstall did not give the node's files back byte for byte");
    let main = node.root.join("etc/containerd/config.toml");
    match fixture {
        Fixture::None => assert!(!node.root.join("etc/containerd").exists()),
        Fixture::Distro => assert_eq!(std::fs::read_to_string(&main).unwrap(), distro_config(version)),
        Fixture::Operator => assert_eq!(std::fs::read_to_string(&main).unwrap(), operator_config(version).0),
    }
    if fixture != Fixture::None {
        // An operator who edits config.toml after install keeps the edit: uninstall then takes
        // out only what install added, and keeps the original aside.
        let again = node.installer(&["install"]);
        assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
        let before_edit = std::fs::read_to_string(&main).unwrap();
        let note = "\n# the operator's note, written after install\n";
        std::fs::write(&main, before_edit + note).unwrap();
        let u = node.installer(&["uninstall"]);
        assert_eq!(u.code, 0, "{}{}", u.stdout, u.stderr);
        assert!(u.stdout.contains("changed since install: took out only the runtime"), "{}", u.stdout);
        let expected = match fixture {
            Fixture::Operator => operator_config(version).0,
            _ => distro_config(version),
        };
        assert_eq!(std::fs::read_to_string(&main).unwrap(), expected + note, "uninstall after an operator's edit");
        assert!(node.root.join("var/lib/beta9-sandbox/original/etc/containerd/config.toml").is_file());
        std::fs::remove_dir_all(node.root.join("var/lib/beta9-sandbox")).unwrap();
    }
    node.stop_containerd();
    assert_eq!(node.dump(), dump_before, "containerd's config after uninstall");
    let left: Vec<_> = node.ns().members().into_iter().chain(node.node_ns.as_ref().unwrap().members()).collect();
    assert!(left.is_empty(), "processes left in the node: {left:?}");
    let ids = node.ids.borrow().clone();
    let no_cgroups = eventually(Duration::from_secs(10), || ids.iter().all(|id| beta9_e2e::cgroups::named(id).is_empty()));
    assert!(no_cgroups, "cgroups left: {:?}", ids.iter().flat_map(|id| beta9_e2e::cgroups::named(id)).collect::<Vec<_>>());
}

fn all_fixtures(version: &'static str) {
    let _one = lock();
    for f in [Fixture::None, Fixture::Distro, Fixture::Operator] {
        exercise(version, f);
    }
}

#[test]
fn containerd_1_6() {
    all_fixtures("1.6");
}

#[test]
fn containerd_1_7() {
    all_fixtures("1.7");
}

#[test]
fn containerd_2_1() {
    all_fixtures("2.1");
}

/// A stand-in for the API server on loopback (TLS, as the real one): answers every PATCH with
/// 200 and writes each request, one line each, to `log`. Returns it and its port.
fn fake_api_server(dir: &Path, log: &Path) -> (Daemon, u16) {
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    ok(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"]).arg(&key).arg("-out").arg(&cert));
    let script = r#"
import http.server, ssl, sys
log = open(sys.argv[1], "a", buffering=1)
class Api(http.server.BaseHTTPRequestHandler):
    def do_PATCH(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        log.write(" ".join([self.command, self.path, self.headers["Authorization"], self.headers["Content-Type"], body]) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Api)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut c = Command::new("/usr/bin/python3");
    c.arg("-c").arg(script).arg(log).arg(&cert).arg(&key).stdout(std::process::Stdio::piped());
    let mut d = Daemon::spawn(&mut c);
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(d.0.as_mut().unwrap().stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("the fake API server did not start: {line:?}"));
    (d, port)
}

/// The DaemonSet's container (deploy/image/daemonset-entrypoint, with the node at --root as in
/// the pod): it installs, labels the node through the API server, and on SIGTERM takes the
/// label off, then uninstalls, giving the node's files back.
#[test]
fn daemonset_entrypoint_installs_labels_and_on_termination_unlabels_and_uninstalls() {
    let _one = lock();
    let node = Node::new("1.6", Fixture::Distro);
    let original = node.files();
    let api_log = node.dir.join("api.log");
    let (_api, port) = fake_api_server(&node.dir, &api_log);
    let sa = node.dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::copy(node.dir.join("api.crt"), sa.join("ca.crt")).unwrap();
    write(&sa.join("token"), "a-token");
    let out = std::fs::File::create(node.dir.join("entrypoint.log")).unwrap();
    let mut c = node.ns().command("sh");
    c.arg(repo().join("deploy/image/daemonset-entrypoint"))
        .env("BETA9_HOST", &node.root)
        .env("BETA9_BIN", release_dir())
        .env("BETA9_SERVICEACCOUNT", &sa)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .env("NODE_NAME", "node-1")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut pod = Daemon::spawn(&mut c);
    let said = || std::fs::read_to_string(node.dir.join("entrypoint.log")).unwrap_or_default();
    let api = || std::fs::read_to_string(&api_log).unwrap_or_default();
    let label = "PATCH /api/v1/nodes/node-1 Bearer a-token application/merge-patch+json {\"metadata\":{\"labels\":{\"beta9.io/sandbox-runtime\":";
    assert!(eventually(Duration::from_secs(60), || api().contains(&format!("{label}\"true\"}}}}}}"))), "no label: {}\n{}", api(), said());
    // The entrypoint says so once the API server's answer is back, a moment after it logged the request.
    let labelled = || said().contains("registered runtime io.beta9.sandbox for containerd 1.6") && said().contains("labelled beta9.io/sandbox-runtime=true");
    assert!(eventually(Duration::from_secs(30), labelled), "{}", said());
    assert!(node.root.join("var/lib/beta9-sandbox/record.json").is_file());

    // The DaemonSet deleted: the kubelet sends SIGTERM.
    let mut child = pod.0.take().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    assert!(eventually(Duration::from_secs(60), || { status = child.try_wait().unwrap(); status.is_some() }), "the entrypoint did not end: {}", said());
    assert_eq!(status.unwrap().code(), Some(0), "{}", said());
    let calls: Vec<String> = api().lines().map(str::to_string).collect();
    assert_eq!(calls, vec![format!("{label}\"true\"}}}}}}"), format!("{label}null}}}}}}")], "labelled, then unlabelled");
    assert!(said().contains("unregistered runtime io.beta9.sandbox"), "{}", said());
    assert_trees_equal(&original, &node.files(), "the DaemonSet's removal did not give the node's files back");
    let left: Vec<_> = node.ns().members();
    assert!(left.is_empty(), "processes left: {left:?}");
}
