//! The routing decision, IO-free: given this node's ring view, the time, and whether the
//! id is live here (and, for a request another member routed, the ring digest it was routed
//! under), what to do with a request for an actor id. The node's async router and the
//! deterministic routing simulation both call [`decide_routed`], so the simulation checks
//! the code that runs.

use cortex_protocol::{ActorId, ErrorCode, NodeId};
use tokio::time::Instant;

use crate::placement::RingView;

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver here (activating if needed: the view is settled or the id is already live).
    Local,
    /// Send to the owner.
    Forward(NodeId),
    /// This node owns the id but its view is not settled: wait until `Instant`, then decide
    /// again (the view may have changed meanwhile).
    WaitUntil(Instant),
    /// Fail with a typed error.
    Fail(ErrorCode, &'static str),
}

/// Decides for a request to `id` that has been forwarded `hops` times.
///
/// Rules, in order: no members → `Unreachable`; another owner → forward, unless `hops`
/// reached `max_hops` (a loop between disagreeing views) → `HopLimit`; this node owns it and
/// the id is live here or the view is settled → `Local`; otherwise wait for the settle time.
pub fn decide(
    me: &NodeId,
    view: &RingView,
    id: &ActorId,
    live_here: bool,
    hops: u8,
    max_hops: u8,
    now: impl FnOnce() -> Instant,
) -> Decision {
    let Some(owner) = view.owner(id) else {
        return Decision::Fail(ErrorCode::Unreachable, "no live members");
    };
    // By name: membership may renew this node's incarnation (after a false suspicion), and
    // the ring keeps one incarnation per name.
    if owner.name() != me.name() {
        if hops >= max_hops {
            return Decision::Fail(
                ErrorCode::HopLimit,
                "forwarded too many times without reaching the owner: the cluster views disagree",
            );
        }
        return Decision::Forward(owner.clone());
    }
    settled_or_wait(view, live_here, now)
}

/// [`decide`] for a request another member routed here (`epoch` is the digest of the ring
/// it chose this node on; 0 when unknown, and always 0 for requests from clients, whose
/// routes may pick any node). When `epoch` is this view's digest, the sender computed the
/// owner on an identical ring (same members, incarnations and vnode count: see
/// [`Ring::digest`](cortex_protocol::Ring::digest)) and that owner is this node, so
/// the lookup is skipped; only the settle rule remains. On any other digest, [`decide`].
#[allow(clippy::too_many_arguments)]
pub fn decide_routed(
    me: &NodeId,
    view: &RingView,
    id: &ActorId,
    epoch: u64,
    live_here: bool,
    hops: u8,
    max_hops: u8,
    now: impl FnOnce() -> Instant,
) -> Decision {
    if epoch != 0 && epoch == view.digest {
        return settled_or_wait(view, live_here, now);
    }
    decide(me, view, id, live_here, hops, max_hops, now)
}

/// This node owns the id: `Local` when it is live here or the view is settled, else wait.
fn settled_or_wait(view: &RingView, live_here: bool, now: impl FnOnce() -> Instant) -> Decision {
    // The clock is read only for an id this node owns, and only until the view is settled.
    if live_here || view.settled_by(now) {
        Decision::Local
    } else {
        Decision::WaitUntil(view.settled_at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::placement::PlacementState;

    /// Members `a` and `b` (64 vnodes, 1 s settle) updated at `t0`, and that view.
    fn two_members() -> (NodeId, NodeId, Instant, std::sync::Arc<RingView>) {
        let a = NodeId::new("a", 1).unwrap();
        let b = NodeId::new("b", 1).unwrap();
        let t0 = Instant::now();
        let mut s = PlacementState::new(a.clone(), 64, Duration::from_secs(1), t0);
        s.update(vec![a.clone(), b.clone()], t0);
        let view = s.current().clone();
        (a, b, t0, view)
    }

    #[test]
    fn rules() {
        let (a, b, t0, view) = two_members();
        let ids: Vec<ActorId> = (0..100)
            .map(|i| ActorId::new("k", i.to_string()).unwrap())
            .collect();
        let mine = ids.iter().find(|i| view.owner(i) == Some(&a)).unwrap();
        let theirs = ids.iter().find(|i| view.owner(i) == Some(&b)).unwrap();
        assert_eq!(
            decide(&a, &view, theirs, false, 0, 4, || t0),
            Decision::Forward(b.clone())
        );
        assert!(matches!(
            decide(&a, &view, theirs, false, 4, 4, || t0),
            Decision::Fail(ErrorCode::HopLimit, _)
        ));
        assert_eq!(
            decide(&a, &view, mine, false, 0, 4, || t0),
            Decision::WaitUntil(view.settled_at)
        );
        assert_eq!(decide(&a, &view, mine, true, 0, 4, || t0), Decision::Local);
        assert_eq!(
            decide(&a, &view, mine, false, 0, 4, || view.settled_at),
            Decision::Local
        );
        // The clock is not read for a forward, nor once the view was seen settled.
        let no_clock = || -> Instant { panic!("the clock was read") };
        assert_eq!(
            decide(&a, &view, theirs, false, 0, 4, no_clock),
            Decision::Forward(b.clone())
        );
        assert_eq!(
            decide(&a, &view, mine, false, 0, 4, no_clock),
            Decision::Local
        );
    }

    #[test]
    fn routed_under_the_same_ring_skips_the_lookup_only() {
        let (a, b, t0, view) = two_members();
        let theirs = (0..100)
            .map(|i| ActorId::new("k", i.to_string()).unwrap())
            .find(|i| view.owner(i) == Some(&b))
            .unwrap();
        let same = view.digest;
        // Another member chose `a` on this very ring: it is `a`'s, settle rule included.
        assert_eq!(
            decide_routed(&a, &view, &theirs, same, false, 0, 4, || t0),
            Decision::WaitUntil(view.settled_at)
        );
        assert_eq!(
            decide_routed(&a, &view, &theirs, same, false, 0, 4, || view.settled_at),
            Decision::Local
        );
        // Another ring, or none (a client): the full decision.
        for other in [0, same ^ 1] {
            assert_eq!(
                decide_routed(&a, &view, &theirs, other, false, 0, 4, || t0),
                Decision::Forward(b.clone())
            );
        }
        // The same members with another vnode count make another digest.
        let mut s2 = PlacementState::new(a.clone(), 65, Duration::from_secs(1), t0);
        s2.update(vec![a.clone(), b.clone()], t0);
        assert_ne!(s2.current().digest, same);
    }
}
