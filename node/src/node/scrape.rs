//! Counters owned by other layers (gossip datagrams, QUIC connections), copied into the
//! node's registry when `/metrics` is scraped, so the hot paths carry no metrics calls.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::inner::NodeInner;
use crate::membership::RejectReason;

/// Totals already reported per connection, so the counters grow by deltas.
#[derive(Default)]
pub(crate) struct PeerTotals(Mutex<HashMap<u64, Reported>>);

#[derive(Default)]
pub(crate) struct Reported {
    sent: u64,
    received: u64,
    lost: u64,
}

pub(crate) fn sync(inner: &NodeInner) {
    // Kinds with no live activation read 0, not their last value.
    let queued = inner.system.virtuals().queued_by_kind();
    for (kind, _) in inner.metrics.live_actors() {
        if !queued.iter().any(|(k, _)| *k == kind) {
            inner.metrics.set_mailbox_depth(&kind, 0);
        }
    }
    for (kind, depth) in queued {
        inner
            .metrics
            .set_mailbox_depth(&kind, i64::try_from(depth).unwrap_or(i64::MAX));
    }
    if let Some(m) = inner.membership() {
        let c = m.counters();
        let rejected = REASONS.iter().map(|(name, r)| (*name, c.rejected.get(*r)));
        inner.metrics.sync_gossip_totals(c.accepted, rejected);
    }
    let Some(ep) = inner.endpoint() else { return };
    let mut seen = inner.peer_totals.0.lock();
    let mut live = Vec::new();
    for conn in ep.connections() {
        let Some(peer) = conn.peer_node() else {
            continue;
        };
        let name = peer.name().to_owned();
        let stats = conn.stats();
        live.push(conn.id());
        let last = seen.entry(conn.id()).or_default();
        inner
            .metrics
            .peer_bytes_sent(&name, stats.bytes_sent.saturating_sub(last.sent));
        inner
            .metrics
            .peer_bytes_received(&name, stats.bytes_received.saturating_sub(last.received));
        inner
            .metrics
            .peer_lost_packets(&name, stats.lost_packets.saturating_sub(last.lost));
        *last = Reported {
            sent: stats.bytes_sent,
            received: stats.bytes_received,
            lost: stats.lost_packets,
        };
        inner.metrics.set_peer_rtt(&name, conn.rtt());
    }
    seen.retain(|id, _| live.contains(id));
}

const REASONS: [(&str, RejectReason); 10] = [
    ("truncated", RejectReason::Truncated),
    ("too_large", RejectReason::TooLarge),
    ("bad_magic", RejectReason::BadMagic),
    ("unsupported_version", RejectReason::UnsupportedVersion),
    ("bad_tag", RejectReason::BadTag),
    ("unknown_kind", RejectReason::UnknownKind),
    ("stale", RejectReason::Stale),
    ("replayed", RejectReason::Replayed),
    ("too_many_senders", RejectReason::TooManySenders),
    ("malformed", RejectReason::Malformed),
];
