//! Background tasks reacting to change: membership → ring view → handover and client
//! topology; activation events → the activation log and metrics.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use cortex_protocol::NodeId;
use std::sync::Arc;

use cortex_protocol::{Envelope, TopologySnapshot};
use cortex_runtime::{VirtualEvent, VirtualEventKind};
use cortex_transport::Connection;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;

use super::inner::NodeInner;
use crate::membership::MembershipEvent;

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
                    if view.is_settled(tokio::time::Instant::now())
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

    if let Some(m) = inner.membership() {
        let mut rx = m.watch();
        let i = inner.clone();
        let cancel = inner.cancel.clone();
        tasks.spawn(async move {
            loop {
                let view = rx.borrow_and_update().clone();
                i.metrics.set_membership_size(view.live_ids().len());
                apply_view(&i, &view).await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                    // A member passed (or failed) its TLS admission check.
                    _ = i.admission.changed.notified() => {}
                    // Retry refused members now and then.
                    _ = tokio::time::sleep(ADMISSION_RETRY) => {}
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
    admit(i, view, &mut live);
    close_departed(i, view);
    if !leaving && !live.iter().any(|n| n.name() == i.id.name()) {
        live.push(i.id.clone());
    }
    let changed = match i.placement.update(live) {
        Some(ring) => Some(ring),
        // Membership moved but the admitted ring did not (a member awaits admission):
        // settle again, since other nodes may already count it.
        None if gossip_changed => Some(i.placement.unsettle()),
        None => None,
    };
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
    for conn in ep.connections() {
        let Some(peer) = conn.peer_node() else {
            continue;
        };
        let same_name = |m: &&crate::membership::Member| m.id.name() == peer.name();
        let live = view.members.iter().filter(same_name).find(|m| m.is_live());
        let departed = match live {
            // Restarted: a newer process holds the name.
            Some(m) => m.transport_id() != *peer,
            // Declared down or left; a name this node has not heard of yet is left alone
            // (a new member may dial before gossip reaches us).
            None => view.removed.iter().any(|m| m.id.name() == peer.name()),
        };
        if departed && !conn.is_closed() {
            tracing::debug!(peer = %peer, "closing the connection to a departed member");
            conn.close("member departed");
        }
    }
}

/// How often refused members are checked again.
const ADMISSION_RETRY: Duration = Duration::from_secs(2);

/// Members' admission: gossip proves a member knows the cluster secret; the ring also
/// requires that it holds a certificate from the cluster CA naming it, and speaks a common
/// protocol version. So a member enters this node's ring only once a mutually
/// authenticated QUIC connection to it has been established.
#[derive(Default)]
pub(crate) struct Admission {
    state: Mutex<HashMap<NodeId, Admit>>,
    pub(crate) changed: tokio::sync::Notify,
}

#[derive(Clone, Copy)]
enum Admit {
    Pending,
    Ok,
    Refused(tokio::time::Instant),
}

/// Keeps in `live` only this node and members that passed admission; starts checks for
/// the others.
fn admit(i: &Arc<NodeInner>, view: &crate::membership::MembershipView, live: &mut Vec<NodeId>) {
    let now = tokio::time::Instant::now();
    let mut st = i.admission.state.lock();
    st.retain(|n, _| live.contains(n));
    let mut to_check = Vec::new();
    live.retain(|n| {
        if n.name() == i.id.name() {
            return true;
        }
        match st.get(n).copied() {
            Some(Admit::Ok) => true,
            Some(Admit::Pending) => false,
            Some(Admit::Refused(at)) if now.duration_since(at) < ADMISSION_RETRY => false,
            _ => {
                st.insert(n.clone(), Admit::Pending);
                to_check.push(n.clone());
                false
            }
        }
    });
    drop(st);
    for n in to_check {
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
                    let first = !matches!(st.get(&n), Some(Admit::Refused(_)));
                    st.insert(n.clone(), Admit::Refused(tokio::time::Instant::now()));
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
    // Bounded parallelism: stop hooks may be slow.
    for chunk in moved.chunks(256) {
        let stops = chunk.iter().map(|id| reg.passivate(id));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "passivation during handover timed out; aborted");
            }
        }
    }
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
