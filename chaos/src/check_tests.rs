//! The checkers on hand-made histories: what they must flag, and what they must explain.

use super::*;
use crate::history::{ActivationRec, Op, Outcome, Snapshot};

const S: u64 = 1_000_000_000;

fn incr(invoke_ms: u64, complete_ms: u64, value: u64) -> Op {
    Op {
        worker: 1,
        id: "counter/c".into(),
        op: "incr".into(),
        arg: None,
        invoke_us: S + invoke_ms * 1000,
        complete_us: S + complete_ms * 1000,
        deadline_us: S + (invoke_ms + 2000) * 1000,
        attempts: 1,
        outcome: Outcome::Ok {
            value: serde_json::json!(value),
        },
    }
}

fn act(node: &str, from_ms: u64, to_ms: Option<u64>) -> ActivationRec {
    ActivationRec {
        id: "counter/c".into(),
        node: node.into(),
        incarnation: 1,
        seq: 0,
        epoch: 1,
        activated_us: S + from_ms * 1000,
        passivated_us: to_ms.map(|t| S + t * 1000),
    }
}

fn snapshot(ops: Vec<Op>, activations: Vec<ActivationRec>) -> Snapshot {
    Snapshot {
        ops,
        activations,
        start_us: S,
        end_us: S + 60_000_000,
        last_heal_us: S,
        nodes: vec!["n0".into(), "n1".into()],
        expected_members: 2,
        ..Snapshot::default()
    }
}

fn counters_of(h: &Snapshot) -> Verdict {
    counters(h, &Ctx::new(h))
}

#[test]
fn a_jump_on_one_activation_is_a_double_application() {
    let h = snapshot(
        vec![incr(0, 5, 1), incr(10, 15, 2), incr(20, 25, 4)],
        vec![act("n0", 0, None)],
    );
    let v = counters_of(&h);
    assert!(!v.passed, "{v:?}");
    assert_eq!(v.counts["applied_twice"], 1);
    assert_eq!(v.counts["extra_applications"], 1);
}

#[test]
fn a_jump_covered_by_failed_increments_is_not() {
    let mut failed = incr(10, 15, 0);
    failed.outcome = Outcome::Err {
        class: "timeout".into(),
        maybe_ran: true,
        detail: "deadline".into(),
    };
    let h = snapshot(
        vec![incr(0, 5, 1), failed, incr(20, 25, 3)],
        vec![act("n0", 0, None)],
    );
    assert!(counters_of(&h).passed);
}

/// Split brain seen in partition-minority: the isolated node kept its activation (at 561)
/// while the majority activated a fresh one; the last answer of the fresh one reached the
/// caller just after that activation passivated, and the next answer came from the old
/// one. Both were live while the earlier answer was produced, so the jump is a switch of
/// activation, not a double application.
#[test]
fn a_switch_back_to_a_split_brain_twin_after_its_peer_passivated_is_explained() {
    // n0 counts to 5, then the caller reaches n1's fresh activation (from 8 ms).
    let mut ops: Vec<Op> = (1..=5).map(|i| incr(i - 1, i, i)).collect();
    ops.extend([incr(10, 12, 1), incr(20, 22, 2)]);
    // Produced by n1 before it passivated at 40 ms, received at 45 ms.
    ops.push(incr(30, 45, 3));
    // From n0's twin, still at 5.
    ops.push(incr(50, 55, 6));
    let h = snapshot(ops, vec![act("n0", 0, None), act("n1", 8, Some(40))]);
    let v = counters_of(&h);
    assert!(v.passed, "{v:?}");
    assert_eq!(v.counts["jumps_after_move"], 1);
    assert_eq!(v.counts["resets_expected"], 1);
}

#[test]
fn a_reset_without_any_activation_change_or_fault_is_flagged() {
    let h = snapshot(
        vec![incr(0, 5, 7), incr(10, 15, 8), incr(20, 25, 1)],
        vec![act("n0", 0, None)],
    );
    let v = counters_of(&h);
    assert!(!v.passed);
    assert_eq!(v.counts["unexplained_reset"], 1);
}

fn fault(kind: &str, from_ms: u64, to_ms: u64) -> crate::history::FaultRecord {
    crate::history::FaultRecord {
        kind: kind.into(),
        detail: String::new(),
        start_us: S + from_ms * 1000,
        end_us: S + to_ms * 1000,
        downed: Vec::new(),
        skipped: None,
    }
}

#[test]
fn an_overlap_during_a_join_or_restart_is_a_violation() {
    // Views never sampled as agreeing: only the fault rule can judge it.
    let mut h = snapshot(
        Vec::new(),
        vec![act("n0", 0, Some(900)), act("n1", 500, None)],
    );
    h.faults.push(fault("restart", 400, 400));
    let v = single_activation(&h);
    assert!(!v.passed, "{v:?}");
    assert_eq!(v.counts["outside_faults"], 1);
}

#[test]
fn an_overlap_during_a_partition_or_just_after_its_heal_is_excused() {
    for (from, to) in [(0, 900), (600, 700), (10_000, 13_000)] {
        let mut h = snapshot(
            Vec::new(),
            vec![act("n0", from, Some(to + 100)), act("n1", from + 50, None)],
        );
        h.faults.push(fault("partition", 500, 9_000));
        let v = single_activation(&h);
        assert!(v.passed, "{from}..{to}: {v:?}");
        assert_eq!(v.counts["overlaps"], 1);
    }
}

#[test]
fn with_the_quorum_rule_a_partition_excuses_nothing_but_a_pause_still_does() {
    let mut h = snapshot(
        Vec::new(),
        vec![act("n0", 600, Some(800)), act("n1", 650, None)],
    );
    h.quorum = true;
    h.faults.push(fault("partition", 500, 9_000));
    let v = single_activation(&h);
    assert!(!v.passed, "{v:?}");
    assert_eq!(v.counts["outside_faults"], 1);
    h.faults[0] = fault("one-way-partition", 500, 9_000);
    assert!(!single_activation(&h).passed);
    h.faults[0] = fault("pause", 500, 9_000);
    assert!(single_activation(&h).passed);
}

#[test]
fn a_skipped_partition_excuses_nothing() {
    let mut h = snapshot(
        Vec::new(),
        vec![act("n0", 0, Some(900)), act("n1", 500, None)],
    );
    let mut f = fault("partition", 400, 2000);
    f.skipped = Some("no namespaces".into());
    h.faults.push(f);
    assert!(!single_activation(&h).passed);
}

/// A failed increment stuck in a queue applies after later increments were answered: one
/// jump, explained by the indeterminate op; a second jump is not.
#[test]
fn a_failed_increment_may_apply_late_but_only_once() {
    let mut failed = incr(10, 15, 0);
    failed.outcome = Outcome::Err {
        class: "timeout".into(),
        maybe_ran: true,
        detail: "deadline".into(),
    };
    let h = snapshot(
        vec![incr(0, 5, 1), failed, incr(20, 25, 2), incr(30, 35, 4)],
        vec![act("n0", 0, None)],
    );
    let v = counters_of(&h);
    assert!(v.passed, "{v:?}");
    assert_eq!(v.counts["late_applications"], 1);
    let mut ops = h.ops.clone();
    ops.push(incr(40, 45, 6));
    let v = counters_of(&snapshot(ops, vec![act("n0", 0, None)]));
    assert!(!v.passed, "{v:?}");
    assert_eq!(v.counts["extra_applications"], 1);
}
