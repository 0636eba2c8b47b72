//! CRI as the kubelet speaks it, against the private containerd: pods of the `beta9` runtime
//! handler, removed with everything in them when the test ends.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use k8s_cri::v1::{runtime_service_client::RuntimeServiceClient, *};
use tonic::transport::Channel;

/// The runtime handler hack/containerd.sh configures for our shim.
pub const HANDLER: &str = "beta9";

pub type CriResult<T> = Result<T, tonic::Status>;

pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

fn pairs(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn namespaces(host_network: bool) -> Option<NamespaceOption> {
    let network = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod };
    Some(NamespaceOption { network: network as i32, pid: NamespaceMode::Container as i32, ..Default::default() })
}

impl Cri {
    pub fn connect() -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let socket = crate::address();
        let channel = rt
            .block_on(async {
                tonic::transport::Endpoint::try_from("http://[::]:0")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .expect("connect to containerd's CRI service");
        Cri { rt, client: RuntimeServiceClient::new(channel) }
    }

    fn call<T, F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>>(
        &self,
        f: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> CriResult<T> {
        let client = self.client.clone();
        self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), f(client)).await })
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("the CRI call hung for 120 s")))
            .map(tonic::Response::into_inner)
    }

    /// RunPodSandbox with our handler; the pod is stopped and removed when dropped.
    pub fn run_pod(&self, name: &str, annotations: &[(&str, &str)], host_network: bool) -> CriResult<Pod<'_>> {
        self.run_pod_in(name, annotations, host_network, "")
    }

    /// RunPodSandbox under the pod cgroup `cgroup_parent` (cgroupfs form), as the kubelet gives it.
    pub fn run_pod_in(&self, name: &str, annotations: &[(&str, &str)], host_network: bool, cgroup_parent: &str) -> CriResult<Pod<'_>> {
        let uid = crate::unique_id(name);
        let logs = std::env::temp_dir().join(format!("cri-logs-{uid}"));
        std::fs::create_dir_all(&logs).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: uid.clone(), uid: uid.clone(), namespace: "beta9-e2e".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: logs.to_string_lossy().into_owned(),
            annotations: pairs(annotations),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: namespaces(host_network),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: HANDLER.into() };
        let id = match self.call(|mut c| async move { c.run_pod_sandbox(req).await }) {
            Ok(r) => r.pod_sandbox_id,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&logs);
                return Err(e);
            }
        };
        let mut pod = Pod { cri: self, id, config, host_network, containers: Vec::new(), logs, network: None };
        if !host_network {
            pod.network = Some(pod.read_network());
        }
        Ok(pod)
    }
}

/// A container to create in a pod.
#[derive(Default)]
pub struct Spec<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub command: &'a [&'a str],
    pub annotations: &'a [(&'a str, &'a str)],
    /// Host path, container path; read-only.
    pub mounts: &'a [(&'a str, &'a str)],
    pub resources: Option<LinuxContainerResources>,
    /// The kubelet's restart count: a container made again in its pod gets the next one.
    pub attempt: u32,
}

pub struct Pod<'a> {
    cri: &'a Cri,
    pub id: String,
    config: PodSandboxConfig,
    host_network: bool,
    /// Every container created in it, for the leak checks.
    pub containers: Vec<String>,
    logs: PathBuf,
    /// What CNI made for it, for the leak checks.
    network: Option<PodNetwork>,
}

/// What CNI gave a pod with a network namespace of its own.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    pub ip: String,
    /// The pod's network namespace.
    pub netns: String,
    /// The host side of its veth pair.
    pub host_veth: String,
}

impl Pod<'_> {
    /// The pod's address, namespace and host-side veth, from CRI's verbose status.
    fn read_network(&self) -> PodNetwork {
        let req = PodSandboxStatusRequest { pod_sandbox_id: self.id.clone(), verbose: true };
        let status = self.cri.call(|mut c| async move { c.pod_sandbox_status(req).await }).expect("PodSandboxStatus");
        let ip = status.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        let info: serde_json::Value = serde_json::from_str(status.info.get("info").map(String::as_str).unwrap_or("{}")).unwrap_or_default();
        // cniResult's interfaces: eth0 lives in the pod's namespace, the veth on the host.
        let interfaces = info["cniResult"]["Interfaces"].as_object().cloned().unwrap_or_default();
        let netns = interfaces.get("eth0").and_then(|i| i["Sandbox"].as_str()).unwrap_or_default().to_string();
        let host_veth = interfaces.keys().find(|k| k.starts_with("veth")).cloned().unwrap_or_default();
        assert!(!ip.is_empty() && !netns.is_empty() && !host_veth.is_empty(), "CNI's result for pod {}: {info}", self.id);
        PodNetwork { ip, netns, host_veth }
    }

    /// The pod's own network (not for host-network pods).
    pub fn network(&self) -> &PodNetwork {
        self.network.as_ref().expect("a pod with a network namespace of its own")
    }

    pub fn create(&mut self, spec: &Spec) -> CriResult<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: spec.name.into(), attempt: spec.attempt }),
            image: Some(ImageSpec { image: spec.image.into(), ..Default::default() }),
            command: spec.command.iter().map(|s| s.to_string()).collect(),
            annotations: pairs(spec.annotations),
            log_path: format!("{}.log", spec.name),
            mounts: spec
                .mounts
                .iter()
                .map(|(h, c)| Mount { host_path: h.to_string(), container_path: c.to_string(), readonly: true, ..Default::default() })
                .collect(),
            linux: Some(LinuxContainerConfig {
                resources: spec.resources.clone(),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: namespaces(self.host_network),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let id = self.cri.call(|mut c| async move { c.create_container(req).await })?.container_id;
        self.containers.push(id.clone());
        Ok(id)
    }

    pub fn start(&self, id: &str) -> CriResult<()> {
        let req = StartContainerRequest { container_id: id.into() };
        self.cri.call(|mut c| async move { c.start_container(req).await }).map(drop)
    }

    /// Create and start; panics if either fails.
    pub fn run(&mut self, spec: &Spec) -> String {
        let id = self.create(spec).unwrap_or_else(|e| panic!("CreateContainer {}: {e}", spec.name));
        self.start(&id).unwrap_or_else(|e| panic!("StartContainer {}: {e}", spec.name));
        id
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str], timeout_secs: i64) -> CriResult<ExecSyncResponse> {
        let req = ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: timeout_secs };
        self.cri.call(|mut c| async move { c.exec_sync(req).await })
    }

    pub fn status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest { container_id: id.into(), verbose: false };
        self.cri.call(|mut c| async move { c.container_status(req).await }).unwrap().status.unwrap()
    }

    pub fn state(&self, id: &str) -> ContainerState {
        ContainerState::try_from(self.status(id).state).unwrap()
    }

    pub fn stats(&self, id: &str) -> CriResult<ContainerStats> {
        let req = ContainerStatsRequest { container_id: id.into() };
        self.cri.call(|mut c| async move { c.container_stats(req).await }).map(|r| r.stats.unwrap_or_default())
    }

    /// UpdateContainerResources, as the kubelet's in-place resize sends it.
    pub fn update(&self, id: &str, resources: LinuxContainerResources) -> CriResult<()> {
        let req = UpdateContainerResourcesRequest { container_id: id.into(), linux: Some(resources), ..Default::default() };
        self.cri.call(|mut c| async move { c.update_container_resources(req).await }).map(drop)
    }

    pub fn stop(&self, id: &str, timeout_secs: i64) -> CriResult<()> {
        let req = StopContainerRequest { container_id: id.into(), timeout: timeout_secs };
        self.cri.call(|mut c| async move { c.stop_container(req).await }).map(drop)
    }

    pub fn remove(&self, id: &str) -> CriResult<()> {
        let req = RemoveContainerRequest { container_id: id.into() };
        self.cri.call(|mut c| async move { c.remove_container(req).await }).map(drop)
    }

    /// What CRI wrote to a container's log file.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits (bounded) until the container reached `state`.
    pub fn reaches(&self, id: &str, state: ContainerState) -> bool {
        crate::eventually(Duration::from_secs(20), || self.state(id) == state)
    }

    /// Pids of our shims serving this pod: it must be exactly one.
    pub fn shims(&self) -> Vec<u32> {
        let ids: Vec<String> = std::iter::once(&self.id).chain(&self.containers).map(|i| format!(" -id {i} ")).collect();
        crate::processes_with_pids()
            .into_iter()
            .filter(|(_, c)| c.contains("containerd-shim-beta9-sandbox") && ids.iter().any(|i| c.contains(i)))
            .map(|(p, _)| p)
            .collect()
    }

    /// The pod's runsc sandbox processes (the sandbox is named after the pod's id): pid, cmdline.
    pub fn sandbox_processes(&self) -> Vec<(u32, String)> {
        crate::processes_with_pids()
            .into_iter()
            .filter(|(_, c)| c.starts_with("runsc-sandbox") && c.ends_with(&format!(" {}", self.id)))
            .collect()
    }

    pub fn sandboxes(&self) -> Vec<String> {
        self.sandbox_processes().into_iter().map(|(_, c)| c).collect()
    }

    fn teardown(&self) -> CriResult<()> {
        let stop = StopPodSandboxRequest { pod_sandbox_id: self.id.clone() };
        self.cri.call(|mut c| async move { c.stop_pod_sandbox(stop).await })?;
        let remove = RemovePodSandboxRequest { pod_sandbox_id: self.id.clone() };
        self.cri.call(|mut c| async move { c.remove_pod_sandbox(remove).await }).map(drop)
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let removed = self.teardown();
        let _ = std::fs::remove_dir_all(&self.logs);
        if std::thread::panicking() {
            return;
        }
        removed.unwrap_or_else(|e| panic!("removing pod {}: {e}", self.id));
        let ids: Vec<&str> = std::iter::once(self.id.as_str()).chain(self.containers.iter().map(String::as_str)).collect();
        crate::assert_no_leftovers(&ids);
        if let Some(net) = &self.network {
            let left = crate::net::pod_network_leftovers(&self.id, net);
            assert!(left.is_empty(), "pod {} left its network behind:\n{}", self.id, left.join("\n"));
        }
    }
}
