//! Background tasks reacting to change: membership → ring view → handover and client
//! topology; activation events → the activation log and metrics.

use std::collections::VecDeque;
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
                    if view.is_settled(tokio::time::Instant::now()) {
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
                let mut live = view.live_ids();
                if !live.contains(&i.id) {
                    live.push(i.id.clone());
                }
                i.metrics.set_membership_size(live.len());
                if let Some(ring) = i.placement.update(live) {
                    tracing::info!(
                        epoch = ring.epoch,
                        members = ring.ring.members().len(),
                        "ring view changed"
                    );
                    handover(&i).await;
                    for c in i.clients.all() {
                        send_topology(&i, &c);
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
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
    if !leaving && !live.iter().any(|n| n.name() == i.id.name()) {
        live.push(i.id.clone());
    }
    if let Some(ring) = i.placement.update(live) {
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
