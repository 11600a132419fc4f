//! Recording methods of [`NodeMetrics`], one per event the node counts.

use std::time::Duration;

use super::labels::{
    EventOnly, KindOnly, KindOutcome, KindPath, Label, Outcome, Path, PeerOnly, ReasonOnly,
    gossip_reason,
};
use super::{KindMetrics, MembershipEvent, NodeMetrics};

impl NodeMetrics {
    fn kind_label(&self, kind: &str) -> Label {
        self.inner.kinds.resolve(kind)
    }

    fn kind_path(&self, kind: &str, remote: bool) -> KindPath {
        KindPath {
            kind: self.kind_label(kind),
            path: Path::from_remote(remote),
        }
    }

    /// Admits `kind` as a label value ahead of traffic, so that kinds registered at start-up
    /// always get their own series. Returns `false` when the cap ([`super::MAX_KIND_LABELS`]) is
    /// reached or `kind` is not a valid kind name; its events are then counted as `"other"`.
    pub fn register_kind(&self, kind: &str) -> bool {
        let label = self.kind_label(kind);
        let admitted = label.as_str() == kind;
        if admitted {
            self.inner
                .hot
                .add(kind, || KindMetrics::new(self, label.clone()));
        }
        admitted
    }

    /// Handles for one actor kind, resolved once, for hot paths that would otherwise look the
    /// label up on every message. Creating it creates (zero) series for every per-kind metric.
    pub fn kind(&self, kind: &str) -> KindMetrics {
        KindMetrics::new(self, self.kind_label(kind))
    }

    /// A message for an actor of `kind` was sent from this node; `remote` when it went to
    /// another node.
    pub fn message_sent(&self, kind: &str, remote: bool) {
        if let Some(k) = self.inner.hot.get(kind) {
            return k.sent(remote);
        }
        self.inner
            .messages_sent
            .get_or_create(&self.kind_path(kind, remote))
            .inc();
    }

    /// A message was delivered to an actor of `kind` on this node; `remote` when it came from
    /// another node.
    pub fn message_received(&self, kind: &str, remote: bool) {
        if let Some(k) = self.inner.hot.get(kind) {
            return k.received(remote);
        }
        self.inner
            .messages_received
            .get_or_create(&self.kind_path(kind, remote))
            .inc();
    }

    /// A message for an actor of `kind` that this node does not own was forwarded to its
    /// owner; `remote` when the message had come from another node.
    pub fn message_forwarded(&self, kind: &str, remote: bool) {
        if let Some(k) = self.inner.hot.get(kind) {
            return k.forwarded(remote);
        }
        self.inner
            .messages_forwarded
            .get_or_create(&self.kind_path(kind, remote))
            .inc();
    }

    /// A message for an actor of `kind` was dropped; `remote` when it came from (or was bound
    /// for) another node.
    pub fn message_dropped(&self, kind: &str, remote: bool) {
        if let Some(k) = self.inner.hot.get(kind) {
            return k.dropped(remote);
        }
        self.inner
            .messages_dropped
            .get_or_create(&self.kind_path(kind, remote))
            .inc();
    }

    /// An ask to an actor of `kind` finished after `elapsed`: `ok` for a reply, `false` for
    /// any error (timeout, unreachable, rejected, ...).
    pub fn record_ask(&self, kind: &str, ok: bool, elapsed: Duration) {
        if let Some(k) = self.inner.hot.get(kind) {
            return k.ask(ok, elapsed);
        }
        let labels = KindOutcome {
            kind: self.kind_label(kind),
            outcome: Outcome::from_ok(ok),
        };
        self.inner
            .ask_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the number of messages queued in the mailboxes of `kind`'s live actors.
    pub fn set_mailbox_depth(&self, kind: &str, depth: i64) {
        let labels = KindOnly {
            kind: self.kind_label(kind),
        };
        self.inner.mailbox_depth.get_or_create(&labels).set(depth);
    }

    /// Adds `delta` (negative to remove) to `kind`'s mailbox depth: +1 on enqueue, -1 on dequeue.
    pub fn add_mailbox_depth(&self, kind: &str, delta: i64) {
        let labels = KindOnly {
            kind: self.kind_label(kind),
        };
        self.inner
            .mailbox_depth
            .get_or_create(&labels)
            .inc_by(delta);
    }

    /// An actor of `kind` was activated: counts an activation and one more live actor.
    pub fn actor_activated(&self, kind: &str) {
        let labels = KindOnly {
            kind: self.kind_label(kind),
        };
        self.inner.activations.get_or_create(&labels).inc();
        self.inner.live_actors.get_or_create(&labels).inc();
    }

    /// An actor of `kind` was passivated (or stopped): counts a passivation and one fewer live
    /// actor.
    pub fn actor_passivated(&self, kind: &str) {
        let labels = KindOnly {
            kind: self.kind_label(kind),
        };
        self.inner.passivations.get_or_create(&labels).inc();
        self.inner.live_actors.get_or_create(&labels).dec();
    }

    /// Sets the live actor count of `kind` (for owners that count actors themselves).
    pub fn set_live_actors(&self, kind: &str, live: i64) {
        let labels = KindOnly {
            kind: self.kind_label(kind),
        };
        self.inner.live_actors.get_or_create(&labels).set(live);
    }

    /// Live actors per kind label, sorted by kind: the local part of `GET /cluster/actors`.
    pub fn live_actors(&self) -> Vec<(String, i64)> {
        let kinds = self.inner.kinds.labels();
        let mut out: Vec<(String, i64)> = kinds
            .into_iter()
            .filter_map(|kind| {
                let labels = KindOnly { kind };
                let live = self.inner.live_actors.get(&labels)?.get();
                Some((labels.kind.as_str().to_string(), live))
            })
            .collect();
        out.sort();
        out
    }

    /// Sets the number of members this node sees (alive or suspect, itself included).
    pub fn set_membership_size(&self, members: usize) {
        self.inner
            .membership_size
            .set(i64::try_from(members).unwrap_or(i64::MAX));
    }

    /// Records whether this node has its quorum.
    pub fn set_quorum(&self, has: bool) {
        self.inner.quorum.set(i64::from(has));
    }

    /// Counts one loss of quorum (every activation passivated).
    pub fn quorum_lost(&self) {
        self.inner.quorum_losses.inc();
    }

    /// Counts one membership change.
    pub fn membership_change(&self, event: MembershipEvent) {
        self.inner
            .membership_changes
            .get_or_create(&EventOnly { event })
            .inc();
    }

    fn peer(&self, peer: &str) -> PeerOnly {
        PeerOnly {
            peer: self.inner.peers.resolve(peer),
        }
    }

    /// Records the latest round-trip time measured to the peer node named `peer`.
    pub fn set_peer_rtt(&self, peer: &str, rtt: Duration) {
        self.inner
            .peer_rtt
            .get_or_create(&self.peer(peer))
            .set(rtt.as_secs_f64());
    }

    /// Counts `bytes` sent to the peer node named `peer`.
    pub fn peer_bytes_sent(&self, peer: &str, bytes: u64) {
        self.inner
            .peer_sent_bytes
            .get_or_create(&self.peer(peer))
            .inc_by(bytes);
    }

    /// Counts `bytes` received from the peer node named `peer`.
    pub fn peer_bytes_received(&self, peer: &str, bytes: u64) {
        self.inner
            .peer_received_bytes
            .get_or_create(&self.peer(peer))
            .inc_by(bytes);
    }

    /// Counts `packets` QUIC packets to the peer node named `peer` declared lost.
    pub fn peer_lost_packets(&self, peer: &str, packets: u64) {
        self.inner
            .peer_lost_packets
            .get_or_create(&self.peer(peer))
            .inc_by(packets);
    }

    /// Removes every series of the peer node named `peer` (call when it leaves for good or is
    /// declared down) and frees its slot under [`super::MAX_PEER_LABELS`].
    pub fn forget_peer(&self, peer: &str) {
        if let Some(label) = self.inner.peers.forget(peer) {
            let labels = PeerOnly { peer: label };
            self.inner.peer_rtt.remove(&labels);
            self.inner.peer_sent_bytes.remove(&labels);
            self.inner.peer_received_bytes.remove(&labels);
            self.inner.peer_lost_packets.remove(&labels);
        }
    }

    /// Counts answered idempotency keys delivered to a new owner after a handover.
    pub fn idempotency_keys_handed_over(&self, n: u64) {
        self.inner.idempotency_keys_handed_over.inc_by(n);
    }

    /// Counts answered idempotency keys adopted from an actor's previous owner.
    pub fn idempotency_keys_adopted(&self, n: u64) {
        self.inner.idempotency_keys_adopted.inc_by(n);
    }

    /// Counts one accepted gossip datagram.
    pub fn gossip_accepted(&self) {
        self.inner.gossip_accepted.inc();
    }

    /// Counts one rejected gossip datagram. `reason` is one of [`super::GOSSIP_REJECT_REASONS`]
    /// (the membership layer's reject reasons in snake_case); anything else counts as `"other"`.
    pub fn gossip_rejected(&self, reason: &str) {
        self.inner
            .gossip_rejected
            .get_or_create(&ReasonOnly {
                reason: gossip_reason(reason),
            })
            .inc();
    }

    /// Brings the gossip counters up to totals kept elsewhere (the membership layer's own
    /// monotonic counters), for a caller that copies them in just before each scrape. Totals
    /// lower than what is already counted are ignored: counters never go down.
    pub fn sync_gossip_totals<'a>(
        &self,
        accepted: u64,
        rejected: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let bump = |c: &prometheus_client::metrics::counter::Counter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        bump(&self.inner.gossip_accepted, accepted);
        // Several unknown reasons share the "other" series: add them up before comparing.
        let mut totals: Vec<(&'static str, u64)> = Vec::new();
        for (reason, total) in rejected {
            let reason = gossip_reason(reason);
            match totals.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, sum)) => *sum = sum.saturating_add(total),
                None => totals.push((reason, total)),
            }
        }
        for (reason, total) in totals {
            bump(
                &self
                    .inner
                    .gossip_rejected
                    .get_or_create(&ReasonOnly { reason }),
                total,
            );
        }
    }

    /// Counts `n` pub-sub messages delivered to local subscribers.
    pub fn pubsub_delivered(&self, n: u64) {
        self.inner.pubsub_delivered.inc_by(n);
    }

    /// Counts `n` pub-sub messages dropped (subscriber full or gone).
    pub fn pubsub_dropped(&self, n: u64) {
        self.inner.pubsub_dropped.inc_by(n);
    }
}
