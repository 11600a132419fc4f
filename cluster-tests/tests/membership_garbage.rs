//! 10,000 random datagrams to a node's gossip port and 10,000 random packets to another
//! node's QUIC port leave every node up and the membership unchanged (same members, same
//! incarnations, all alive: a node that had been declared down would have come back under
//! a new incarnation).
//!
//! The bytes come from a seeded generator (the seed is printed). A share of the datagrams
//! start like real ones (the gossip magic and version; a QUIC long header with version 1)
//! so that they get past the first checks and reach the deeper parsers.
#![allow(clippy::print_stderr)] // the tests print what they measured

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use cortex_cluster_tests::{ClusterOptions, MemberState, NodeProcess, TestCluster, poll_until};
use cortex_transport::TlsMaterial;
use membership_common::dial;

mod membership_common;

const CONVERGE: Duration = Duration::from_secs(30);
const DATAGRAMS: usize = 10_000;

/// xorshift64*: deterministic bytes from a printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// A random gossip-like datagram: pure noise, or the magic "CS" and version 1 with a
/// random kind, sender, counter, payload and tag.
fn gossip_junk(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(1500) as usize;
    let mut d = vec![0u8; len];
    rng.fill(&mut d);
    if len >= 3 && rng.below(2) == 0 {
        d[..3].copy_from_slice(b"CS\x01");
    }
    d
}

/// A random QUIC-like packet: noise, or a long header (Initial/Handshake, version 1) with
/// random connection ids and payload, often padded to the 1200-byte Initial minimum.
fn quic_junk(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.below(2) == 0 {
        1200
    } else {
        rng.below(1500) as usize
    };
    let mut d = vec![0u8; len];
    rng.fill(&mut d);
    if len >= 7 && rng.below(2) == 0 {
        d[0] = 0xC0 | (d[0] & 0x3F);
        d[1..5].copy_from_slice(&1u32.to_be_bytes());
        d[5] = (d[5] % 21) as u8; // destination connection id length 0..=20
    }
    d
}

/// Datagrams sent before waiting for the node to catch up, so the receive buffer never
/// overflows (a burst of 10,000 loses about half on loopback).
const BATCH: usize = 100;

/// Sends the gossip junk to `target` in batches; after each batch waits until the node's
/// refusal counter has counted every datagram sent so far. Returns the datagrams counted.
fn flood_gossip(target: &NodeProcess, rng: &mut Rng) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = gossip_rejected_total(target);
    let mut sent = 0u64;
    for _ in 0..DATAGRAMS / BATCH {
        for _ in 0..BATCH {
            socket
                .send_to(&gossip_junk(rng), target.gossip_addr())
                .unwrap();
            sent += 1;
        }
        poll_until(CONVERGE, "the node to count the junk", || {
            let n = gossip_rejected_total(target) - base;
            if n >= sent {
                Ok(())
            } else {
                Err(format!("{n} of {sent} refused"))
            }
        })
        .unwrap();
    }
    gossip_rejected_total(target) - base
}

/// Sends the QUIC junk in batches, pausing for an admin request between batches to give
/// the endpoint time to drain its socket. The node exposes no count of refused QUIC
/// packets, so how many arrived cannot be checked exactly.
fn flood_quic(target: &NodeProcess, rng: &mut Rng) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..DATAGRAMS / BATCH {
        for _ in 0..BATCH {
            socket.send_to(&quic_junk(rng), target.quic_addr()).unwrap();
        }
        assert_eq!(target.get("/health").unwrap().status, 200);
    }
}

fn gossip_rejected_total(node: &NodeProcess) -> u64 {
    node.metrics()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cortex_gossip_datagrams_rejected"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn random_datagrams_leave_every_node_up_and_membership_unchanged() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
    cluster.wait_converged(CONVERGE).unwrap();
    let ids = |c: &TestCluster| -> BTreeSet<String> {
        c.members(0).unwrap().iter().map(|m| m.id()).collect()
    };
    let before = ids(&cluster);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("junk seed: {seed:#x} (set it in Rng(..) to replay)");
    let mut rng = Rng(seed);
    let refused = flood_gossip(cluster.node(0), &mut rng);
    eprintln!("n0 refused {refused} of {DATAGRAMS} junk gossip datagrams");
    assert_eq!(
        refused, DATAGRAMS as u64,
        "every junk datagram is counted as refused"
    );
    flood_quic(cluster.node(1), &mut rng);

    for i in 0..3 {
        assert!(
            cluster.node_mut(i).is_running(),
            "n{i} died:\n{}",
            cluster.node(i).log_tail(30)
        );
        assert_eq!(cluster.node(i).get("/health").unwrap().status, 200);
    }
    cluster.wait_agree(&[0, 1, 2], CONVERGE).unwrap();
    assert_eq!(ids(&cluster), before, "membership changed");
    for (observer, view) in cluster.views(&[0, 1, 2]).unwrap() {
        assert!(
            view.iter().all(|m| m.state == MemberState::Alive),
            "{observer}: {view:?}"
        );
    }
    // n1's QUIC endpoint still completes a real handshake after its junk.
    let ca = cluster.ca();
    ca.issue("probe").unwrap();
    let tls = TlsMaterial::load(&ca.ca_cert(), &ca.cert("probe"), &ca.key("probe")).unwrap();
    dial(
        cluster.node(1),
        &cluster.options().cluster_name,
        "probe",
        tls,
        None,
    )
    .unwrap();
    // No task died on the junk either.
    for i in 0..3 {
        assert!(!cluster.node(i).log().contains("panicked"), "n{i} panicked");
    }
}
