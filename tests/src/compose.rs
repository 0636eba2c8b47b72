//! Docker inside a sandbox as its users drive it: a compose project of two services on a
//! user-defined network, one reaching the other by name over TCP and UDP, with a published port,
//! and what it leaves in the sandbox's network stack once it is down (nothing).
//!
//! The services run the busybox rootfs (`nested_busybox_tar`, imported as `nested-busybox`)
//! with the sandbox image's python3 bound in for the UDP ends (busybox-static has no UDP
//! server or client). The project's files are mounted at /compose, the rootfs tar at
//! /images/busybox.tar; `sh` runs a script in the Docker sandbox and returns its output,
//! failing the test when it fails.

use std::path::PathBuf;

/// The project's name: its containers are `b9-server-1` and `b9-client-1`.
pub const PROJECT: &str = "b9";
/// Where the server's HTTP port is published in the sandbox.
pub const PUBLISHED: u16 = 8081;

const COMPOSE: &str = r#"services:
  server:
    image: nested-busybox
    command: ["sh", "-c", "mkdir -p /www && echo from-server > /www/f && httpd -p 8080 -h /www && exec python3 -u /compose/udp_server.py"]
    volumes: &bound ["/compose:/compose:ro", "/usr:/usr:ro", "/usr/lib:/lib:ro", "/usr/lib64:/lib64:ro"]
    ports: ["8081:8080"]
    networks: [app]
  client:
    image: nested-busybox
    command: ["sh", "/compose/client.sh"]
    volumes: *bound
    depends_on: [server]
    networks: [app]
networks:
  app: {}
"#;

/// The client: TCP to the server by name, then UDP; it waits (bounded) for the server to
/// listen, as compose starts both at once.
const CLIENT: &str = r#"i=0
until out=$(wget -qO- http://server:8080/f); do
  i=$((i+1)); [ $i -lt 100 ] || { echo "tcp: server:8080 did not answer"; exit 1; }; sleep 0.1
done
echo "tcp: $out"
exec python3 -u /compose/udp_client.py server 9999
"#;

const UDP_SERVER: &str = r#"import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
while True:
    data, peer = s.recvfrom(512)
    s.sendto(b"pong from server to " + data, peer)
"#;

const UDP_CLIENT: &str = r#"import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for attempt in range(40):
    try:
        s.sendto(b"client", (host, port))
        print("udp: " + s.recvfrom(512)[0].decode(), flush=True)
        sys.exit(0)
    except (socket.timeout, OSError) as e:
        last = e
print("udp: no answer from %s:%d: %s" % (host, port, last), flush=True)
sys.exit(1)
"#;

/// The project's files in a directory of their own, removed on drop.
pub struct Project {
    pub dir: PathBuf,
}

impl Project {
    pub fn new() -> Project {
        let dir = std::env::temp_dir().join(crate::unique_id("compose"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [("compose.yaml", COMPOSE), ("client.sh", CLIENT), ("udp_server.py", UDP_SERVER), ("udp_client.py", UDP_CLIENT)] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Project { dir }
    }

    /// `ctr run --mount` of the project at /compose.
    pub fn ctr_mount(&self) -> String {
        format!("type=bind,src={},dst=/compose,options=rbind:ro", self.dir.display())
    }
}

impl Default for Project {
    fn default() -> Self {
        Project::new()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What nested Docker can leave in the sandbox's network stack: its interfaces, addresses and
/// routes (as a nested container on the sandbox's own network sees them) and its iptables rules
/// (the legacy backend, table by table: gVisor has no list of tables for iptables-save to read),
/// without counters and comments, sorted (gVisor lists an interface's addresses in no fixed
/// order).
pub fn netstack(sh: &dyn Fn(&str) -> String) -> String {
    let text = sh(
        "docker run --rm --network host nested-busybox sh -c 'ip -o link; ip -o addr; ip route' && \
         iptables-legacy-save -t filter && iptables-legacy-save -t nat",
    );
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(" [").next().unwrap_or(l).to_string()).collect();
    lines.sort();
    lines.join("\n")
}

/// The project up, checked, and down: `published()` fetches /f from the server's published port
/// (from the host, or from inside the sandbox where it has no network).
pub fn up_and_down(sh: &dyn Fn(&str) -> String, published: &dyn Fn() -> String) {
    sh("docker import /images/busybox.tar nested-busybox >/dev/null");
    let before = netstack(sh);
    let compose = format!("docker compose -p {PROJECT} -f /compose/compose.yaml");
    sh(&format!("{compose} up -d"));
    let ps = sh(&format!("{compose} ps -a"));
    assert!(ps.contains("b9-server-1") && ps.contains("b9-client-1"), "compose ps: {ps}");
    // The client exits once it reached the server both ways.
    let code = sh(&format!("docker wait {PROJECT}-client-1"));
    let logs = sh(&format!("{compose} logs client"));
    assert_eq!(code.trim(), "0", "the client failed: {logs}");
    assert!(logs.contains("tcp: from-server"), "TCP by service name: {logs}");
    assert!(logs.contains("udp: pong from server to client"), "UDP by service name: {logs}");
    let server = sh(&format!("{compose} logs server"));
    assert!(!server.contains("Traceback"), "{server}");
    assert_eq!(published().trim(), "from-server", "the published port {PUBLISHED}");
    sh(&format!("{compose} down"));
    assert_eq!(sh(&format!("{compose} ps -a -q")).trim(), "", "down leaves no container");
    let after = netstack(sh);
    assert_eq!(before, after, "down should leave the sandbox's network stack as up found it");
}
