//! Placement: which live member owns each actor id, at which ring epoch, and whether this
//! node's view has been stable long enough to activate ids it has just gained.
//!
//! The ring function itself lives in [`cortex_protocol::Ring`] because clients must compute
//! exactly the same owners. This module adds what only a member needs:
//! - the **ring epoch**, a local counter that grows with every change of the live member set;
//! - the **view digest** ([`Ring::digest`]: name and incarnation of every live member, and
//!   the vnode count), put in the `epoch` field of every tell and ask this node routes: the
//!   digest of the view the owner was chosen on. A receiver with that very digest takes the
//!   choice (it is the owner) without looking the id up again; on any other digest it
//!   re-routes under its own view (`routing::decide::decide_routed`);
//! - the **settle time** (Akka's stable-after): ids this node gains are activated only once its
//!   view has been unchanged for that long, so two nodes with briefly different views do not
//!   both activate one id.
//!
//! The ring holds only members that passed QUIC admission (`node/watch.rs`). Handover runs
//! on two rings: activations whose id this node no longer owns on its ring are passivated
//! when the ring changes, and, as soon as gossip shows a live member still awaiting
//! admission, so are the activations that member owns on the full gossip ring (it may
//! already host them: a node back from a partition or a false death kept its activations).
//! Both changes unsettle the view, so nothing is activated here meanwhile; and while such a
//! member awaits admission (for at most 5 s) the activation gate refuses the ids it owns on
//! the full ring, so a slow admission cannot outlast the settle time into a twin.
//!
//! A node also needs a quorum to host anything ([`quorum`]): the side of a partition that
//! cannot reach a majority of its last known cluster serves no virtual actors.
//!
//! The core ([`PlacementState`]) takes `now` as input and does no I/O; [`Placement`] wraps it
//! for concurrent readers and lets callers wait for the view to settle.

pub mod quorum;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cortex_protocol::{ActorId, NodeId, Ring};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::time::Instant;

/// One immutable view of the ring.
#[derive(Debug)]
pub struct RingView {
    /// Local ring epoch; grows with every change of the live member set.
    pub epoch: u64,
    /// Hash of the live member set (see the module docs).
    pub digest: u64,
    /// The ring over the live members.
    pub ring: Ring,
    /// When this view was installed.
    pub since: Instant,
    /// When ids gained in this view may be activated.
    pub settled_at: Instant,
    /// Set once a check saw `settled_at` pass: a view never becomes unsettled (a change
    /// installs a new view), so later checks need no clock read (one per message otherwise).
    settled_seen: AtomicBool,
}

impl RingView {
    /// The owner of `id` in this view.
    pub fn owner(&self, id: &ActorId) -> Option<&NodeId> {
        self.ring.owner(id)
    }
    /// True once the view has been stable for the settle time (at `now`, which may be any
    /// time: this remembers nothing).
    pub fn is_settled(&self, now: Instant) -> bool {
        now >= self.settled_at
    }
    /// [`Self::is_settled`] at the present, reading the clock only while the view is not
    /// known settled. `now` must read a clock that never goes back: once it has passed
    /// `settled_at`, the answer is remembered.
    pub fn settled_by(&self, now: impl FnOnce() -> Instant) -> bool {
        if self.settled_seen.load(Ordering::Relaxed) {
            return true;
        }
        let settled = now() >= self.settled_at;
        if settled {
            self.settled_seen.store(true, Ordering::Relaxed);
        }
        settled
    }
}

/// The IO-free core: install member sets, read views.
#[derive(Debug)]
pub struct PlacementState {
    current: Arc<RingView>,
    vnodes: u32,
    settle: Duration,
}

impl PlacementState {
    /// A view holding only `local`, settled only after `settle` from `now`.
    pub fn new(local: NodeId, vnodes: u32, settle: Duration, now: Instant) -> Self {
        let members = vec![local];
        let mut current = RingView {
            epoch: 1,
            digest: 0,
            ring: Ring::new(members, vnodes),
            since: now,
            settled_at: now + settle,
            settled_seen: AtomicBool::new(false),
        };
        current.digest = current.ring.digest();
        let current = Arc::new(current);
        Self {
            current,
            vnodes,
            settle,
        }
    }

    /// Installs the live member set. Returns the new view when the set changed (and the
    /// epoch grew), `None` when it is the same set.
    pub fn update(&mut self, members: Vec<NodeId>, now: Instant) -> Option<Arc<RingView>> {
        let ring = Ring::new(members, self.vnodes);
        if ring.digest() == self.current.digest {
            return None;
        }
        let view = Arc::new(RingView {
            epoch: self.current.epoch + 1,
            digest: ring.digest(),
            ring,
            since: now,
            settled_at: now + self.settle,
            settled_seen: AtomicBool::new(false),
        });
        self.current = view.clone();
        Some(view)
    }

    /// Restarts the settle time of the current ring (a new epoch over the same members):
    /// used when the membership changed in a way the ring does not show yet (a member
    /// waiting for admission), so that this node does not act on a view the others may not
    /// share.
    pub fn unsettle(&mut self, now: Instant) -> Arc<RingView> {
        let ring = Ring::new(self.current.ring.members().to_vec(), self.vnodes);
        let view = Arc::new(RingView {
            epoch: self.current.epoch + 1,
            digest: ring.digest(),
            ring,
            since: now,
            settled_at: now + self.settle,
            settled_seen: AtomicBool::new(false),
        });
        self.current = view.clone();
        view
    }

    /// The current view.
    pub fn current(&self) -> &Arc<RingView> {
        &self.current
    }
}

/// Shared placement for the node's tasks.
#[derive(Debug)]
pub struct Placement {
    state: RwLock<PlacementState>,
    epoch_tx: watch::Sender<u64>,
    /// Bumped, under the write lock, whenever a new view is installed.
    version: AtomicU64,
    /// Tells this placement's views from another's (several nodes may share a process).
    uid: u64,
}

/// Placements made so far in this process (for [`Placement::uid`]).
static PLACEMENTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The view this thread last read through [`Placement::with_view`]: (placement uid,
    /// version, view). Routing reads the view once per message from every worker thread; an
    /// `RwLock` read plus an `Arc` clone and drop are four atomic writes to lines all those
    /// threads share, which bounced between cores on every message. Holds at most one view
    /// per thread, stale until that thread reads again.
    static LAST_VIEW: RefCell<Option<(u64, u64, Arc<RingView>)>> = const { RefCell::new(None) };
}

impl Placement {
    /// Starts with a view of `local` alone.
    pub fn new(local: NodeId, vnodes: u32, settle: Duration) -> Self {
        let state = PlacementState::new(local, vnodes, settle, Instant::now());
        let (epoch_tx, _) = watch::channel(state.current().epoch);
        Self {
            state: RwLock::new(state),
            epoch_tx,
            version: AtomicU64::new(0),
            uid: PLACEMENTS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The current view (an `Arc` clone; see [`Self::with_view`] for the hot paths).
    pub fn view(&self) -> Arc<RingView> {
        self.state.read().current().clone()
    }

    /// Calls `f` with the current view, without writing to any memory other threads read
    /// when this thread has read the same view before (the common case: views change with
    /// membership only). `f` sees the view installed last, or one installed concurrently
    /// with this call, exactly as [`Self::view`] would.
    pub fn with_view<R>(&self, f: impl FnOnce(&Arc<RingView>) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let done = LAST_VIEW.try_with(|last| {
            // Busy only if `f` reads the view again: the nested read takes the plain path.
            let mut last = last.try_borrow_mut().ok()?;
            let hit = matches!(&*last, Some((uid, v, _)) if *uid == self.uid && *v == version);
            if !hit {
                let st = self.state.read();
                // Bumped only under the write lock: consistent with `current`.
                let v = self.version.load(Ordering::Relaxed);
                *last = Some((self.uid, v, st.current().clone()));
            }
            let view = &last.as_ref()?.2;
            Some((f.take()?)(view))
        });
        if let Ok(Some(r)) = done {
            return r;
        }
        // Invariant: the closure above takes `f` only to return `Some` of its result.
        let f = f.expect("with_view: f is still here when the cached path did not run it");
        f(&self.view())
    }

    /// Installs a member set; see [`PlacementState::update`].
    pub fn update(&self, members: Vec<NodeId>) -> Option<Arc<RingView>> {
        let changed = {
            let mut st = self.state.write();
            let changed = st.update(members, Instant::now());
            if changed.is_some() {
                self.version.fetch_add(1, Ordering::Release);
            }
            changed
        };
        if let Some(v) = &changed {
            self.epoch_tx.send_replace(v.epoch);
        }
        changed
    }

    /// See [`PlacementState::unsettle`].
    pub fn unsettle(&self) -> Arc<RingView> {
        let v = {
            let mut st = self.state.write();
            let v = st.unsettle(Instant::now());
            self.version.fetch_add(1, Ordering::Release);
            v
        };
        self.epoch_tx.send_replace(v.epoch);
        v
    }

    /// Epoch changes, for tasks that react to them (handover, client topology pushes).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch_tx.subscribe()
    }

    /// Waits until the current view is settled, or `deadline`. Returns the settled view, or
    /// `None` at the deadline.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn wait_settled(&self, deadline: Instant) -> Option<Arc<RingView>> {
        let mut rx = self.epoch_tx.subscribe();
        loop {
            let view = self.view();
            let now = Instant::now();
            if view.is_settled(now) {
                return Some(view);
            }
            let wake = view.settled_at.min(deadline);
            if now >= deadline {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, inc: u64) -> NodeId {
        NodeId::new(name, inc).unwrap()
    }

    #[test]
    fn epoch_grows_only_on_change_and_digest_ignores_order() {
        let t0 = Instant::now();
        let mut s = PlacementState::new(n("a", 1), 16, Duration::from_secs(2), t0);
        assert_eq!(s.current().epoch, 1);
        let v = s.update(vec![n("a", 1), n("b", 1)], t0).unwrap();
        assert_eq!(v.epoch, 2);
        assert!(s.update(vec![n("b", 1), n("a", 1)], t0).is_none());
        // A restart is a different member set.
        assert_eq!(s.update(vec![n("a", 1), n("b", 2)], t0).unwrap().epoch, 3);
        assert_ne!(
            Ring::new(vec![n("a", 1), n("b", 1)], 4).digest(),
            Ring::new(vec![n("b", 2), n("a", 1)], 4).digest()
        );
        assert_eq!(
            Ring::new(vec![n("a", 1), n("b", 1)], 4).digest(),
            Ring::new(vec![n("b", 1), n("a", 1)], 4).digest()
        );
    }

    #[test]
    fn settle_time_counts_from_the_last_change() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(2);
        let mut s = PlacementState::new(n("a", 1), 16, settle, t0);
        assert!(!s.current().is_settled(t0));
        assert!(s.current().is_settled(t0 + settle));
        let t1 = t0 + Duration::from_secs(5);
        s.update(vec![n("a", 1), n("b", 1)], t1);
        assert!(!s.current().is_settled(t1 + Duration::from_secs(1)));
        assert!(s.current().is_settled(t1 + settle));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_settled_restarts_on_change() {
        let p = Placement::new(n("a", 1), 16, Duration::from_secs(2));
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.update(vec![n("a", 1), n("b", 1)]);
        let v = p
            .wait_settled(start + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(v.epoch, 2);
        assert!(Instant::now() >= start + Duration::from_secs(3));
        // A deadline before settling gives None.
        p.update(vec![n("a", 1)]);
        assert!(
            p.wait_settled(Instant::now() + Duration::from_millis(500))
                .await
                .is_none()
        );
    }

    #[test]
    fn with_view_sees_every_new_view_and_keeps_placements_apart() {
        let a = Placement::new(n("a", 1), 16, Duration::from_secs(1));
        let b = Placement::new(n("b", 1), 16, Duration::from_secs(1));
        assert_eq!(a.with_view(|v| v.epoch), 1);
        a.update(vec![n("a", 1), n("x", 1)]);
        // The thread's cached view of `a` is replaced, and `b`'s is not `a`'s.
        assert_eq!(a.with_view(|v| v.epoch), 2);
        assert_eq!(a.with_view(|v| v.digest), a.view().digest);
        assert_eq!(b.with_view(|v| v.ring.members().len()), 1);
        assert_eq!(a.with_view(|v| v.ring.members().len()), 2);
        a.unsettle();
        assert_eq!(a.with_view(|v| v.epoch), 3);
        // A nested read (the cache is busy) takes the plain path and agrees.
        assert!(a.with_view(|outer| a.with_view(|inner| inner.epoch) == outer.epoch));
    }
}
