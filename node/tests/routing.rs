//! Three nodes in one process: routing to owners, forwarding, handover on leave, and the
//! single-activation check over the activation logs.

#[path = "../examples/shared/actors.rs"]
mod actors;
#[path = "../examples/shared/messages.rs"]
mod messages;

use std::time::Duration;

use actors::{Account, Counter};
use cortex_node::config::{NodeConfig, Secret, TlsFiles};
use cortex_node::routing::activations::overlapping;
use cortex_node::{Node, NodeBuilder};
use cortex_protocol::ActorId;
use cortex_transport::certs::{self, CertRole};
use messages::*;
use tokio::time::Instant;

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

async fn poll<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca("test").unwrap();
    certs::write_pem_files(dir.path(), "ca", &ca).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let name = format!("n{i}");
        let ck = certs::issue(&ca, &name, CertRole::Node, &[]).unwrap();
        certs::write_pem_files(dir.path(), &name, &ck).unwrap();
        let tls = TlsFiles::in_dir(dir.path(), &name);
        let mut cfg = NodeConfig::local(
            &name,
            tls,
            Secret::new(*b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        cfg.cluster_name = "test".into();
        cfg.data_dir = dir.path().join(&name);
        cfg.settle_time = Duration::from_millis(300);
        cfg.leave_timeout = Duration::from_secs(5);
        if let Some(first) = nodes.first() {
            cfg.seeds = vec![first.gossip_addr().unwrap().to_string()];
        }
        let node = actors::kinds(NodeBuilder::new(cfg)).start().await.unwrap();
        nodes.push(node);
    }
    let c = Cluster { _dir: dir, nodes };
    let want = n;
    let ns = c.nodes.clone();
    poll("membership to converge", || {
        ns.iter()
            .all(|x| x.ring().ring.members().len() == want && x.ring().is_settled(Instant::now()))
    })
    .await;
    c
}

fn id(i: usize) -> ActorId {
    ActorId::new("account", format!("acct-{i}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_reach_the_one_owner_from_every_node() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = cluster(3).await;
    let ids = 300;
    for (k, node) in c.nodes.iter().enumerate() {
        for i in 0..ids {
            let b = node
                .ask::<Account, _>(&id(i), Deposit(1), Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("ask {i} from node {k}: {e}"));
            assert_eq!(b, k as u64 + 1);
        }
    }
    // Every id is live exactly on its owner.
    let total: usize = c.nodes.iter().map(|n| n.activations().live()).sum();
    assert_eq!(total, ids);
    for n in &c.nodes {
        for r in n.activations().since(0) {
            let id: ActorId = r.id.parse().unwrap();
            assert_eq!(n.ring().owner(&id).unwrap(), n.id());
        }
    }
    // Remote errors come back typed: Withdraw more than the balance is an application error,
    // an unknown kind is UnknownKind.
    let r = c.nodes[0]
        .ask::<Account, _>(&id(1), Withdraw(1_000), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.is_err());
    let unknown: ActorId = "nosuchkind/1".parse().unwrap();
    let e = c.nodes[1]
        .ask_erased(
            &unknown,
            &cortex_protocol::MessageName::new("x.Y").unwrap(),
            vec![],
            cortex_runtime::Codec::Bincode,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, cortex_runtime::ActorError::UnknownKind { .. }),
        "{e:?}"
    );
    for n in &c.nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_hands_over_without_double_activation() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = cluster(3).await;
    let counters: Vec<ActorId> = (0..200)
        .map(|i| ActorId::new("counter", i.to_string()).unwrap())
        .collect();
    for cid in &counters {
        c.nodes[0]
            .ask::<Counter, _>(cid, Incr, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let leaving = c.nodes[2].clone();
    let leaving_id = leaving.id().clone();
    leaving.shutdown().await;
    let rest = c.nodes[..2].to_vec();
    poll("the others to drop the leaver", || {
        rest.iter()
            .all(|n| !n.ring().ring.members().contains(&leaving_id))
    })
    .await;
    // Every counter answers again (state was in memory: moved ids start over at 1).
    for cid in &counters {
        let v = c.nodes[1]
            .ask::<Counter, _>(cid, Incr, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(v >= 1);
    }
    let mut all = Vec::new();
    for n in &c.nodes {
        all.extend(n.activations().since(0));
    }
    let now = cortex_node::routing::activations::unix_micros();
    let bad = overlapping(&all, now);
    assert!(bad.is_empty(), "double activations: {bad:?}");
    for n in &rest {
        n.shutdown().await;
    }
}

async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_at_the_edge_from_any_node() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = cluster(3).await;
    for i in 0..30 {
        let node = &c.nodes[i % 3];
        let addr = node.http_addr().unwrap();
        let (status, v) = post_json(addr, &format!("/actors/account/j{i}/bank.Deposit"), "7").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["reply"], 7);
        assert_eq!(v["message"], "bank.Deposit.Reply");
    }
    let addr = c.nodes[0].http_addr().unwrap();
    let (status, v) = post_json(addr, "/actors/account/j1/bank.Deposit", "\"not a number\"").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "Decode");
    let (status, v) = post_json(addr, "/actors/nokind/x/a.B", "1").await;
    assert_eq!(status, 404, "{v}");
    let (status, _) = post_json(addr, "/actors/account/j1/bank.Withdraw", "100").await;
    assert_eq!(status, 200);
    // The mailbox-depth gauge is fed from the live activations at scrape time.
    let scraped = get_text(addr, "/metrics").await;
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("cortex_mailbox_depth{") && l.contains("kind=\"account\"")),
        "{scraped}"
    );
    for n in &c.nodes {
        n.shutdown().await;
    }
}
