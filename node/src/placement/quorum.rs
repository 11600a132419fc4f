//! The quorum rule (keep-majority): a node hosts virtual actors only while it can reach a
//! majority of the cluster it last knew, so that the two sides of a partition never both
//! serve one id.
//!
//! SWIM cannot tell a crashed member from one on the far side of a partition: after a cut,
//! each side declares the other down, settles, and would activate the other side's ids.
//! Under this rule only the side holding a majority of the **base** (the members this node
//! last counted as the cluster) keeps serving; the other side is *fenced*: it passivates
//! every activation at once and refuses new ones with a typed error until a majority is
//! reachable again. This is Akka's split-brain resolver strategy `keep-majority`:
//! - **reachable** = this node and every member it sees `Up` (a `Suspect` member is not
//!   reachable: the minority fences as soon as it *suspects* the others, which is well
//!   before the majority has declared it down and waited out its settle time);
//! - quorum when the reachable members are more than half of the base; on an exact half,
//!   the half holding the base's lowest name keeps it (so one of two halves always does);
//!   the node fences once it has lacked quorum for [`FENCE_AFTER`] (a false suspicion is
//!   normally refuted sooner);
//! - the base grows at once with every member seen live (joins), and loses members that
//!   left gracefully (they said so themselves); it drops members declared down only once
//!   this node has had quorum with an unchanged member set for `stable_after`. That delay
//!   is what makes a partition look like a partition: a node probes one member per period,
//!   so on the minority side the others turn suspect one after another; dropping the first
//!   as soon as it is down would make the survivors a "majority" of a smaller base;
//! - a graceful leave is not a failure: the leaver hands its ids over before it goes.
//!
//! Not covered, both membership changes *during* a partition (the routing simulation finds
//! such runs: 17 doubles against 243 without the rule over 30 fault-heavy seeds):
//! - a process that starts during a partition knows no base but what it sees: started on
//!   the minority side next to other members, it counts only them and itself, and serves
//!   the ids it owns in its view while the members beside it stay fenced;
//! - a member joining the minority grows that side's base and its reach together, which
//!   can make it a majority of a larger base than the other side counts.
//!
//! A third, with several membership changes in a row (crashes, restarts and cuts
//! overlapping): each node's base follows its own view of the membership, so two nodes may
//! have dropped or kept a member differently when a cut comes, and with different bases
//! both sides can count a majority (the chaos harness's 10-minute random mix shows such
//! overlaps). The guarantee is for a cut of a cluster whose membership has been stable for
//! `stable_after`.
//!
//! Sharing the base between members (a process asking its peers before it serves; a fenced
//! node adopting a serving peer's base) would close the first two; equal bases in general
//! need agreement (a consensus round, or leases). Neither is built.
//!
//! The cost is Akka's: when a majority of the base crashes at once, the survivors stay
//! fenced until enough of them return (a restarted node rejoins under its name); in a
//! cluster of two, the survivor keeps serving only if it has the lower name. `--quorum=off`
//! keeps every side available instead (and both sides of a partition may then host one id
//! until the heal).
//!
//! IO-free: [`QuorumState`] takes the time as input; `node/watch.rs` feeds it every
//! membership view and acts on the changes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long past the settle time the member set must stay unchanged, under quorum, before
/// the base drops members declared down. A node probes one member per probe period
/// (500 ms) and declares a suspect down 1 s later, so on the minority side of a cut the
/// others turn suspect up to a few periods apart; this margin outlasts that stagger.
pub const DOWN_MARGIN: Duration = Duration::from_secs(4);

/// How long a majority must stay out of reach before the node fences itself. A false
/// suspicion (a late ack on a loaded machine) is normally refuted within a gossip round
/// or two; fencing on it would passivate every activation for nothing. The hold is well
/// under the 1 s from suspect to down, which the other side must wait out, plus its settle
/// time, before it activates anything this node holds.
pub const FENCE_AFTER: Duration = Duration::from_millis(500);

/// The `stable_after` of a node whose settle time is `settle`.
pub fn stable_after(settle: Duration) -> Duration {
    settle + DOWN_MARGIN
}

/// Whether a node must see a majority of its cluster to host virtual actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumPolicy {
    /// Keep-majority: a node that cannot reach more than half of its last known cluster (or
    /// exactly half, without the lowest name) serves no virtual actors until it can.
    #[default]
    Majority,
    /// Every node serves whatever it sees: available on both sides of a partition, which
    /// may then both host the same id until the heal.
    Off,
}

/// How one view of the membership changed the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumChange {
    /// Nothing changed.
    Same,
    /// Quorum lost: passivate everything and refuse activations.
    Lost,
    /// Quorum regained.
    Regained,
}

/// What this node sees of the membership, by member name.
#[derive(Debug, Clone, Default)]
pub struct Sighting {
    /// Members seen `Up` (this node need not be listed: it always reaches itself).
    pub up: Vec<String>,
    /// Members seen `Suspect`: still live (in the ring), not reachable.
    pub suspect: Vec<String>,
    /// Members that left gracefully (and are not live again under a new incarnation).
    pub left: Vec<String>,
}

/// The quorum of one node.
///
/// # Examples
/// A node cut off with one other from the three the cluster had: fenced once the hold
/// ends, and serving again when it reaches a majority.
/// ```
/// use std::time::Duration;
/// use cortex_node::placement::quorum::{
///     FENCE_AFTER, QuorumChange, QuorumPolicy, QuorumState, Sighting,
/// };
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let up = |names: &[&str]| Sighting {
///     up: names.iter().map(|n| n.to_string()).collect(),
///     ..Sighting::default()
/// };
/// let mut q = QuorumState::new("n3", QuorumPolicy::Majority, Duration::from_secs(6), t0);
/// q.observe(&up(&["n0", "n1", "n2", "n4"]), t0);
/// // n0, n1 and n2 turn suspect: n3 reaches 2 of 5.
/// let cut = Sighting {
///     up: vec!["n4".into()],
///     suspect: vec!["n0".into(), "n1".into(), "n2".into()],
///     ..Sighting::default()
/// };
/// assert_eq!(q.observe(&cut, t0), QuorumChange::Same);
/// assert_eq!(q.next_deadline(), Some(t0 + FENCE_AFTER));
/// assert_eq!(q.tick(t0 + FENCE_AFTER), QuorumChange::Lost);
/// assert!(!q.has_quorum());
/// // The heal.
/// let later = t0 + Duration::from_secs(30);
/// assert_eq!(q.observe(&up(&["n0", "n1", "n2", "n4"]), later), QuorumChange::Regained);
/// ```
#[derive(Debug, Clone)]
pub struct QuorumState {
    me: String,
    policy: QuorumPolicy,
    stable_after: Duration,
    /// The members this node counts as the cluster.
    base: BTreeSet<String>,
    reachable: BTreeSet<String>,
    live: BTreeSet<String>,
    /// When `reachable` or `live` last changed.
    changed_at: Instant,
    /// Since when a majority of the base has been out of reach, while it is.
    short_since: Option<Instant>,
    fence_after: Duration,
    has: bool,
}

/// A snapshot for the admin endpoint and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumStatus {
    /// The policy in force.
    pub policy: QuorumPolicy,
    /// True while this node may host virtual actors.
    pub has_quorum: bool,
    /// Members reachable from here (this node included), by name.
    pub reachable: Vec<String>,
    /// The members counted as the cluster, by name.
    pub base: Vec<String>,
}

impl QuorumState {
    /// A node named `me`, alone (so with quorum), at `now`.
    pub fn new(me: &str, policy: QuorumPolicy, stable_after: Duration, now: Instant) -> Self {
        let one: BTreeSet<String> = [me.to_owned()].into();
        Self {
            me: me.to_owned(),
            policy,
            stable_after,
            base: one.clone(),
            reachable: one.clone(),
            live: one,
            changed_at: now,
            short_since: None,
            fence_after: FENCE_AFTER,
            has: true,
        }
    }

    /// The same state with another hold before fencing (tests of the rule without it).
    pub fn with_fence_after(mut self, hold: Duration) -> Self {
        self.fence_after = hold;
        self
    }

    /// True while this node may host virtual actors.
    pub fn has_quorum(&self) -> bool {
        self.has
    }

    /// The current state, for display.
    pub fn status(&self) -> QuorumStatus {
        QuorumStatus {
            policy: self.policy,
            has_quorum: self.has,
            reachable: self.reachable.iter().cloned().collect(),
            base: self.base.iter().cloned().collect(),
        }
    }

    /// When [`Self::tick`] may next change something (the base dropping members declared
    /// down), if ever without a new sighting.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.has {
            return None;
        }
        // Still serving while a majority is out of reach: fence when the hold ends.
        if let Some(at) = self.short_since {
            return Some(at + self.fence_after);
        }
        (self.base != self.live).then_some(self.changed_at + self.stable_after)
    }

    /// Takes in a new view of the membership at `now`.
    pub fn observe(&mut self, seen: &Sighting, now: Instant) -> QuorumChange {
        let mut reachable: BTreeSet<String> = seen.up.iter().cloned().collect();
        reachable.insert(self.me.clone());
        let mut live = reachable.clone();
        live.extend(seen.suspect.iter().cloned());
        if reachable != self.reachable || live != self.live {
            self.changed_at = now;
        }
        for name in &seen.left {
            if !live.contains(name) {
                self.base.remove(name);
            }
        }
        // Joins count at once, on either side. Counting them only on a side that holds a
        // majority would keep a member joining the minority from making it a majority of a
        // larger base, but a node whose base is too small (one started during a partition)
        // would then stay fenced for good once a member of that base died: the routing
        // simulation finds such runs.
        self.base.extend(live.iter().cloned());
        self.reachable = reachable;
        self.live = live;
        self.tick(now)
    }

    /// Re-evaluates at `now`: fences once a majority has been out of reach for
    /// [`FENCE_AFTER`], and drops members declared down from the base once the member set
    /// has been stable for `stable_after` under quorum.
    pub fn tick(&mut self, now: Instant) -> QuorumChange {
        let ok = self.policy == QuorumPolicy::Off || majority(&self.reachable, &self.base);
        if ok {
            self.short_since = None;
        } else if self.short_since.is_none() {
            self.short_since = Some(now);
        }
        let has = ok
            || (self.has
                && self
                    .short_since
                    .is_some_and(|at| now < at + self.fence_after));
        if ok && self.base != self.live && now >= self.changed_at + self.stable_after {
            self.base = self.live.clone();
        }
        let change = match (self.has, has) {
            (true, false) => QuorumChange::Lost,
            (false, true) => QuorumChange::Regained,
            _ => QuorumChange::Same,
        };
        self.has = has;
        change
    }
}

/// More than half of `base` is in `reachable`, or exactly half including `base`'s lowest
/// name.
fn majority(reachable: &BTreeSet<String>, base: &BTreeSet<String>) -> bool {
    let n = base.iter().filter(|m| reachable.contains(*m)).count();
    match (2 * n).cmp(&base.len()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => base.first().is_some_and(|m| reachable.contains(m)),
        std::cmp::Ordering::Less => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const W: Duration = Duration::from_secs(4);

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn up(v: &[&str]) -> Sighting {
        Sighting {
            up: names(v),
            ..Sighting::default()
        }
    }

    /// `me` in a formed cluster of `all`, stable for long.
    fn formed(me: &str, all: &[&str], t0: Instant) -> QuorumState {
        let mut q = QuorumState::new(me, QuorumPolicy::Majority, W, t0);
        assert_eq!(q.observe(&up(all), t0), QuorumChange::Same);
        q
    }

    #[test]
    fn a_partition_fences_the_minority_only() {
        let t0 = Instant::now();
        let all = ["n0", "n1", "n2"];
        let mut minority = formed("n2", &all, t0);
        let mut majority = formed("n0", &all, t0);
        let t1 = t0 + Duration::from_secs(60);
        // n2 suspects one of the others: it still reaches two of three.
        let s = Sighting {
            up: names(&["n0"]),
            suspect: names(&["n1"]),
            ..Sighting::default()
        };
        assert_eq!(minority.observe(&s, t1), QuorumChange::Same);
        // Then the other: fenced once that lasts for the hold.
        let s = Sighting {
            suspect: names(&["n0", "n1"]),
            ..Sighting::default()
        };
        assert_eq!(minority.observe(&s, t1), QuorumChange::Same);
        assert_eq!(minority.next_deadline(), Some(t1 + FENCE_AFTER));
        assert_eq!(minority.tick(t1 + FENCE_AFTER), QuorumChange::Lost);
        assert!(!minority.has_quorum());
        assert_eq!(minority.next_deadline(), None);
        // The others declared down: still fenced, however long, and the base keeps them.
        assert_eq!(minority.observe(&up(&[]), t1), QuorumChange::Same);
        assert_eq!(minority.tick(t1 + W * 10), QuorumChange::Same);
        assert_eq!(minority.status().base, names(&all));
        // The majority keeps quorum throughout and drops n2 after the stable time.
        let s = Sighting {
            up: names(&["n1"]),
            suspect: names(&["n2"]),
            ..Sighting::default()
        };
        assert_eq!(majority.observe(&s, t1), QuorumChange::Same);
        assert_eq!(majority.observe(&up(&["n1"]), t1), QuorumChange::Same);
        assert_eq!(majority.next_deadline(), Some(t1 + W));
        majority.tick(t1 + W);
        assert_eq!(majority.status().base, names(&["n0", "n1"]));
        assert_eq!(majority.next_deadline(), None);
        // The heal: n2 sees both again and regains quorum.
        assert_eq!(
            minority.observe(&up(&["n0", "n1"]), t1 + W * 11),
            QuorumChange::Regained
        );
    }

    #[test]
    fn staggered_suspicion_does_not_shrink_the_minoritys_base() {
        let t0 = Instant::now();
        let mut q = formed("n0", &["n0", "n1", "n2"], t0);
        let t1 = t0 + Duration::from_secs(60);
        // n1 turns suspect and is declared down while n2 still looks up...
        let s = Sighting {
            up: names(&["n2"]),
            suspect: names(&["n1"]),
            ..Sighting::default()
        };
        q.observe(&s, t1);
        q.observe(&up(&["n2"]), t1 + Duration::from_secs(1));
        // ...and n2 turns suspect before the stable time: 1 of 3, fenced. Had the base
        // dropped n1 at once, n0 would hold an exact half with the lowest name.
        let s = Sighting {
            suspect: names(&["n2"]),
            ..Sighting::default()
        };
        let t2 = t1 + Duration::from_secs(2);
        q.observe(&s, t2);
        assert_eq!(q.tick(t2 + FENCE_AFTER), QuorumChange::Lost);
    }

    #[test]
    fn a_suspicion_refuted_within_the_hold_fences_nothing() {
        let t0 = Instant::now();
        let mut q = formed("n2", &["n0", "n1", "n2"], t0);
        let t1 = t0 + Duration::from_secs(60);
        let s = Sighting {
            suspect: names(&["n0", "n1"]),
            ..Sighting::default()
        };
        assert_eq!(q.observe(&s, t1), QuorumChange::Same);
        let back = t1 + FENCE_AFTER - Duration::from_millis(1);
        assert_eq!(q.observe(&up(&["n0", "n1"]), back), QuorumChange::Same);
        assert_eq!(q.tick(t1 + FENCE_AFTER * 4), QuorumChange::Same);
        assert!(q.has_quorum());
        // Without a hold, the same suspicion fences.
        let mut eager = formed("n2", &["n0", "n1", "n2"], t0).with_fence_after(Duration::ZERO);
        assert_eq!(eager.observe(&s, t1), QuorumChange::Lost);
    }

    #[test]
    fn sequential_crashes_keep_the_survivors_serving() {
        let t0 = Instant::now();
        let mut q = formed("n0", &["n0", "n1", "n2", "n3", "n4"], t0);
        let mut t = t0;
        for (i, gone) in ["n4", "n3", "n2"].iter().enumerate() {
            t += Duration::from_secs(60);
            let alive: Vec<&str> = ["n1", "n2", "n3", "n4"][..3 - i].to_vec();
            assert_eq!(q.observe(&up(&alive), t), QuorumChange::Same, "{gone}");
            q.tick(t + W);
        }
        // Two left of two: the exact half with the lowest name keeps serving.
        assert!(q.has_quorum());
        assert_eq!(q.status().base, names(&["n0", "n1"]));
        t += Duration::from_secs(60);
        assert_eq!(q.observe(&up(&[]), t), QuorumChange::Same);
        assert_eq!(q.tick(t + FENCE_AFTER), QuorumChange::Same);
        // The other of the two, alone, has the higher name: fenced.
        let mut other = formed("n1", &["n0", "n1"], t0);
        assert_eq!(other.observe(&up(&[]), t), QuorumChange::Same);
        assert_eq!(other.tick(t + FENCE_AFTER), QuorumChange::Lost);
    }

    #[test]
    fn a_graceful_leave_is_not_a_failure() {
        let t0 = Instant::now();
        let mut q = formed("n1", &["n0", "n1"], t0);
        let s = Sighting {
            left: names(&["n0"]),
            ..Sighting::default()
        };
        assert_eq!(q.observe(&s, t0), QuorumChange::Same);
        assert!(q.has_quorum());
        assert_eq!(q.status().base, names(&["n1"]));
        // A restart of a member that left: live again, counted again.
        let s = Sighting {
            up: names(&["n0"]),
            left: names(&["n0"]),
            ..Sighting::default()
        };
        q.observe(&s, t0);
        assert_eq!(q.status().base, names(&["n0", "n1"]));
    }

    #[test]
    fn off_never_fences() {
        let t0 = Instant::now();
        let mut q = QuorumState::new("n2", QuorumPolicy::Off, W, t0);
        q.observe(&up(&["n0", "n1"]), t0);
        assert_eq!(q.observe(&up(&[]), t0), QuorumChange::Same);
        assert!(q.has_quorum());
    }

    proptest! {
        /// Two disjoint sides of one base never both hold quorum, whatever their sizes
        /// and names.
        #[test]
        fn two_sides_of_a_split_never_both_have_quorum(
            n in 1usize..9,
            sides in proptest::collection::vec(any::<bool>(), 9),
            // Members reachable from neither side (crashed, or cut off from both).
            gone in proptest::collection::vec(any::<bool>(), 9),
        ) {
            let base: BTreeSet<String> = (0..n).map(|i| format!("n{i}")).collect();
            let side = |s: bool| -> BTreeSet<String> {
                (0..n)
                    .filter(|&i| sides[i] == s && !gone[i])
                    .map(|i| format!("n{i}"))
                    .collect()
            };
            let (a, b) = (side(true), side(false));
            prop_assert!(!(majority(&a, &base) && majority(&b, &base)));
        }
    }
}
