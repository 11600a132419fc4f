//! Counters owned by other layers (gossip datagrams, QUIC connections), copied into the
//! node's registry when `/metrics` is scraped, so the hot paths carry no metrics calls.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::inner::NodeInner;
use crate::membership::RejectReason;

/// Totals already reported per connection, so the counters grow by deltas.
#[derive(Default)]
pub(crate) struct PeerTotals(Mutex<HashMap<u64, Reported>>);

/// One connection's byte and loss counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reported {
    sent: u64,
    received: u64,
    lost: u64,
}

impl Reported {
    fn of(s: &cortex_transport::ConnectionStats) -> Self {
        Self {
            sent: s.bytes_sent,
            received: s.bytes_received,
            lost: s.lost_packets,
        }
    }

    fn since(self, last: Reported) -> Reported {
        Reported {
            sent: self.sent.saturating_sub(last.sent),
            received: self.received.saturating_sub(last.received),
            lost: self.lost.saturating_sub(last.lost),
        }
    }
}

impl PeerTotals {
    /// What to add to each peer's counters: for every open connection (`live`: id, peer
    /// name, counters now) the growth since the last scrape; for every connection closed
    /// since (`closed`, read after `live`) the growth from the last scrape to its close,
    /// after which it is forgotten. A connection may be in both (it closed in between).
    fn deltas(
        &self,
        live: &[(u64, String, Reported)],
        closed: &[(u64, String, Reported)],
    ) -> Vec<(String, Reported)> {
        let mut seen = self.0.lock();
        let mut out = Vec::with_capacity(live.len() + closed.len());
        for (id, peer, now) in live {
            let last = seen.entry(*id).or_default();
            out.push((peer.clone(), now.since(*last)));
            *last = *now;
        }
        for (id, peer, last_counts) in closed {
            let last = seen.remove(id).unwrap_or_default();
            out.push((peer.clone(), last_counts.since(last)));
        }
        seen.retain(|id, _| live.iter().any(|(l, _, _)| l == id));
        out
    }
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
    // Open connections first, then those closed since: a connection is listed as closed
    // before it leaves the open list, so none falls between the two reads.
    let mut live = Vec::new();
    for conn in ep.connections() {
        let Some(peer) = conn.peer_node() else {
            continue;
        };
        let name = peer.name().to_owned();
        inner.metrics.set_peer_rtt(&name, conn.rtt());
        live.push((conn.id(), name, Reported::of(&conn.stats())));
    }
    let closed: Vec<_> = ep
        .take_closed()
        .into_iter()
        .filter_map(|c| Some((c.id, c.peer?.name().to_owned(), Reported::of(&c.stats))))
        .collect();
    for (name, d) in inner.peer_totals.deltas(&live, &closed) {
        inner.metrics.peer_bytes_sent(&name, d.sent);
        inner.metrics.peer_bytes_received(&name, d.received);
        inner.metrics.peer_lost_packets(&name, d.lost);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn r(sent: u64, lost: u64) -> Reported {
        Reported {
            sent,
            received: sent / 2,
            lost,
        }
    }

    #[test]
    fn what_a_connection_did_before_it_closed_is_counted_once() {
        let t = PeerTotals::default();
        let a = |id, c| (id, "a".to_owned(), c);
        assert_eq!(t.deltas(&[a(1, r(100, 1))], &[]), [("a".into(), r(100, 1))]);
        // Closed since: only the growth after the last scrape.
        assert_eq!(t.deltas(&[], &[a(1, r(150, 3))]), [("a".into(), r(50, 2))]);
        // Forgotten: its id is not counted again.
        assert_eq!(t.deltas(&[], &[]), []);
        // Opened and closed between two scrapes: all of it.
        assert_eq!(t.deltas(&[], &[a(2, r(30, 0))]), [("a".into(), r(30, 0))]);
        // Seen open, then closed within the same scrape: open part, then the rest.
        let d = t.deltas(&[a(3, r(10, 0))], &[a(3, r(12, 1))]);
        assert_eq!(d, [("a".into(), r(10, 0)), ("a".into(), r(2, 1))]);
        assert_eq!(t.deltas(&[], &[]), []);
    }
}
