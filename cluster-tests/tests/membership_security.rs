//! Nodes that must not join, against real node processes. "Cannot join" means: no member
//! ever lists it, its own view holds only itself and `/ready` says it has not joined; and a
//! QUIC connection presenting its credentials is refused.
//! - a node with the wrong cluster secret: its gossip is refused (counted as `bad_tag` by the
//!   seed, which logs one line saying why, at debug level only);
//! - a node made by another `certs init` (another CA and its secret) never appears in any
//!   view; a QUIC peer presenting a certificate from another CA is refused, and the node
//!   logs one line saying the certificate is not signed by the cluster CA;
//! - no common protocol version: the node has no knob to run with other versions, so a QUIC
//!   peer from this process offers only versions the node does not speak; it is refused with
//!   a version error and the node logs it in one line.
//!
//! - a node with the right secret but a certificate from another CA passes gossip, but
//!   never enters the ring: members admit a peer to the ring only after a mutually
//!   authenticated QUIC connection to it, and log one line when that fails.
//!
//! Known gap: gossip refusals are logged at debug level only, and the refused node logs
//! nothing at all.
//!
//! "Never lists" is checked after the intruder's datagrams have demonstrably arrived and
//! been refused (the seed's rejection counter grew), so no fixed wait is involved.
#![allow(clippy::print_stderr)] // the tests print what they measured

use std::time::Duration;

use cortex_cluster_tests::{ClusterOptions, NodeProcess, TestCluster, TlsSource, poll_until};
use cortex_protocol::VersionRange;
use cortex_transport::{TlsMaterial, TransportError};
use membership_common::dial;

mod membership_common;

const CONVERGE: Duration = Duration::from_secs(30);
/// Refused join attempts to observe before checking that nobody lists the intruder:
/// the first join goes out at start-up, then one every couple of seconds.
const REFUSALS: u64 = 2;
/// Gossip refusals are logged at debug level by the membership state machine.
const LOG_LEVEL: &str = "info,cortex_node::membership=debug";

/// The value of `cortex_gossip_datagrams_rejected_total{reason="..."}` in `/metrics`.
fn rejected(node: &NodeProcess, reason: &str) -> u64 {
    let text = node.metrics().unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.contains("gossip_datagrams_rejected") && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn nobody_lists(cluster: &TestCluster, of: &[usize], name: &str) {
    for (observer, view) in cluster.views(of).unwrap() {
        assert!(
            view.iter().all(|m| m.name != name),
            "{observer} lists the intruder {name}: {view:?}"
        );
    }
}

fn cluster_with_debug_gossip() -> TestCluster {
    let opts = ClusterOptions {
        log_level: LOG_LEVEL.into(),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(2, opts).unwrap();
    cluster.wait_converged(CONVERGE).unwrap();
    cluster
}

/// Waits until `line_part` shows up in `node`'s log; returns that line.
fn log_line(node: &NodeProcess, line_part: &str) -> String {
    poll_until(
        CONVERGE,
        &format!("{} to log {line_part:?}", node.name()),
        || {
            node.log()
                .lines()
                .find(|l| l.contains(line_part))
                .map(str::to_owned)
                .ok_or_else(|| "not logged yet".to_owned())
        },
    )
    .unwrap()
}

#[test]
fn a_node_with_the_wrong_cluster_secret_never_joins() {
    let mut cluster = cluster_with_debug_gossip();
    let secret = cluster.dir().join("wrong.secret");
    std::fs::write(&secret, "a different cluster secret, long enough").unwrap();
    let mut spec = cluster.spec("intruder");
    spec.secret_file = Some(secret);
    let before = rejected(cluster.node(0), "bad_tag");
    let intruder = cluster.add(spec).unwrap();

    poll_until(CONVERGE, "n0 to refuse the intruder's joins", || {
        let n = rejected(cluster.node(0), "bad_tag") - before;
        if n >= REFUSALS {
            Ok(())
        } else {
            Err(format!("{n} bad_tag refusals"))
        }
    })
    .unwrap();
    nobody_lists(&cluster, &[0, 1], "intruder");
    let own = cluster.members(intruder).unwrap();
    assert_eq!(own.len(), 1, "the intruder knows only itself: {own:?}");
    // Its readiness says it has not joined (its log says nothing at info level: a gap).
    let ready = cluster.node(intruder).get("/ready").unwrap();
    assert_ne!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("not joined"), "{}", ready.body);
    // The seed says why, in one line (at debug level; see the module docs).
    let line = log_line(cluster.node(0), "gossip datagram refused");
    assert!(line.contains("BadTag"), "{line}");
    eprintln!("n0 logged: {line}");
    cluster.wait_agree(&[0, 1], CONVERGE).unwrap();
}

#[test]
fn a_node_of_another_ca_never_joins() {
    let mut cluster = cluster_with_debug_gossip();
    let other = cluster.foreign_ca("other").unwrap();
    let mut spec = cluster.spec("intruder");
    spec.tls = TlsSource::Authority(other);
    let before = rejected(cluster.node(0), "bad_tag");
    cluster.add(spec).unwrap();
    poll_until(CONVERGE, "n0 to refuse the intruder's joins", || {
        let n = rejected(cluster.node(0), "bad_tag") - before;
        if n >= REFUSALS {
            Ok(())
        } else {
            Err(format!("{n} bad_tag refusals"))
        }
    })
    .unwrap();
    nobody_lists(&cluster, &[0, 1], "intruder");
    cluster.wait_agree(&[0, 1], CONVERGE).unwrap();
}

#[test]
fn a_node_with_the_secret_but_a_foreign_certificate_gets_no_share_of_the_ring() {
    let mut cluster = cluster_with_debug_gossip();
    let other = cluster.foreign_ca("other").unwrap();
    let mut spec = cluster.spec("intruder");
    spec.tls = TlsSource::Authority(other);
    spec.secret_file = Some(cluster.ca().secret_file());
    cluster.add(spec).unwrap();
    let n0 = cluster.node(0);
    poll_until(CONVERGE, "n0 to keep the intruder out of its ring", || {
        let line = n0
            .log()
            .lines()
            .find(|l| l.contains("kept out of the ring") && l.contains("intruder"))
            .map(str::to_owned);
        line.ok_or_else(|| "no admission refusal logged yet".to_owned())
    })
    .unwrap();
    let nodes = ring_owners(n0);
    assert!(
        !nodes.contains(&"intruder".to_owned()),
        "intruder owns ids: {nodes:?}"
    );
    assert!(
        nodes.iter().any(|n| n == "n0") && nodes.iter().any(|n| n == "n1"),
        "{nodes:?}"
    );
}

/// The members that own a share of `node`'s ring (its `/cluster/ring` shares; the answer's
/// quorum lists every member gossip sees, admitted or not).
fn ring_owners(node: &NodeProcess) -> Vec<String> {
    let ring = node.get("/cluster/ring").unwrap();
    let v: serde_json::Value = serde_json::from_str(&ring.body).unwrap();
    v["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_node_with_no_common_protocol_version_gets_no_share_of_the_ring() {
    let mut cluster = cluster_with_debug_gossip();
    let mut spec = cluster.spec("future");
    spec.extra_args.push("--protocol-versions=2-2".into());
    let i = cluster.add(spec).unwrap();
    let line_in = |node: &NodeProcess, what: &str| {
        node.log()
            .lines()
            .find(|l| l.contains("kept out of the ring") && l.contains(what))
            .map(str::to_owned)
    };
    poll_until(
        CONVERGE,
        "both sides to log why the other is kept out",
        || {
            let ours = line_in(cluster.node(0), "future");
            let theirs = line_in(cluster.node(i), "n0");
            match (ours, theirs) {
                (Some(a), Some(b))
                    if a.contains("protocol version") && b.contains("protocol version") =>
                {
                    Ok(())
                }
                (a, b) => Err(format!("n0: {a:?}; future: {b:?}")),
            }
        },
    )
    .unwrap();
    let owners = ring_owners(cluster.node(0));
    assert!(!owners.iter().any(|n| n == "future"), "{owners:?}");
    assert!(
        owners.iter().any(|n| n == "n0") && owners.iter().any(|n| n == "n1"),
        "{owners:?}"
    );
}

#[test]
fn quic_peers_with_a_foreign_certificate_or_no_common_version_are_refused() {
    let cluster = TestCluster::start(1, ClusterOptions::default()).unwrap();
    let n0 = cluster.node(0);
    let cname = cluster.options().cluster_name.clone();
    let ca = cluster.ca();

    // Control: a certificate from the cluster CA is accepted.
    ca.issue("probe").unwrap();
    let good = || TlsMaterial::load(&ca.ca_cert(), &ca.cert("probe"), &ca.key("probe")).unwrap();
    dial(n0, &cname, "probe", good(), None).unwrap();

    // A certificate from another CA (trusting the cluster CA, so that it is the node that
    // refuses): the handshake fails and the node logs one line saying why.
    let other = cluster.foreign_ca("other").unwrap();
    other.issue("intruder").unwrap();
    let foreign = TlsMaterial::load(
        &ca.ca_cert(),
        &other.cert("intruder"),
        &other.key("intruder"),
    )
    .unwrap();
    let err = dial(n0, &cname, "intruder", foreign, None).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::TlsHandshake { .. } | TransportError::Refused { .. }
        ),
        "{err:?}"
    );
    let line = log_line(n0, "inbound connection refused");
    eprintln!("dialer saw: {err}\nn0 logged: {line}");
    assert!(
        line.to_lowercase().contains("cert") || line.contains("issuer"),
        "{line}"
    );

    // No common protocol version.
    let future = VersionRange { min: 200, max: 200 };
    let err = dial(n0, &cname, "probe", good(), Some(future)).unwrap_err();
    eprintln!("dialer saw: {err}");
    assert!(
        matches!(
            err,
            TransportError::VersionMismatch { .. } | TransportError::Refused { .. }
        ),
        "{err:?}"
    );
    poll_until(CONVERGE, "n0 to log the version refusal", || {
        let log = n0.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("inbound connection refused"))
            .collect();
        match lines.iter().find(|l| l.to_lowercase().contains("version")) {
            Some(l) => {
                eprintln!("n0 logged: {l}");
                Ok(())
            }
            None => Err(format!("refusal lines: {lines:?}")),
        }
    })
    .unwrap();
    // The node is still up and serving.
    assert_eq!(n0.get("/health").unwrap().status, 200);
}
