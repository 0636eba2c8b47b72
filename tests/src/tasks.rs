//! containerd's Tasks API for what ctr has no command for: Update. No ctr (1.6 here, nor 1.7
//! or 2.1) has `task update`, so the tests call Tasks.Update as any containerd client does.

use std::{collections::HashMap, time::Duration};

/// containerd.services.tasks.v1.UpdateTaskRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct UpdateTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(message, optional, tag = "2")]
    resources: Option<prost_types::Any>,
    #[prost(map = "string, string", tag = "3")]
    annotations: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// Sets a task's resources: `resources` is OCI's LinuxResources as JSON, which is how
/// containerd's clients encode it (typeurl of a non-protobuf type).
pub fn update(namespace: &str, id: &str, resources: &str) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let channel = crate::cri::channel().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(UpdateTaskRequest {
            container_id: id.into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: resources.as_bytes().to_vec(),
            }),
            annotations: HashMap::new(),
        });
        req.metadata_mut().insert("containerd-namespace", namespace.parse().unwrap());
        req.set_timeout(Duration::from_secs(30));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/containerd.services.tasks.v1.Tasks/Update");
        grpc.unary::<_, Empty, _>(req, path, tonic_prost::ProstCodec::default()).await.map(drop)
    })
}
