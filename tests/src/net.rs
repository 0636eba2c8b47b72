//! Network fixtures: namespaces and veth pairs the tests make (removed on drop, even when the
//! test fails), servers inside them, the private registry hack/containerd.sh runs on the pods'
//! bridge, and what a pod may leave behind on the host.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::{run_cmd, unique_id, which};

fn ip(args: &[&str]) -> crate::Run {
    let r = run_cmd(Command::new("ip").args(args), None);
    assert_eq!(r.code, 0, "ip {}: {}", args.join(" "), r.stderr);
    r
}

/// A network namespace of the test's own, under /var/run/netns.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(prefix: &str) -> TestNetns {
        let name = unique_id(prefix);
        ip(&["netns", "add", &name]);
        let ns = TestNetns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n NAME ...`, asserted to succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a).stdout
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Its veth ends go with it, and their peers elsewhere too.
        let _ = run_cmd(Command::new("ip").args(["netns", "del", &self.name]), None);
    }
}

/// A veth pair between two test namespaces, `10.99.N.1/24` in `a` and `10.99.N.2/24` in `b`.
pub fn wire(a: &TestNetns, b: &TestNetns, n: u8) -> (String, String) {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = format!("{}{}", std::process::id() % 100000, SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let (ea, eb) = (format!("b9a{k}"), format!("b9b{k}"));
    ip(&["link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns", &b.name]);
    let (xa, xb) = (format!("10.99.{n}.1"), format!("10.99.{n}.2"));
    a.ip(&["addr", "add", &format!("{xa}/24"), "dev", &ea]);
    b.ip(&["addr", "add", &format!("{xb}/24"), "dev", &eb]);
    a.ip(&["link", "set", &ea, "up"]);
    b.ip(&["link", "set", &eb, "up"]);
    (xa, xb)
}

/// busybox's httpd serving one file, inside a test namespace; killed on drop.
pub struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    pub fn httpd(ns: &TestNetns, port: u16, file: &str, content: &str) -> Server {
        let dir = std::env::temp_dir().join(unique_id("www"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), content).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(which("busybox"))
            .args(["httpd", "-f", "-p", &port.to_string(), "-h"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        Server { child, dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET path` on `addr` from the test, with a deadline; the body, or why not.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let sock = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(10)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read from {addr}: {e}"))?;
    if !out.starts_with("HTTP/1.") || out.get(9..12) != Some("200") {
        return Err(format!("{addr}{path} answered: {}", out.lines().next().unwrap_or("")));
    }
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Waits (bounded) until a server answers, as it starts in the background.
pub fn wait_for_http(addr: &str, path: &str) -> String {
    let mut last = String::new();
    let up = crate::eventually(Duration::from_secs(20), || match http_get(addr, path) {
        Ok(body) => {
            last = body;
            true
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(up, "{addr}{path} did not answer: {last}");
    last
}

/// The registry hack/containerd.sh runs on the pods' bridge.
pub fn registry() -> String {
    std::env::var("BETA9_REGISTRY").unwrap_or_else(|_| "10.88.90.1:5000".into())
}

/// Pushes the busybox image into the registry once per test binary; returns its reference.
pub fn busybox_in_registry() -> String {
    static PUSHED: OnceLock<String> = OnceLock::new();
    PUSHED
        .get_or_init(|| {
            let tar = std::env::temp_dir().join(unique_id("busybox-oci")).with_extension("tar");
            let mut export = crate::ctr();
            export.args(["images", "export"]).arg(&tar).arg(crate::BUSYBOX);
            let r = run_cmd(&mut export, None);
            assert_eq!(r.code, 0, "ctr images export: {}", r.stderr);
            let reference = format!("{}/beta9/busybox:latest", registry());
            let mut copy = Command::new(which("skopeo"));
            copy.args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci-archive:{}", tar.display()))
                .arg(format!("docker://{reference}"));
            let r = run_cmd(&mut copy, None);
            let _ = std::fs::remove_file(&tar);
            assert_eq!(r.code, 0, "skopeo copy into the registry: {}", r.stderr);
            reference
        })
        .clone()
}

/// What a removed pod may have left on the host: its namespace, its veth, its address
/// reservation, iptables rules naming it.
pub fn pod_network_leftovers(pod_id: &str, net: &crate::cri::PodNetwork) -> Vec<String> {
    let mut left = Vec::new();
    if std::path::Path::new(&net.netns).exists() {
        left.push(format!("network namespace {}", net.netns));
    }
    if run_cmd(Command::new("ip").args(["link", "show", &net.host_veth]), None).code == 0 {
        left.push(format!("veth {}", net.host_veth));
    }
    for dir in std::fs::read_dir("/var/lib/cni/networks").into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if std::fs::read_to_string(f.path()).is_ok_and(|s| s.contains(pod_id)) {
                left.push(format!("address reservation {}", f.path().display()));
            }
        }
    }
    let rules = run_cmd(&mut Command::new("iptables-save"), None).stdout;
    left.extend(rules.lines().filter(|l| l.contains(&pod_id[..12])).map(|l| format!("iptables: {l}")));
    left
}
