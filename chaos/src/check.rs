//! History checkers. Each returns a [`Verdict`]: passed or not, a one-line summary, counts
//! and the first offending examples.
//!
//! Actor state is in memory, so a node's death or an ownership move resets an actor: the
//! register and counter checkers tell those losses ("lost due to crash or ownership move,
//! expected without persistence") from real violations by looking for an activation change
//! of that id, or a fault, between the acknowledged write and the read that misses it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{ActivationRec, Op, Outcome, Snapshot};

/// Most examples kept per verdict.
const EXAMPLES: usize = 8;
/// Slack on an ask's deadline (scheduling, the reply's last hop).
const DEADLINE_SLACK_US: u64 = 500_000;

/// One checker's result.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Checker name.
    pub name: String,
    /// No violation.
    pub passed: bool,
    /// False for advisory checkers whose failure is reported but does not fail the run.
    pub gating: bool,
    /// One line.
    pub summary: String,
    /// Named counts.
    pub counts: BTreeMap<String, u64>,
    /// First offending cases.
    pub examples: Vec<String>,
}

impl Verdict {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            passed: true,
            gating: true,
            summary: String::new(),
            counts: BTreeMap::new(),
            examples: Vec::new(),
        }
    }
    fn add(&mut self, k: &str, n: u64) {
        *self.counts.entry(k.into()).or_default() += n;
    }
    fn fail(&mut self, k: &str, example: String) {
        self.passed = false;
        self.add(k, 1);
        if self.examples.len() < EXAMPLES {
            self.examples.push(example);
        }
    }
    fn count(&self, k: &str) -> u64 {
        self.counts.get(k).copied().unwrap_or(0)
    }
}

/// Runs every checker.
pub fn all(h: &Snapshot, converge_within_us: u64) -> Vec<Verdict> {
    let ctx = Ctx::new(h);
    let conv = convergence(h, converge_within_us);
    let rec = recovery(h, &conv);
    vec![
        deadlines(h),
        registers(h, &ctx),
        counters(h, &ctx),
        single_activation(h),
        conv,
        pubsub(h),
        rec,
    ]
}

/// Advisory: asks sent 2 s or more after membership converged should succeed again.
pub fn recovery(h: &Snapshot, conv: &Verdict) -> Verdict {
    let mut v = Verdict::new("recovery");
    v.gating = false;
    let Some(ms) = conv.counts.get("converged_after_ms") else {
        v.summary = "not checked: membership did not converge".into();
        return v;
    };
    let from = h.last_heal_us + ms * 1000 + 2_000_000;
    for o in h.ops.iter().filter(|o| o.invoke_us >= from) {
        v.add("ops", 1);
        if let Outcome::Err { detail, .. } = &o.outcome {
            v.fail("failed", format!("{} {}: {detail}", o.op, o.id));
        }
    }
    v.summary = format!(
        "{} of {} asks sent 2 s after convergence failed (advisory)",
        v.count("failed"),
        v.count("ops")
    );
    v
}

/// Activation and fault lookups shared by the checkers.
struct Ctx<'a> {
    by_id: HashMap<&'a str, Vec<&'a ActivationRec>>,
    h: &'a Snapshot,
}

impl<'a> Ctx<'a> {
    fn new(h: &'a Snapshot) -> Self {
        let mut by_id: HashMap<&str, Vec<&ActivationRec>> = HashMap::new();
        for a in &h.activations {
            by_id.entry(a.id.as_str()).or_default().push(a);
        }
        Self { by_id, h }
    }

    /// True when `id` changed activation in `(t1, t2]`, or had activations on two nodes
    /// live at once in it (a split brain): the only ways answers can jump ahead without a
    /// double application.
    fn moved_or_split(&self, id: &str, t1: u64, t2: u64) -> bool {
        let Some(rs) = self.by_id.get(id) else {
            return false;
        };
        let live: Vec<_> = rs
            .iter()
            .filter(|r| r.activated_us <= t2 && r.passivated_us.is_none_or(|p| p >= t1))
            .collect();
        live.len() > 1
            || live
                .iter()
                .any(|r| r.activated_us > t1 || r.passivated_us.is_some_and(|p| p < t2))
    }

    /// Why the state of `id` may have been reset between `t1` and `t2`, if it may have.
    fn reset_cause(&self, id: &str, t1: u64, t2: u64) -> Option<&'static str> {
        let changed = self.by_id.get(id).is_some_and(|rs| {
            rs.iter().any(|r| {
                (r.activated_us > t1 && r.activated_us <= t2)
                    || r.passivated_us.is_some_and(|p| p >= t1 && p < t2)
            })
        });
        if changed {
            return Some("activation moved or ended");
        }
        // A fault whose effects overlap the window (a node death between polls of its log).
        let hit = self
            .h
            .faults
            .iter()
            .any(|f| f.skipped.is_none() && f.start_us <= t2 && f.end_us + 5_000_000 >= t1);
        hit.then_some("a fault was active")
    }
}

/// Every ask answered or failed by its deadline.
pub fn deadlines(h: &Snapshot) -> Verdict {
    let mut v = Verdict::new("deadlines");
    for o in &h.ops {
        v.add("ops", 1);
        if o.complete_us > o.deadline_us + DEADLINE_SLACK_US {
            v.fail(
                "late",
                format!(
                    "{} {} took {} ms, deadline {} ms",
                    o.op,
                    o.id,
                    (o.complete_us - o.invoke_us) / 1000,
                    (o.deadline_us - o.invoke_us) / 1000
                ),
            );
        }
    }
    v.summary = format!(
        "{} of {} ops ended after their deadline (+{} ms slack)",
        v.count("late"),
        v.count("ops"),
        DEADLINE_SLACK_US / 1000
    );
    v
}

fn written_value(o: &Op) -> Option<String> {
    match o.op.as_str() {
        "write" => o.arg.as_ref()?.as_str().map(str::to_owned),
        "cas" => o.arg.as_ref()?.get("new")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Acknowledged: a write answered, or a CAS answered `true`.
fn acked_write(o: &Op) -> bool {
    match (&o.outcome, o.op.as_str()) {
        (Outcome::Ok { .. }, "write") => true,
        (Outcome::Ok { value }, "cas") => value.as_bool() == Some(true),
        _ => false,
    }
}

/// No acknowledged register write lost or overwritten by an older one; no read of a value
/// nobody wrote or of a write not yet sent.
fn registers(h: &Snapshot, ctx: &Ctx<'_>) -> Verdict {
    let mut v = Verdict::new("registers");
    let mut by_id: HashMap<&str, Vec<&Op>> = HashMap::new();
    for o in h.ops.iter().filter(|o| o.id.starts_with("register/")) {
        by_id.entry(o.id.as_str()).or_default().push(o);
    }
    for (id, ops) in by_id {
        let writes: HashMap<String, &Op> = ops
            .iter()
            .filter_map(|o| written_value(o).map(|w| (w, *o)))
            .collect();
        let mut acked: Vec<&Op> = ops.iter().copied().filter(|o| acked_write(o)).collect();
        acked.sort_by_key(|o| o.complete_us);
        v.add("acked_writes", acked.len() as u64);
        for r in ops.iter().filter(|o| o.op == "read") {
            let Outcome::Ok { value } = &r.outcome else {
                continue;
            };
            v.add("reads", 1);
            let got = value.as_str();
            let source = match got {
                Some(x) => match writes.get(x) {
                    None => {
                        v.fail("phantom", format!("{id}: read {x:?}, which nobody wrote"));
                        continue;
                    }
                    Some(w) if w.invoke_us > r.complete_us => {
                        v.fail(
                            "future",
                            format!("{id}: read {x:?} before its write was sent"),
                        );
                        continue;
                    }
                    Some(w) => Some(*w),
                },
                None => None,
            };
            // The last acknowledged write that finished before the read began.
            let idx = acked.partition_point(|w| w.complete_us < r.invoke_us);
            let Some(last) = idx.checked_sub(1).map(|i| acked[i]) else {
                continue;
            };
            let stale = match source {
                None => true,
                Some(s) => !std::ptr::eq(s, last) && s.complete_us < last.invoke_us,
            };
            if !stale {
                continue;
            }
            let what = format!(
                "{id}: read {:?} at +{} ms after write {:?} was acknowledged at +{} ms",
                got,
                r.invoke_us.saturating_sub(h.start_us) / 1000,
                written_value(last).unwrap_or_default(),
                last.complete_us.saturating_sub(h.start_us) / 1000
            );
            // The write applied at some point after its invoke, maybe on an activation that
            // ended before the caller heard back.
            match ctx.reset_cause(id, last.invoke_us, r.complete_us) {
                Some(_) => v.add("lost_expected", 1),
                None => v.fail("lost", what),
            }
        }
    }
    v.summary = format!(
        "{} reads checked against {} acknowledged writes: {} lost (violations), {} lost due to crash or ownership move (expected without persistence), {} phantom, {} from the future",
        v.count("reads"),
        v.count("acked_writes"),
        v.count("lost"),
        v.count("lost_expected"),
        v.count("phantom"),
        v.count("future")
    );
    v
}

/// No increment applied twice: with one sequential writer per counter, each answered value
/// may exceed the previous one by at most 1 plus the failed increments that may still apply,
/// unless the counter's activation changed (state reset).
///
/// A failed increment is indeterminate (as in Jepsen's histories): one of its attempts may
/// sit in a queue or in the network and apply after the caller gave up, so it may explain one
/// jump at any later point, not only before the next answer; each explains at most one.
fn counters(h: &Snapshot, ctx: &Ctx<'_>) -> Verdict {
    let mut v = Verdict::new("counters");
    let mut by_id: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in h.ops.iter().filter(|o| o.id.starts_with("counter/")) {
        by_id.entry(o.id.as_str()).or_default().push(o);
    }
    for (id, mut ops) in by_id {
        ops.sort_by_key(|o| o.invoke_us);
        let (mut last, mut last_t, mut maybe) = (0u64, h.start_us, 0u64);
        for o in ops {
            let is_incr = o.op == "incr";
            match &o.outcome {
                Outcome::Err { maybe_ran, .. } if is_incr => {
                    v.add("failed_incr", 1);
                    if *maybe_ran {
                        maybe += 1;
                    }
                }
                Outcome::Err { .. } => v.add("failed_get", 1),
                Outcome::Ok { value } => {
                    let Some(val) = value.as_u64() else { continue };
                    if is_incr {
                        v.add("acked_incr", 1);
                    }
                    let step = u64::from(is_incr);
                    let cause = ctx.reset_cause(id, last_t, o.complete_us);
                    if val < last + step {
                        // Went back: the state was reset.
                        match cause {
                            Some(_) => {
                                v.add("resets_expected", 1);
                                v.add("incr_lost_expected", last.saturating_sub(val.saturating_sub(step)));
                            }
                            None => v.fail(
                                "unexplained_reset",
                                format!("{id}: {} answered {val} after {last}, no activation change or fault", o.op),
                            ),
                        }
                    } else if val > last + step {
                        let jump = val - last - step;
                        // Failed increments that applied late explain what they can.
                        let late = jump.min(maybe);
                        let extra = jump - late;
                        if ctx.moved_or_split(id, last_t, o.complete_us) {
                            v.add("jumps_after_move", 1);
                        } else {
                            maybe -= late;
                            v.add("late_applications", late);
                            if extra > 0 {
                                v.fail(
                                    "applied_twice",
                                    format!(
                                        "{id}: {} answered {val} after {last} with {late} failed increments that may have applied late: {extra} extra application(s) at +{} ms",
                                        o.op,
                                        o.complete_us.saturating_sub(h.start_us) / 1000
                                    ),
                                );
                                v.add("extra_applications", extra);
                            }
                        }
                    }
                    last = val;
                    // The answer was produced somewhere between invoke and complete, perhaps
                    // by an activation that ended before the caller got it: the next window
                    // starts at the invoke, so that activation still counts as live in it.
                    last_t = o.invoke_us;
                }
            }
        }
    }
    v.summary = format!(
        "{} acknowledged increments, {} failed (may have applied, {} of them seen applying late): {} applied twice (violations), {} unexplained resets, {} resets due to crash or ownership move losing {} increments (expected without persistence)",
        v.count("acked_incr"),
        v.count("failed_incr"),
        v.count("late_applications"),
        v.count("applied_twice"),
        v.count("unexplained_reset"),
        v.count("resets_expected"),
        v.count("incr_lost_expected")
    );
    v
}

/// One poll round's views: node -> live members (`None`: no answer).
type Views<'a> = HashMap<&'a str, Option<&'a Vec<String>>>;

/// Views by round, with the round's time.
fn rounds(h: &Snapshot) -> Vec<(u64, Views<'_>)> {
    let mut by: BTreeMap<u64, (u64, Views<'_>)> = BTreeMap::new();
    for s in &h.members {
        let e = by.entry(s.round).or_insert((s.t_us, HashMap::new()));
        e.0 = e.0.min(s.t_us);
        e.1.insert(s.node.as_str(), s.view.as_ref());
    }
    by.into_values().collect()
}

/// Faults that can make a running node look dead to the others (a false death). While one
/// is active, and for [`FALSE_DEATH_GRACE_US`] after it heals, each side may believe the
/// other gone and activate the same id. Outside them (joins, graceful leaves, crashes) the
/// settle time and the handover must keep every id on one node, even while views briefly
/// differ.
const FALSE_DEATH: &[&str] = &["pause", "partition", "one-way-partition", "loss", "delay"];
/// Of those, the ones the quorum rule covers: both sides of a cut see the other turn
/// suspect, and the minority passivates everything before the majority's settle time ends.
/// A paused process cannot act until it runs again, and loss or delay may let a node keep
/// seeing the others while they declare it down, so those stay excused with the rule on.
const QUORUM_COVERS: &[&str] = &["partition", "one-way-partition"];
/// After a false death heals: membership converges and the twin activations hand over.
const FALSE_DEATH_GRACE_US: u64 = 5_000_000;

/// No id live on two nodes at once while those two nodes agreed on the membership (same
/// live set, both in it) for two polls in a row inside the overlap; and no overlap at all
/// away from faults that can make a running node look dead (pause, partition, loss, delay)
/// and the 5 s after each heals.
pub fn single_activation(h: &Snapshot) -> Verdict {
    let mut v = Verdict::new("single-activation");
    let rounds = rounds(h);
    let end = h.end_us.max(1);
    let mut by_id: HashMap<&str, Vec<&ActivationRec>> = HashMap::new();
    for a in &h.activations {
        by_id.entry(a.id.as_str()).or_default().push(a);
    }
    v.add("activations", h.activations.len() as u64);
    for (id, mut rs) in by_id {
        rs.sort_by_key(|r| r.activated_us);
        for (i, a) in rs.iter().enumerate() {
            let a_end = a.passivated_us.unwrap_or(end);
            for b in &rs[i + 1..] {
                if b.activated_us >= a_end {
                    break;
                }
                if (a.node.as_str(), a.incarnation) == (b.node.as_str(), b.incarnation) {
                    continue;
                }
                v.add("overlaps", 1);
                let (s, e) = (b.activated_us, a_end.min(b.passivated_us.unwrap_or(end)));
                let ka = format!("{}#{}", a.node, a.incarnation);
                let kb = format!("{}#{}", b.node, b.incarnation);
                // By name: membership renews a node's incarnation after a false suspicion
                // while its activation log keeps the incarnation it started with.
                let has = |view: &[String], name: &str| {
                    view.iter()
                        .any(|m| m.split_once('#').map(|(n, _)| n) == Some(name))
                };
                let agreed = |views: &Views<'_>| -> bool {
                    match (views.get(a.node.as_str()), views.get(b.node.as_str())) {
                        (Some(Some(va)), Some(Some(vb))) => {
                            va == vb && has(va, &a.node) && has(va, &b.node)
                        }
                        _ => false,
                    }
                };
                let inside: Vec<_> = rounds.iter().filter(|(t, _)| *t >= s && *t <= e).collect();
                let bad = inside
                    .windows(2)
                    .any(|w| agreed(&w[0].1) && agreed(&w[1].1));
                let excused = h.faults.iter().any(|f| {
                    f.skipped.is_none()
                        && FALSE_DEATH.contains(&f.kind.as_str())
                        && !(h.quorum && QUORUM_COVERS.contains(&f.kind.as_str()))
                        && f.start_us <= e
                        && f.end_us + FALSE_DEATH_GRACE_US >= s
                });
                if !bad && !excused {
                    v.fail(
                        "outside_faults",
                        format!(
                            "{id} live on {ka} (from +{} ms) and {kb} (from +{} ms) for {} ms with no fault that could fake a death: joins, leaves and crashes must hand over",
                            a.activated_us.saturating_sub(h.start_us) / 1000,
                            b.activated_us.saturating_sub(h.start_us) / 1000,
                            (e - s) / 1000
                        ),
                    );
                }
                if bad {
                    v.fail(
                        "violations",
                        format!(
                            "{id} live on {ka} (from +{} ms) and {kb} (from +{} ms) for {} ms while both saw the same membership",
                            a.activated_us.saturating_sub(h.start_us) / 1000,
                            b.activated_us.saturating_sub(h.start_us) / 1000,
                            (e - s) / 1000
                        ),
                    );
                }
            }
        }
    }
    v.summary = format!(
        "{} activations, {} overlaps on different nodes: {} while membership agreed, {} outside faults that can fake a death (violations)",
        v.count("activations"),
        v.count("overlaps"),
        v.count("violations"),
        v.count("outside_faults")
    );
    v
}

/// After the last fault healed, every running node sees the same full membership within
/// the bound.
pub fn convergence(h: &Snapshot, within_us: u64) -> Verdict {
    let mut v = Verdict::new("convergence");
    let rounds = rounds(h);
    let converged = rounds.iter().find(|(t, views)| {
        if *t < h.last_heal_us {
            return false;
        }
        let answered: Vec<&Vec<String>> = views.values().filter_map(|x| *x).collect();
        answered.len() == h.expected_members
            && answered.windows(2).all(|w| w[0] == w[1])
            && answered
                .first()
                .is_some_and(|x| x.len() == h.expected_members)
    });
    match converged {
        Some((t, _)) => {
            let took = t.saturating_sub(h.last_heal_us);
            v.add("converged_after_ms", took / 1000);
            if took > within_us {
                v.fail(
                    "slow",
                    format!("took {} ms, bound {} ms", took / 1000, within_us / 1000),
                );
            }
            v.summary = format!(
                "{} nodes agreed {} ms after the last fault healed (bound {} ms)",
                h.expected_members,
                took / 1000,
                within_us / 1000
            );
        }
        None => {
            v.fail(
                "not_converged",
                "no poll after the last heal saw agreement".into(),
            );
            v.summary = format!(
                "membership did not converge to {} nodes within {} ms of the last heal",
                h.expected_members,
                within_us / 1000
            );
        }
    }
    v
}

/// Pub-sub: no duplicate and no phantom delivery; delivery ratio reported.
pub fn pubsub(h: &Snapshot) -> Verdict {
    let mut v = Verdict::new("pubsub");
    let mut published: HashMap<(&str, u64), bool> = HashMap::new();
    for p in h.pubsub.iter().filter(|p| p.what == "publish") {
        published.insert((p.topic.as_str(), p.seq), p.ok);
        v.add(if p.ok { "published" } else { "publish_failed" }, 1);
    }
    let mut seen: HashMap<(&str, u64, u32), u32> = HashMap::new();
    let subscribers: std::collections::HashSet<u32> =
        h.pubsub.iter().filter_map(|p| p.subscriber).collect();
    for d in h.pubsub.iter().filter(|p| p.what == "deliver") {
        let s = d.subscriber.unwrap_or(0);
        let n = seen.entry((d.topic.as_str(), d.seq, s)).or_default();
        *n += 1;
        if *n == 2 {
            v.fail(
                "duplicates",
                format!("{} #{} delivered twice to subscriber {s}", d.topic, d.seq),
            );
        }
        if !published.contains_key(&(d.topic.as_str(), d.seq)) {
            v.fail(
                "phantom",
                format!("{} #{} delivered but never published", d.topic, d.seq),
            );
        }
        v.add("deliveries", 1);
    }
    let expected = v.count("published") * subscribers.len().max(1) as u64;
    let ratio = if expected == 0 {
        1.0
    } else {
        v.count("deliveries") as f64 / expected as f64
    };
    v.summary = format!(
        "{} published to {} subscribers, {:.1}% delivered (at most once: losses during faults are expected), {} duplicates, {} phantom",
        v.count("published"),
        subscribers.len(),
        ratio * 100.0,
        v.count("duplicates"),
        v.count("phantom")
    );
    v
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
