//! Deterministic simulation of placement, routing and activation under random membership
//! faults (see `cortex_node::routing::sim`): no double activation once membership agrees,
//! every ask answered exactly once by its deadline, every ask served once the cluster is
//! stable again.
//!
//! - `CORTEX_SIM_SEED=<n>` replays one seed exactly.
//! - `CORTEX_SIM_SEEDS=<count>` runs that many seeds (default 10).
//! - `CORTEX_SIM_FIRST_SEED=<n>` shifts the seed range.
// The per-seed summary and a failing seed's trace go to stderr (shown with --nocapture or on
// failure): they are the test's report, and the seed is what a reader needs to replay.
#![allow(clippy::print_stderr)]

use std::time::Duration;

use cortex_node::placement::quorum::QuorumPolicy;
use cortex_node::routing::sim::{self, DoubleCounts, SimConfig, SimReport};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

fn summary(r: &SimReport) -> String {
    format!(
        "seed {}: {} steps, {} asks ({} ok, errors {:?}, {} quiet), max {} hops, worst answer {:?}, \
         {} activations, {} handed over ({} ahead of admission), {} ring changes ({} unsettles), {} gated on an owner awaiting admission, doubles {:?} (live twice in agreement {:?}), checked agreement {:?}, \
         faults {:?}, converged after {:?}",
        r.seed,
        r.steps,
        r.asks,
        r.ok,
        r.errors,
        r.quiet_asks,
        r.max_hops,
        r.worst_latency,
        r.activations,
        r.handovers,
        r.handovers_ahead,
        r.ring_changes,
        r.unsettles,
        r.awaiting_refusals,
        r.doubles,
        r.overlap_in_agreement,
        r.checked_agreement,
        r.faults,
        r.converged_after
    )
}

#[test]
fn routing_holds_its_invariants_under_random_faults() {
    let seeds: Vec<u64> = match env_u64("CORTEX_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let count = env_u64("CORTEX_SIM_SEEDS").unwrap_or(10);
            let first = env_u64("CORTEX_SIM_FIRST_SEED").unwrap_or(1);
            (first..first + count).collect()
        }
    };
    let mut failures = Vec::new();
    let (mut steps, mut asks, mut unsettles, mut ahead) = (0, 0, 0, 0);
    let (mut ok, mut refused) = (0, 0);
    let mut doubles = DoubleCounts::default();
    let mut overlap = Duration::ZERO;
    let mut worst_hops = 0;
    for &seed in &seeds {
        match sim::run(&SimConfig::new(seed)) {
            Ok(r) => {
                eprintln!("{}", summary(&r));
                assert!(r.faults.crashes + r.faults.leaves + r.faults.partitions > 0);
                assert!(r.quiet_asks > 0, "seed {seed}: no ask in a stable cluster");
                assert!(r.checked_agreement > Duration::ZERO);
                steps += r.steps;
                asks += r.asks;
                unsettles += r.unsettles;
                ahead += r.handovers_ahead;
                ok += r.ok;
                refused += r.awaiting_refusals;
                overlap += r.overlap_in_agreement;
                doubles.partitioned += r.doubles.partitioned;
                doubles.merging += r.doubles.merging;
                doubles.unpartitioned += r.doubles.unpartitioned;
                doubles.young_agreement += r.doubles.young_agreement;
                worst_hops = worst_hops.max(r.max_hops);
            }
            Err(f) => {
                eprintln!("{f}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{} seeds, {steps} steps, {asks} asks ({ok} ok, {refused} activations gated on an owner awaiting admission), {unsettles} unsettled views, {ahead} handed over \
         ahead of admission, {} double activations outside checked windows {doubles:?}, ids live twice in agreement for \
         {overlap:?} in all, max {worst_hops} hops",
        seeds.len(),
        doubles.total()
    );
    assert!(
        failures.is_empty(),
        "failing seeds {failures:?}; replay one with CORTEX_SIM_SEED=<seed>"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let mut c = SimConfig::new(11);
    c.fault_phase = Duration::from_secs(15);
    c.quiet_phase = Duration::from_secs(8);
    let a = sim::run(&c).map_err(|f| f.to_string()).unwrap();
    let b = sim::run(&c).map_err(|f| f.to_string()).unwrap();
    assert_eq!(a, b);
    assert!(a.steps > 5_000, "only {} steps", a.steps);
    assert!(a.activations > 100, "only {} activations", a.activations);
}

/// A build without the join gate lets a node that has seen no other member yet (its join
/// requests lost, or unanswered across a partition) take ids another node holds once its
/// one-member view has settled: check 4 (no double activation by a node that had not
/// joined) fails some seeds, and for that reason only: of seeds 1..=40, 7, 8, 16, 21, 29
/// and 35 (without the handover ahead of admission, six too: 1, 5, 20, 28, 29, 35).
///
/// The figures in this comment were measured before the quorum rule existed (its
/// `QuorumPolicy::Off`, which this test uses): the rule changes every run's course, and
/// fences the minority side of partitions, where most of the counted doubles came from.
///
/// `NodeModel::unsettle_on_gossip_change` has no such test: no seed of 200 fails without
/// it. The rule keeps a node whose gossip set moved ahead of its ring (a member awaiting
/// admission) from activating on the old ring; the doubles that allows last until the
/// admission, one round trip here (at most a dial retransmission, 250 ms, after a heal), far
/// less than the settle time after agreement, so the checks count them (young agreement,
/// partitioned) instead of failing. Over seeds 1..=200 the counted doubles rose from 168 to
/// 255 without it before the handover ahead of admission was modelled, and from 163 to 239
/// with it (ids live twice while membership agreed: 136 ms to 225 ms in all).
///
/// `NodeModel::handover_ahead` has no test either: no seed of 1..=200 fails without it.
/// Without it, the ids a member back from a partition or a false death still hosts stay
/// live twice until its admission completes, one round trip (at most a dial
/// retransmission) after the heal, well within the grace period, so check 1 does not fail.
/// Those overlaps are what the rule removes: over seeds 1..=200, ids were live twice while
/// membership agreed for 441 ms in all without it (6 seeds, both activations live until the
/// admission) and 136 ms with it (4 seeds, only passivations already under way when
/// agreement formed). Counted doubles: 168 without it (partitioned 144, merging 24), 163
/// with it (148, 15); 53,784 activations were passivated ahead of admission, and 307,512
/// asks of 549,604 succeeded with it against 310,020 of 549,625 without.
///
/// `NodeModel::awaiting_gate` has no test either: no seed of 1..=200 fails without it. The
/// rule matters only where a live member awaits admission for longer than the settle time
/// (before that the unsettled view refuses the activation anyway), and a dial here succeeds
/// one round trip after its member is reachable: it waits only while the member is
/// unreachable. In these seeds that was a member that crashed or stopped before this node
/// could admit it, not yet declared down (213 of the 222 refusals below, 13 seeds: the
/// rule's cost, asks refused until the detection or the 5 s grace), or one across a
/// partition (9, seed 117). The re-admission the rule is for, slowed by dials refused after
/// a heal, is not modelled: the transport's handshake (`judge` in
/// `transport/src/handshake.rs`) refuses no peer for being departed, and the closing of a
/// departed member's connections is not simulated. Over seeds 1..=200, the gate refused 222
/// activations that the rest of the gate allowed (14 seeds); without it, 203 such
/// activations went through (same 14 seeds), and seed 117 counted 3 doubles across a
/// partition that it has none of with the gate (counted doubles 160 with it, 163 without:
/// partitioned 145 against 148, merging 15 both). Ids live twice while membership agreed:
/// 135.51 ms in all either way. Asks: 307,338 of 549,545 succeeded with it, 307,512 of
/// 549,604 without. The handover ahead of admission now passivates by the same ring
/// (members awaiting longer than 5 s left out); that changed nothing here: 53,784
/// activations were handed over ahead without the gate, as before the rule.
///
/// The admission backoff (100 ms after a refusal, doubling to 2 s) is modelled but was never
/// exercised in those 200 seeds: no admission was refused (a member unreachable for the
/// whole 5 s connect timeout is normally declared down first, which drops its check).
#[test]
fn activating_before_joining_fails_the_run() {
    let mut caught = Vec::new();
    for seed in 6..=10 {
        let mut c = SimConfig::new(seed);
        c.model.join_gate = false;
        // The seeds above were found without the quorum rule, which changes every run's
        // course (with it, seeds 35 and 38 of 1..=40 fail without the join gate).
        c.model.quorum = QuorumPolicy::Off;
        if let Err(f) = sim::run(&c) {
            assert!(f.reason.contains("before joining"), "{f}");
            caught.push(seed);
        }
    }
    eprintln!("without the join gate, seeds {caught:?} of 6..=10 fail");
    assert!(
        !caught.is_empty(),
        "no seed of 6..=10 caught a build without the join gate"
    );
}
