//! The harness catches what it claims: builds with a broken handover, or with no settle
//! time and a gate that ignores settledness, or without the quorum rule, produce the
//! failures and double activations the checks look for, where the node as built does not.

use std::time::Duration;

use super::{SimConfig, SimReport, run};
use crate::placement::quorum::QuorumPolicy;

fn short(seed: u64) -> SimConfig {
    let mut c = SimConfig::new(seed);
    c.fault_phase = Duration::from_secs(25);
    c.quiet_phase = Duration::from_secs(8);
    c
}

/// Both handovers off: the one ahead of admission alone passivates every id that moves here
/// (an id moves to another node only when that node enters the ring, and it awaited
/// admission first), so no seed of 1..=12 fails with only the ring handover off.
#[test]
fn a_handover_that_keeps_moved_ids_fails_the_run() {
    for seed in 1..=3 {
        let mut c = short(seed);
        c.model.handover = false;
        c.model.handover_ahead = false;
        let f = run(&c).expect_err("a build without handover must fail");
        assert!(
            f.reason.contains("does not own") || f.reason.contains("live twice"),
            "seed {seed}: {}",
            f.reason
        );
        assert!(f.to_string().contains(&format!("CORTEX_SIM_SEED={seed}")));
    }
}

#[test]
fn no_settle_time_and_an_ungated_activation_double_activate() {
    // The doubles a settle time exists to prevent: those not explained by a partition.
    let settle_relevant = |c: &SimConfig| {
        let r = run(c).map_err(|f| f.to_string()).unwrap();
        r.doubles.unpartitioned + r.doubles.young_agreement
    };
    let (mut broken, mut built) = (0, 0);
    for seed in 1..=6 {
        let mut c = short(seed);
        c.model.settle = Duration::ZERO;
        c.model.gate_requires_settled = false;
        broken += settle_relevant(&c);
        built += settle_relevant(&short(seed));
    }
    assert!(
        broken > 0 && broken > 2 * built,
        "settle 0 and an ungated activation: {broken} double activations; as built: {built}"
    );
}

/// Faults every 2 s on average rather than 0.8 s: a partition then lasts about 10 s, long
/// enough for both sides to declare each other down, settle and serve each other's ids (at
/// the default rate most partitions heal before: over seeds 1..=30 of `short`, 18 doubles
/// across a partition without the rule).
fn long_partitions(seed: u64, quorum: QuorumPolicy) -> SimConfig {
    let mut c = short(seed);
    c.fault_interval = Duration::from_secs(2);
    c.model.quorum = quorum;
    c
}

/// Over seeds 1..=8, as built: 0 doubles across a partition or its merge, against 96 with
/// `--quorum=off` (seed 2: 9, seed 6: 87). The rule does not remove them all: over seeds
/// 1..=30, 17 as built (all in seed 17) against 243, each with every holder holding
/// quorum; 20 (seeds 15, 17, 22 and 25) before the rule's 500 ms hold against false
/// suspicions, which changed the runs' course. Two reasons were found in those runs. A
/// process started during the partition knows only the members it has seen live, so it
/// holds a majority of its own base on the minority side
/// (seed 25: n5 starts beside the fenced n1 and n4 and serves). And a member joining the
/// minority side grows that side's base and its reachable members together, while the
/// other side never sees it (seed 15: with n6 the side of n1, n3 and n4 reaches 4 of 7,
/// while n0, n2 and n5 reach 3 of 6 with the lowest name).
#[test]
fn the_quorum_rule_keeps_the_minority_side_from_serving() {
    let split = |r: &SimReport| r.doubles.partitioned + r.doubles.merging;
    let (mut built, mut off, mut losses, mut refused) = (0, 0, 0, 0);
    for seed in 1..=8 {
        let r = run(&long_partitions(seed, QuorumPolicy::Majority))
            .map_err(|f| f.to_string())
            .unwrap();
        built += split(&r);
        losses += r.quorum_losses;
        refused += r.quorum_refusals;
        let r = run(&long_partitions(seed, QuorumPolicy::Off))
            .map_err(|f| f.to_string())
            .unwrap();
        assert_eq!((r.quorum_losses, r.fenced, r.quorum_refusals), (0, 0, 0));
        assert_eq!(r.doubles_with_quorum, r.doubles.total(), "seed {seed}");
        off += split(&r);
    }
    assert!(
        losses > 0 && refused > 0,
        "the rule never fired: {losses} quorum losses, {refused} activations refused"
    );
    assert!(
        off >= 10 * (built + 1),
        "doubles across a partition: {built} as built, {off} with --quorum=off"
    );
}
