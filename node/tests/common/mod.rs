//! Setup shared by the node integration tests: a two-member cluster of real nodes on
//! 127.0.0.1 (ports from the OS), each hosting one actor kind.

use std::path::Path;
use std::time::Duration;

use cortex_node::config::{NodeConfig, Secret, TlsFiles};
use cortex_node::{Node, NodeBuilder};
use cortex_runtime::{Actor, Kind};
use cortex_transport::certs::{self, CertRole};
use tokio::time::Instant;

/// Polls `f` every 20 ms until it holds; fails the test after 30 s.
pub(crate) async fn poll<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `n0` and `n1` (seeded by `n0`) with certificates in `dir` (and one for a client
/// named `client`), each hosting the kind `kind()` makes, and waits until both have a
/// settled two-member ring.
pub(crate) async fn two_nodes<A: Actor>(
    dir: &Path,
    mut kind: impl FnMut() -> Kind<A>,
) -> Vec<Node> {
    let ca = certs::generate_ca("test").unwrap();
    certs::write_pem_files(dir, "ca", &ca).unwrap();
    let client = certs::issue(&ca, "client", CertRole::Client, &[]).unwrap();
    certs::write_pem_files(dir, "client", &client).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..2 {
        let name = format!("n{i}");
        let ck = certs::issue(&ca, &name, CertRole::Node, &[]).unwrap();
        certs::write_pem_files(dir, &name, &ck).unwrap();
        let mut cfg = NodeConfig::local(
            &name,
            TlsFiles::in_dir(dir, &name),
            Secret::new(*b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        cfg.cluster_name = "test".into();
        cfg.data_dir = dir.join(&name);
        cfg.settle_time = Duration::from_millis(300);
        cfg.leave_timeout = Duration::from_secs(5);
        if let Some(first) = nodes.first() {
            cfg.seeds = vec![first.gossip_addr().unwrap().to_string()];
        }
        nodes.push(NodeBuilder::new(cfg).kind(kind()).start().await.unwrap());
    }
    let ns = nodes.clone();
    poll("membership to converge", || {
        ns.iter()
            .all(|x| x.ring().ring.members().len() == 2 && x.ring().is_settled(Instant::now()))
    })
    .await;
    nodes
}
