//! Shared by the membership tests: a QUIC dial from the test process.

use std::sync::Arc;

use cortex_cluster_tests::NodeProcess;
use cortex_protocol::{Ask, Envelope, NodeId, PeerIdentity, VersionRange};
use cortex_transport::{
    Connection, Endpoint, EndpointConfig, Handler, Responder, TlsMaterial, TransportError,
};

/// A QUIC peer that accepts nothing: the tests only dial.
struct Deaf;

impl Handler for Deaf {
    fn on_envelope(&self, _conn: &Connection, _env: Envelope) {}
    fn on_ask(&self, _conn: &Connection, _ask: Ask, _reply: Responder) {}
}

/// Dials `node`'s QUIC endpoint as node `name` with `tls`, offering `versions`.
pub(crate) fn dial(
    node: &NodeProcess,
    cluster_name: &str,
    name: &str,
    tls: TlsMaterial,
    versions: Option<VersionRange>,
) -> Result<(), TransportError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let id = PeerIdentity::Node(NodeId::new(name, 1).unwrap());
        let mut cfg = EndpointConfig::new("127.0.0.1:0".parse().unwrap(), tls, id, cluster_name);
        if let Some(v) = versions {
            cfg.hello_versions = v;
        }
        let ep = Endpoint::bind(cfg, Arc::new(Deaf)).unwrap();
        let r = ep.connect(node.quic_addr(), node.name()).await.map(|_| ());
        ep.close().await;
        r
    })
}
