//! Background tasks reacting to change: membership → ring view → handover and client
//! topology; activation events → the activation log and metrics.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use cortex_protocol::NodeId;
use std::sync::Arc;

use cortex_protocol::{
    ActorId, Ask, Envelope, MessageName, ReplyResult, RequestId, RequestMeta, Target,
    TopologySnapshot,
};
use cortex_runtime::{Codec, VirtualEvent, VirtualEventKind};
use cortex_transport::Connection;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;

use super::inner::NodeInner;
use crate::membership::MembershipEvent;
use crate::placement::quorum::{QuorumChange, Sighting};
use crate::routing::dedupe::MovedKey;
use crate::system::handover::{self, AdoptKeys};

/// Most membership events kept for the dashboard.
const MAX_EVENTS: usize = 200;

/// A membership event as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventJson {
    at: String,
    node: String,
    event: &'static str,
}

#[derive(Default)]
pub(crate) struct EventLog(Mutex<VecDeque<EventJson>>);

impl EventLog {
    fn push(&self, e: EventJson) {
        let mut g = self.0.lock();
        if g.len() >= MAX_EVENTS {
            g.pop_front();
        }
        g.push_back(e);
    }
    pub(crate) fn recent(&self) -> Vec<EventJson> {
        self.0.lock().iter().cloned().collect()
    }
}

pub(crate) fn start(inner: &Arc<NodeInner>, tasks: &TaskTracker) {
    // Activation gate: only the owner in a settled view activates.
    let weak = Arc::downgrade(inner);
    inner
        .system
        .virtuals()
        .set_activation_gate(Arc::new(move |id| {
            let Some(inner) = weak.upgrade() else {
                return Err(cortex_runtime::ActorError::rejected("node is stopping"));
            };
            let view = inner.placement.view();
            match view.owner(id) {
                Some(o) if o.name() == inner.id.name() => {
                    if !inner.has_quorum.load(std::sync::atomic::Ordering::Acquire) {
                        Err(cortex_runtime::ActorError::rejected(fenced_reason(&inner)))
                    } else if let Some(other) = inner.admission.awaiting_owner(id, inner.id.name())
                    {
                        // A live member still being admitted owns it on the full ring and
                        // may already host it (back from a partition): wait for it.
                        Err(cortex_runtime::ActorError::rejected(format!(
                            "the owner of {id}, {other}, is still being admitted: retry shortly"
                        )))
                    } else if view.is_settled(tokio::time::Instant::now())
                        && inner.joined.load(std::sync::atomic::Ordering::Acquire)
                    {
                        Ok(())
                    } else {
                        Err(cortex_runtime::ActorError::rejected(
                            "ring view not settled yet: retry shortly",
                        ))
                    }
                }
                Some(o) => Err(cortex_runtime::ActorError::rejected(format!(
                    "not the owner of {id} (owner: {o})"
                ))),
                None => Err(cortex_runtime::ActorError::rejected("no live members")),
            }
        }));

    inner
        .metrics
        .set_quorum(inner.has_quorum.load(std::sync::atomic::Ordering::Acquire));
    if let Some(m) = inner.membership() {
        let mut rx = m.watch();
        let i = inner.clone();
        let cancel = inner.cancel.clone();
        tasks.spawn(async move {
            loop {
                let view = rx.borrow_and_update().clone();
                i.metrics.set_membership_size(view.live_ids().len());
                let change = {
                    let seen = Sighting::from(view.as_ref());
                    i.quorum.lock().observe(&seen, tokio::time::Instant::now())
                };
                on_quorum_change(&i, change).await;
                apply_view(&i, &view).await;
                let quorum_due = i.quorum.lock().next_deadline();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    // The fence's hold ends, or the base may drop members declared down
                    // once the member set has been stable.
                    _ = sleep_until_some(quorum_due) => {
                        let change = i.quorum.lock().tick(tokio::time::Instant::now());
                        on_quorum_change(&i, change).await;
                    }
                    r = rx.changed() => if r.is_err() { return },
                    // A member passed (or failed) its TLS admission check.
                    _ = i.admission.changed.notified() => {}
                    // Retry refused members when due (and re-check now and then).
                    _ = tokio::time::sleep_until(
                        i.admission
                            .next_retry()
                            .unwrap_or_else(|| tokio::time::Instant::now() + ADMISSION_RETRY),
                    ) => {}
                }
            }
        });

        let mut events = m.subscribe();
        let i = inner.clone();
        let cancel = inner.cancel.clone();
        tasks.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = events.recv() => ev,
                };
                match ev {
                    Ok(ev) => record_membership_event(&i, &ev),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "membership events lagged")
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    let mut acts = inner.system.virtuals().events();
    let i = inner.clone();
    let cancel = inner.cancel.clone();
    tasks.spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => {
                    // Record what the shutdown's passivations emitted before stopping.
                    while let Ok(ev) = acts.try_recv() {
                        record_activation(&i, &ev);
                    }
                    return;
                }
                ev = acts.recv() => ev,
            };
            match ev {
                Ok(ev) => record_activation(&i, &ev),
                Err(RecvError::Lagged(n)) => {
                    tracing::error!(
                        skipped = n,
                        "activation events lagged: the activation log is incomplete"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// What `view` shows the quorum rule. A trait impl rather than a function so that the
/// routing simulation (`routing::sim`) feeds its quorum exactly as this loop does: this
/// module is private to `node`.
impl From<&crate::membership::MembershipView> for Sighting {
    fn from(view: &crate::membership::MembershipView) -> Self {
        use cortex_protocol::MemberState;
        let mut seen = Sighting::default();
        for m in &view.members {
            let name = m.id.name().to_owned();
            match m.state {
                MemberState::Up => seen.up.push(name),
                MemberState::Suspect => seen.suspect.push(name),
                MemberState::Down | MemberState::Left => {}
            }
        }
        seen.left = view
            .removed
            .iter()
            .filter(|m| m.state == MemberState::Left)
            .map(|m| m.id.name().to_owned())
            .collect();
        seen
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why the activation gate refuses while this node has no quorum.
fn fenced_reason(inner: &NodeInner) -> String {
    let st = inner.quorum.lock().status();
    format!(
        "{} reaches only {} of the {} members of its cluster (a minority partition, or most \
         members down), so it hosts no virtual actors until a majority is back: send to a \
         node of the majority (--quorum=off keeps both sides of a partition serving)",
        inner.id.name(),
        st.reachable.len(),
        st.base.len()
    )
}

/// Acts on a quorum change: a lost quorum passivates every activation here (the majority
/// will activate them after its settle time); a regained one restarts the settle time, so
/// that nothing is activated before the views have converged again.
async fn on_quorum_change(inner: &Arc<NodeInner>, change: QuorumChange) {
    use std::sync::atomic::Ordering;
    match change {
        QuorumChange::Same => {}
        QuorumChange::Lost => {
            // Cleared first: the gate refuses from now on, while the passivations run.
            inner.has_quorum.store(false, Ordering::Release);
            inner.metrics.set_quorum(false);
            inner.metrics.quorum_lost();
            let reg = inner.system.virtuals().clone();
            let live = reg.live_ids();
            tracing::warn!(
                status = ?inner.quorum.lock().status(),
                activations = live.len(),
                "lost quorum: passivating every activation and refusing new ones until a majority is reachable"
            );
            passivate_all(&reg, &live).await;
        }
        QuorumChange::Regained => {
            inner.placement.unsettle();
            inner.has_quorum.store(true, Ordering::Release);
            inner.metrics.set_quorum(true);
            tracing::info!(status = ?inner.quorum.lock().status(), "regained quorum");
        }
    }
}

fn record_activation(inner: &NodeInner, ev: &VirtualEvent) {
    let at = ev
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    match ev.event {
        VirtualEventKind::Activated => {
            inner
                .activations
                .activated_at(&ev.id, inner.placement.view().epoch, at);
            inner.metrics.actor_activated(ev.kind());
        }
        VirtualEventKind::Passivated(_) => {
            inner.activations.passivated_at(&ev.id, at);
            inner.metrics.actor_passivated(ev.kind());
        }
        _ => {}
    }
}

fn record_membership_event(inner: &NodeInner, ev: &MembershipEvent) {
    use crate::metrics::MembershipEvent as M;
    let (name, label) = match ev {
        MembershipEvent::Joined(_) => ("joined", M::Joined),
        MembershipEvent::Suspect(_) => ("suspect", M::Suspect),
        MembershipEvent::Down(_) => ("down", M::Down),
        MembershipEvent::Left(_) => ("left", M::Left),
        _ => ("alive", M::Joined),
    };
    let node = ev.member().map(|m| m.id.to_string()).unwrap_or_default();
    inner.metrics.membership_change(label);
    inner.events.push(EventJson {
        at: crate::http::rfc3339_millis(std::time::SystemTime::now()),
        node,
        event: name,
    });
}

/// Installs the live members of `view` (with this node, unless it is leaving) as the ring,
/// handing over what moved.
pub(crate) async fn apply_view(i: &Arc<NodeInner>, view: &crate::membership::MembershipView) {
    let leaving = i.leaving.load(std::sync::atomic::Ordering::Acquire);
    let mut live = view.live_ids();
    live.retain(|n| !(leaving && n.name() == i.id.name()));
    if !i.joined.load(std::sync::atomic::Ordering::Acquire)
        && (live.iter().any(|n| n.name() != i.id.name()) || seeds_are_only_me(i).await)
    {
        i.joined.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!("joined the cluster");
    }
    let gossip_set = view.fingerprint;
    let gossip_changed = i
        .last_fingerprint
        .swap(gossip_set, std::sync::atomic::Ordering::AcqRel)
        != gossip_set;
    let mut gossip_live = live.clone();
    admit(i, view, &mut live);
    close_departed(i, view);
    if !leaving && !live.iter().any(|n| n.name() == i.id.name()) {
        live.push(i.id.clone());
        gossip_live.push(i.id.clone());
    }
    let changed = match i.placement.update(live) {
        Some(ring) => Some(ring),
        // Membership moved but the admitted ring did not (a member awaits admission):
        // settle again, since other nodes may already count it.
        None if gossip_changed => Some(i.placement.unsettle()),
        None => None,
    };
    let vnodes = i.placement.view().ring.vnodes();
    let awaiting = i.admission.awaiting_ring(&gossip_live, i.id.name(), vnodes);
    if gossip_changed && let Some(full) = awaiting {
        handover_ahead(i, &full).await;
    }
    if let Some(ring) = changed {
        tracing::info!(
            epoch = ring.epoch,
            members = ring.ring.members().len(),
            "ring view changed"
        );
        handover(i).await;
        for c in i.clients.all() {
            send_topology(i, &c);
        }
    }
}

/// True when every configured seed resolves to this node's own gossip address (a cluster of
/// one, such as a single-replica StatefulSet), or there are no seeds at all.
async fn seeds_are_only_me(i: &NodeInner) -> bool {
    if i.config.seeds.is_empty() {
        return true;
    }
    let Some(m) = i.membership() else {
        return false;
    };
    let me = [m.gossip_addr(), m.bound_addr()];
    let addrs = crate::config::resolve_seeds(&i.config.seeds, Duration::from_secs(1)).await;
    !addrs.is_empty() && addrs.iter().all(|a| me.contains(a))
}

/// Closes connections to processes that are no longer live members (declared down, left,
/// or replaced by a restart), so that requests waiting on them fail now rather than at the
/// QUIC idle timeout.
fn close_departed(i: &NodeInner, view: &crate::membership::MembershipView) {
    let Some(ep) = i.endpoint() else { return };
    let fresh = fresh_departures(&mut i.admission.departed.lock(), view);
    for conn in ep.connections() {
        let Some(peer) = conn.peer_node() else {
            continue;
        };
        if is_departed(peer, view, &fresh) && !conn.is_closed() {
            tracing::debug!(peer = %peer, "closing the connection to a departed member");
            conn.close("member departed");
        }
    }
}

/// The removals of `view` not acted on before (`seen` remembers them while the view lists
/// them). Connections close on the departure, not on the state: once a removal has been
/// acted on, a later connection from that process (falsely declared down, back, and dialling
/// us before we heard of its return) proves that it lives; closing it would fail its ring
/// admission for nothing and keep twin activations alive after a heal.
fn fresh_departures(
    seen: &mut std::collections::HashSet<NodeId>,
    view: &crate::membership::MembershipView,
) -> Vec<NodeId> {
    seen.retain(|id| view.removed.iter().any(|m| &m.id == id));
    view.removed
        .iter()
        .filter(|m| seen.insert(m.id.clone()))
        .map(|m| m.id.clone())
        .collect()
}

/// Whether the connection to `peer` (a `name#process` transport id) belongs to a process
/// that left: a newer process holds the name, or the name was removed just now (`fresh`).
fn is_departed(peer: &NodeId, view: &crate::membership::MembershipView, fresh: &[NodeId]) -> bool {
    let live = view
        .members
        .iter()
        .filter(|m| m.id.name() == peer.name())
        .find(|m| m.is_live());
    match live {
        // Restarted: a newer process holds the name.
        Some(m) => m.transport_id() != *peer,
        // Declared down or left just now; a name this node has not heard of yet is left
        // alone (a new member may dial before gossip reaches us).
        None => fresh.iter().any(|m| m.name() == peer.name()),
    }
}

/// How often refused members are checked again, at most.
const ADMISSION_RETRY: Duration = Duration::from_secs(2);
/// First re-check after a refusal, doubling up to [`ADMISSION_RETRY`]: a dial that failed
/// because the network was still healing is retried within the settle time.
const ADMISSION_RETRY_FIRST: Duration = Duration::from_millis(100);

/// Members' admission: gossip proves a member knows the cluster secret; the ring also
/// requires that it holds a certificate from the cluster CA naming it, and speaks a common
/// protocol version. So a member enters this node's ring only once a mutually
/// authenticated QUIC connection to it has been established.
#[derive(Default)]
pub(crate) struct Admission {
    state: Mutex<HashMap<NodeId, Admit>>,
    pub(crate) changed: tokio::sync::Notify,
    /// Removed members whose connections were already closed (bounded by the view's
    /// removed list, which it mirrors).
    departed: Mutex<std::collections::HashSet<NodeId>>,
    /// When each live member not yet admitted was first seen (bounded by the live set).
    first_seen: Mutex<HashMap<NodeId, tokio::time::Instant>>,
    /// The ring over admitted members plus those awaiting admission for less than
    /// [`ADMISSION_GRACE`], while there are any: the activation gate refuses ids that such a
    /// member owns on it.
    awaiting: parking_lot::RwLock<Option<Arc<cortex_protocol::Ring>>>,
}

/// How long a live member awaiting admission keeps its ids from being activated elsewhere.
/// Admission normally takes one round trip; after a heal the first dials may be refused
/// for a second or so. A member refused for longer (another CA, a broken network path) is
/// then left out, so that its ids are served by the others.
const ADMISSION_GRACE: Duration = Duration::from_secs(5);

impl Admission {
    /// Recomputes the ring of this node (`me`), the admitted members and the members of
    /// `gossip_live` awaiting admission for less than [`ADMISSION_GRACE`]; returns it while
    /// there are such members.
    fn awaiting_ring(
        &self,
        gossip_live: &[NodeId],
        me: &str,
        vnodes: u32,
    ) -> Option<Arc<cortex_protocol::Ring>> {
        let now = tokio::time::Instant::now();
        let st = self.state.lock();
        let mut seen = self.first_seen.lock();
        seen.retain(|n, _| gossip_live.contains(n) && !matches!(st.get(n), Some(Admit::Ok)));
        let mut members = Vec::with_capacity(gossip_live.len());
        let mut awaiting = 0;
        for n in gossip_live {
            if n.name() == me || matches!(st.get(n), Some(Admit::Ok)) {
                members.push(n.clone());
                continue;
            }
            let first = *seen.entry(n.clone()).or_insert(now);
            if now.duration_since(first) < ADMISSION_GRACE {
                members.push(n.clone());
                awaiting += 1;
            }
        }
        drop((st, seen));
        let ring = (awaiting > 0).then(|| Arc::new(cortex_protocol::Ring::new(members, vnodes)));
        self.awaiting.write().clone_from(&ring);
        ring
    }

    /// The awaiting member that owns `id` on the ring with awaiting members, if that is not
    /// `me`.
    fn awaiting_owner(&self, id: &ActorId, me: &str) -> Option<NodeId> {
        let g = self.awaiting.read();
        let o = g.as_ref()?.owner(id)?;
        (o.name() != me).then(|| o.clone())
    }

    /// When the earliest refused member is due for another check.
    fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.state
            .lock()
            .values()
            .filter_map(|a| match a {
                Admit::Refused(at, backoff) => Some(*at + *backoff),
                _ => None,
            })
            .min()
    }
}

#[derive(Clone, Copy)]
enum Admit {
    Pending,
    Ok,
    /// Refused at, and how long to wait before the next check.
    Refused(tokio::time::Instant, Duration),
}

/// Keeps in `live` only this node and members that passed admission; starts checks for
/// the others.
fn admit(i: &Arc<NodeInner>, view: &crate::membership::MembershipView, live: &mut Vec<NodeId>) {
    let now = tokio::time::Instant::now();
    let mut st = i.admission.state.lock();
    st.retain(|n, _| live.contains(n));
    let mut to_check = Vec::new();
    let mut retries: HashMap<NodeId, Duration> = HashMap::new();
    live.retain(|n| {
        if n.name() == i.id.name() {
            return true;
        }
        match st.get(n).copied() {
            Some(Admit::Ok) => true,
            Some(Admit::Pending) => false,
            Some(Admit::Refused(at, backoff)) if now.duration_since(at) < backoff => false,
            prev => {
                // Keep the backoff of a member refused before, for the next refusal.
                let backoff = match prev {
                    Some(Admit::Refused(_, b)) => b,
                    _ => Duration::ZERO,
                };
                retries.insert(n.clone(), backoff);
                st.insert(n.clone(), Admit::Pending);
                to_check.push(n.clone());
                false
            }
        }
    });
    drop(st);
    for n in to_check {
        let last_backoff = retries.get(&n).copied().unwrap_or(Duration::ZERO);
        let versions = view.get(&n).map(|m| m.meta.versions);
        let inner = i.clone();
        i.spawn(async move {
            let ours = inner.config.protocol_versions;
            let verdict = match versions.map(|v| v.negotiate(&ours)) {
                Some(None) => Err(format!(
                    "no common protocol version (it speaks {}..={}, we speak {}..={})",
                    versions.map_or(0, |v| v.min),
                    versions.map_or(0, |v| v.max),
                    ours.min,
                    ours.max
                )),
                _ => match inner.connection(&n).await {
                    Ok(_) => Ok(()),
                    Err(cortex_protocol::ReplyResult::Err(e)) => Err(e.detail),
                    Err(_) => Err("unreachable".into()),
                },
            };
            let mut st = inner.admission.state.lock();
            if !st.contains_key(&n) {
                return;
            }
            match verdict {
                Ok(()) => {
                    st.insert(n.clone(), Admit::Ok);
                }
                Err(why) => {
                    let first = last_backoff.is_zero();
                    let backoff = (last_backoff * 2).clamp(ADMISSION_RETRY_FIRST, ADMISSION_RETRY);
                    st.insert(
                        n.clone(),
                        Admit::Refused(tokio::time::Instant::now(), backoff),
                    );
                    if first {
                        tracing::warn!(member = %n, reason = %why, "member kept out of the ring: its QUIC/TLS admission failed");
                    }
                }
            }
            drop(st);
            inner.admission.changed.notify_one();
        });
    }
}

/// Passivates every activation whose id this node no longer owns (its stop hook runs);
/// messages that arrive meanwhile are routed to the new owner.
async fn handover(inner: &Arc<NodeInner>) {
    let view = inner.placement.view();
    let reg = inner.system.virtuals().clone();
    let moved: Vec<_> = reg
        .live_ids()
        .into_iter()
        .filter(|id| view.owner(id).map(|o| o.name()) != Some(inner.id.name()))
        .collect();
    if moved.is_empty() {
        return;
    }
    tracing::info!(
        count = moved.len(),
        epoch = view.epoch,
        "handing over activations"
    );
    passivate_all(&reg, &moved).await;
    send_moved_keys(inner, &moved, |id| view.owner(id).cloned());
}

/// Passivates `ids`, 256 at a time (stop hooks may be slow).
async fn passivate_all(reg: &cortex_runtime::VirtualRegistry, ids: &[cortex_protocol::ActorId]) {
    for chunk in ids.chunks(256) {
        let stops = chunk.iter().map(|id| reg.passivate(id));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "passivation during handover timed out; aborted");
            }
        }
    }
}

/// Passivates the activations that a member awaiting admission owns on the full gossip
/// ring. Such a member is live and may already host them (a node back from a partition, or
/// falsely declared down, kept its activations): keeping ours until its QUIC admission
/// completes would leave two live activations while every view already agrees. Nothing is
/// activated meanwhile: the view was unsettled by the same gossip change, and by the time it
/// settles the member is normally in the ring and the ids go to it.
async fn handover_ahead(inner: &Arc<NodeInner>, full: &cortex_protocol::Ring) {
    let reg = inner.system.virtuals().clone();
    let ahead: Vec<_> = reg
        .live_ids()
        .into_iter()
        .filter(|id| full.owner(id).map(|o| o.name()) != Some(inner.id.name()))
        .collect();
    if ahead.is_empty() {
        return;
    }
    tracing::info!(
        count = ahead.len(),
        "handing over activations owned by members awaiting admission"
    );
    passivate_all(&reg, &ahead).await;
    send_moved_keys(inner, &ahead, |id| full.owner(id).cloned());
}

/// How long the old owner tries to deliver moved keys.
const MOVED_KEYS_BUDGET: Duration = Duration::from_secs(2);

/// Sends the answered idempotency keys of the passivated `moved` ids to their new owners'
/// `system/handover`, so a retry (or a delayed copy of a request) that reaches the new owner
/// replays the answer instead of running again. Best effort: a key that does not arrive
/// before the retry leaves the retry to run (documented in `routing::dedupe`).
fn send_moved_keys(
    inner: &Arc<NodeInner>,
    moved: &[ActorId],
    owner: impl Fn(&ActorId) -> Option<NodeId>,
) {
    let set: std::collections::HashSet<&ActorId> = moved.iter().collect();
    let keys = inner
        .dedupe
        .export(|id| set.contains(id), tokio::time::Instant::now());
    let mut by_owner: HashMap<NodeId, Vec<MovedKey>> = HashMap::new();
    for k in keys {
        if let Some(o) = owner(&k.actor).filter(|o| o.name() != inner.id.name()) {
            by_owner.entry(o).or_default().push(k);
        }
    }
    let Ok(message) = MessageName::new(<AdoptKeys as cortex_runtime::RemoteMessage>::NAME) else {
        return;
    };
    for (node, keys) in by_owner {
        for chunk in handover_batches(keys) {
            let n = chunk.len();
            let payload = match cortex_runtime::encode_with(&AdoptKeys(chunk), Codec::Bincode) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "moved idempotency keys not encoded");
                    continue;
                }
            };
            let ask = Ask {
                request: RequestId(0),
                target: Target::System {
                    node: node.clone(),
                    name: handover::NAME.into(),
                },
                message: message.clone(),
                payload: payload.into(),
                meta: RequestMeta {
                    budget_us: MOVED_KEYS_BUDGET.as_micros() as u64,
                    trace: Default::default(),
                },
                epoch: 0,
                idempotency_key: None,
            };
            let i = inner.clone();
            let to = node.clone();
            inner.spawn(async move {
                match i.route_ask(ask, 0, i.id.clone(), false).await {
                    ReplyResult::Ok { .. } => {
                        i.metrics.idempotency_keys_handed_over(n as u64);
                        tracing::debug!(to = %to, keys = n, "idempotency keys handed over");
                    }
                    ReplyResult::Err(e) => {
                        tracing::warn!(to = %to, keys = n, error = %e.detail, "idempotency keys not handed over: retries reaching the new owner may run again");
                    }
                }
            });
        }
    }
}

/// Splits `keys` into messages of at most [`handover::MAX_KEYS_PER_MESSAGE`] keys and about
/// [`handover::MAX_BYTES_PER_MESSAGE`] bytes: replies can be large, and a message past the
/// frame limit would not be sent at all.
fn handover_batches(keys: Vec<MovedKey>) -> Vec<Vec<MovedKey>> {
    let mut out: Vec<Vec<MovedKey>> = Vec::new();
    let mut bytes = 0;
    for k in keys {
        let size = approx_len(&k);
        match out.last_mut() {
            Some(b)
                if b.len() < handover::MAX_KEYS_PER_MESSAGE
                    && bytes + size <= handover::MAX_BYTES_PER_MESSAGE =>
            {
                bytes += size;
                b.push(k);
            }
            _ => {
                bytes = size;
                out.push(vec![k]);
            }
        }
    }
    out
}

/// About the encoded size of a moved key (bincode lengths are small varints).
fn approx_len(k: &MovedKey) -> usize {
    let reply = match &k.reply {
        ReplyResult::Ok { message, payload } => message.as_str().len() + payload.len(),
        ReplyResult::Err(e) => e.detail.len(),
    };
    32 + k.actor.kind().len() + k.actor.key().len() + reply
}

/// Sends the current topology to a client connection.
pub(crate) fn send_topology(inner: &NodeInner, conn: &Connection) {
    let Some(m) = inner.membership() else { return };
    let ring = inner.placement.view();
    let view = m.view();
    let snapshot = TopologySnapshot {
        epoch: ring.epoch,
        vnodes: ring.ring.vnodes(),
        members: view
            .members
            .iter()
            .filter(|mem| mem.is_live())
            .map(|mem| mem.to_info())
            .collect(),
    };
    if let Err(e) = conn.try_send(Envelope::TopologySnapshot(snapshot), 0) {
        tracing::debug!(error = %e, "topology not sent to client");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::SystemTime;

    use super::*;
    use crate::membership::{Member, MemberMeta, MemberState, MembershipView};

    fn member(name: &str, inc: u64, process: u64, state: MemberState) -> Member {
        let addr: std::net::SocketAddr = "127.0.0.1:7400".parse().unwrap();
        Member {
            id: NodeId::new(name, inc).unwrap(),
            gossip_addr: addr,
            meta: MemberMeta {
                quic_addr: addr,
                http_addr: addr,
                roles: Vec::new(),
                versions: cortex_protocol::VersionRange { min: 1, max: 1 },
                process,
            },
            state,
            since: SystemTime::UNIX_EPOCH,
        }
    }

    fn view(members: Vec<Member>, removed: Vec<Member>) -> MembershipView {
        MembershipView {
            local: NodeId::new("a", 1).unwrap(),
            members,
            removed,
            epoch: 1,
            fingerprint: 0,
        }
    }

    #[test]
    fn a_departed_process_is_closed_once_and_its_later_connection_kept() {
        let b_proc = NodeId::new("b", 10).unwrap();
        let mut seen = HashSet::new();
        // b (process 10, gossip incarnation 11) is declared down.
        let down = view(vec![], vec![member("b", 11, 10, MemberState::Down)]);
        let fresh = fresh_departures(&mut seen, &down);
        assert!(
            is_departed(&b_proc, &down, &fresh),
            "closed at the departure"
        );
        // The same process dials again before this node hears of its return: kept.
        let fresh = fresh_departures(&mut seen, &down);
        assert!(fresh.is_empty());
        assert!(!is_departed(&b_proc, &down, &fresh));
        // It is back under a renewed incarnation, same process: kept.
        let back = view(
            vec![member("b", 12, 10, MemberState::Up)],
            vec![member("b", 11, 10, MemberState::Down)],
        );
        let fresh = fresh_departures(&mut seen, &back);
        assert!(!is_departed(&b_proc, &back, &fresh));
        // Declared down again under the new incarnation: a new departure, closed.
        let again = view(
            vec![],
            vec![
                member("b", 11, 10, MemberState::Down),
                member("b", 12, 10, MemberState::Down),
            ],
        );
        let fresh = fresh_departures(&mut seen, &again);
        assert!(is_departed(&b_proc, &again, &fresh));
    }

    #[test]
    fn moved_keys_are_sent_in_bounded_messages() {
        let key = |i: u32, payload: usize| MovedKey {
            key: [0; 16],
            actor: ActorId::new("counter", format!("k{i}")).unwrap(),
            reply: ReplyResult::Ok {
                message: MessageName::new("r").unwrap(),
                payload: vec![0; payload].into(),
            },
            age_ms: 0,
        };
        let small: Vec<_> = (0..5000).map(|i| key(i, 8)).collect();
        let b = handover_batches(small);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 5000, "none lost");
        assert!(b.iter().all(|m| m.len() <= handover::MAX_KEYS_PER_MESSAGE));
        let big: Vec<_> = (0..10).map(|i| key(i, 100 * 1024)).collect();
        let b = handover_batches(big);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 10);
        for m in &b {
            let bytes: usize = m.iter().map(approx_len).sum();
            assert!(
                m.len() == 1 || bytes <= handover::MAX_BYTES_PER_MESSAGE,
                "{bytes}"
            );
        }
        assert!(b.len() >= 5, "large replies split the message: {}", b.len());
    }

    #[test]
    fn a_restarted_process_replaces_the_old_connection() {
        let old = NodeId::new("b", 10).unwrap();
        let v = view(vec![member("b", 20, 20, MemberState::Up)], vec![]);
        assert!(is_departed(&old, &v, &[]));
        assert!(!is_departed(&NodeId::new("b", 20).unwrap(), &v, &[]));
        // A name never heard of is left alone.
        assert!(!is_departed(&NodeId::new("c", 1).unwrap(), &v, &[]));
    }
}
