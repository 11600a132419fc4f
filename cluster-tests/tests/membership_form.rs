//! Clusters of 3 and 5 real node processes formed from one seed: every node's
//! `/cluster/members` lists every node as alive, with the same incarnations everywhere.
#![allow(clippy::print_stderr)] // the tests print what they measured

use std::time::Duration;

use cortex_cluster_tests::{ClusterOptions, MemberState, TestCluster};

/// Generous: convergence normally takes well under a second on loopback.
const CONVERGE: Duration = Duration::from_secs(30);

fn forms(n: usize) {
    let mut cluster = TestCluster::start(n, ClusterOptions::default()).unwrap();
    let took = cluster.wait_converged(CONVERGE).unwrap();
    eprintln!("{n} nodes converged {took:?} after the last node answered /health");
    for i in 0..n {
        let members = cluster.members(i).unwrap();
        assert_eq!(members.len(), n, "{members:?}");
        assert_eq!(members.iter().filter(|m| m.local).count(), 1);
        let me = members.iter().find(|m| m.local).unwrap();
        assert_eq!(me.name, format!("n{i}"));
        assert!(members.iter().all(|m| m.state == MemberState::Alive));
        // Addresses published through gossip are the ones each node bound.
        for m in &members {
            let node = &cluster.nodes()[cluster.index_of(&m.name).unwrap()];
            assert_eq!(m.gossip, node.gossip_addr());
            assert_eq!(m.quic, node.quic_addr());
            assert_eq!(m.http, Some(node.http_addr()));
        }
    }
    // Joined and settled: every node reports ready.
    cortex_cluster_tests::poll_until(CONVERGE, "every node ready", || {
        match cluster.nodes().iter().find(|n| !n.is_ready()) {
            Some(n) => Err(format!("{} not ready", n.name())),
            None => Ok(()),
        }
    })
    .unwrap();
}

#[test]
fn three_nodes_from_one_seed_agree() {
    forms(3);
}

#[test]
fn five_nodes_from_one_seed_agree() {
    forms(5);
}
