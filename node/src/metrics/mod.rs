//! The node's metrics registry: every counter, gauge and histogram the node exports at
//! `GET /metrics`, registered once at start-up on a `prometheus-client` [`Registry`].
//!
//! Components get a [`NodeMetrics`] (a cheap clone of one shared registry) and record through its
//! methods, or through a per-kind [`KindMetrics`] handle on hot paths. The HTTP router serves
//! [`NodeMetrics::encode_for_accept`]. Every label whose values come from outside the code is
//! bounded: actor kinds at [`MAX_KIND_LABELS`], peers at [`MAX_PEER_LABELS`], everything beyond
//! is counted under `"other"`. The full list of metrics is in `docs/metrics.md`.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use cortex_node::metrics::NodeMetrics;
//!
//! let metrics = NodeMetrics::new("node-a");
//! metrics.message_received("order", true);
//! metrics.record_ask("order", true, Duration::from_micros(250));
//! let text = metrics.encode();
//! assert!(text.contains(r#"cortex_messages_received_total{node="node-a",kind="order",path="remote"} 1"#));
//! ```

mod encode;
mod kind;
mod labels;
mod process;
mod record;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use encode::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, prefers_openmetrics};
pub use kind::KindMetrics;
pub use labels::{GOSSIP_REJECT_REASONS, MembershipEvent, OTHER, SYSTEM};

use labels::{BoundedLabels, EventOnly, KindOnly, KindOutcome, KindPath, PeerOnly, ReasonOnly};
use process::ProcessCollector;

/// The most distinct `kind` label values, `"system"` and `"other"` included.
pub const MAX_KIND_LABELS: usize = 64;
/// The most distinct `peer` label values, `"other"` included.
pub const MAX_PEER_LABELS: usize = 256;

/// Upper bounds of the ask latency histogram, in seconds: 1-2.5-5 steps from 10 µs to 10 s.
pub const ASK_BUCKETS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn ask_histogram() -> Histogram {
    Histogram::new(ASK_BUCKETS)
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// The node's metrics: one shared registry with every handle registered up front.
///
/// Cloning is cheap (one `Arc`); all clones record into and encode the same registry. Every
/// method is safe to call from any thread and never blocks for longer than a short lock on a
/// label map.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    registry: Registry,
    process: Arc<ProcessCollector>,
    kinds: BoundedLabels,
    peers: BoundedLabels,
    messages_sent: Family<KindPath, Counter>,
    messages_received: Family<KindPath, Counter>,
    messages_forwarded: Family<KindPath, Counter>,
    messages_dropped: Family<KindPath, Counter>,
    mailbox_depth: Family<KindOnly, Gauge>,
    ask_duration: Family<KindOutcome, Histogram, fn() -> Histogram>,
    activations: Family<KindOnly, Counter>,
    passivations: Family<KindOnly, Counter>,
    live_actors: Family<KindOnly, Gauge>,
    membership_size: Gauge,
    quorum: Gauge,
    quorum_losses: Counter,
    membership_changes: Family<EventOnly, Counter>,
    peer_rtt: Family<PeerOnly, F64Gauge>,
    peer_sent_bytes: Family<PeerOnly, Counter>,
    peer_received_bytes: Family<PeerOnly, Counter>,
    peer_lost_packets: Family<PeerOnly, Counter>,
    gossip_accepted: Counter,
    gossip_rejected: Family<ReasonOnly, Counter>,
    pubsub_delivered: Counter,
    pubsub_dropped: Counter,
    idempotency_keys_handed_over: Counter,
    idempotency_keys_adopted: Counter,
    /// Handles of the kinds registered so far, read without a lock on every message.
    hot: kind::HotKinds,
}

impl NodeMetrics {
    /// A registry for the node called `node_name`; every series carries `node="<node_name>"`.
    pub fn new(node_name: &str) -> Self {
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("node"), Cow::Owned(node_name.to_string()))].into_iter(),
        );
        let process = Arc::new(ProcessCollector::new());
        registry.register_collector(Box::new(Arc::clone(&process)));

        let inner = Inner {
            node: node_name.to_string(),
            process,
            kinds: BoundedLabels::new("kind", MAX_KIND_LABELS, &[SYSTEM]),
            peers: BoundedLabels::new("peer", MAX_PEER_LABELS, &[]),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            messages_forwarded: Family::default(),
            messages_dropped: Family::default(),
            mailbox_depth: Family::default(),
            ask_duration: Family::new_with_constructor(ask_histogram as fn() -> Histogram),
            activations: Family::default(),
            passivations: Family::default(),
            live_actors: Family::default(),
            membership_size: Gauge::default(),
            quorum: Gauge::default(),
            quorum_losses: Counter::default(),
            membership_changes: Family::default(),
            peer_rtt: Family::default(),
            peer_sent_bytes: Family::default(),
            peer_received_bytes: Family::default(),
            peer_lost_packets: Family::default(),
            gossip_accepted: Counter::default(),
            gossip_rejected: Family::default(),
            pubsub_delivered: Counter::default(),
            pubsub_dropped: Counter::default(),
            idempotency_keys_handed_over: Counter::default(),
            idempotency_keys_adopted: Counter::default(),
            hot: kind::HotKinds::default(),
            registry: Registry::default(),
        };
        // Zero series that dashboards and alerts expect to exist before the first event.
        for event in MembershipEvent::ALL {
            inner
                .membership_changes
                .get_or_create_owned(&EventOnly { event });
        }
        let cortex = registry.sub_registry_with_prefix("cortex");
        inner.register(cortex);
        Self {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// The node name given to [`NodeMetrics::new`].
    pub fn node_name(&self) -> &str {
        &self.inner.node
    }

    /// This process's resident memory in bytes, as exported by `process_resident_memory_bytes`;
    /// `None` where `/proc` is unavailable.
    pub fn resident_memory_bytes(&self) -> Option<u64> {
        self.inner.process.resident_bytes()
    }

    /// Process start time in seconds since the Unix epoch (`process_start_time_seconds`).
    pub fn process_start_time_seconds(&self) -> f64 {
        self.inner.process.start_time_seconds()
    }
}

impl Inner {
    fn register(&self, r: &mut Registry) {
        let msg = |r: &mut Registry, name: &str, help: &str, f: &Family<KindPath, Counter>| {
            r.register(name, help, f.clone());
        };
        msg(
            r,
            "messages_sent",
            "Messages sent by actors on this node, by target actor kind and path (local or remote)",
            &self.messages_sent,
        );
        msg(
            r,
            "messages_received",
            "Messages delivered to actors on this node, by actor kind and path (local or remote sender)",
            &self.messages_received,
        );
        msg(
            r,
            "messages_forwarded",
            "Messages this node received for an actor it does not own and forwarded to the owner",
            &self.messages_forwarded,
        );
        msg(
            r,
            "messages_dropped",
            "Messages dropped (full mailbox, unknown kind, unreachable owner, expired deadline)",
            &self.messages_dropped,
        );
        r.register(
            "mailbox_depth",
            "Messages waiting in the mailboxes of live actors, by actor kind",
            self.mailbox_depth.clone(),
        );
        r.register_with_unit(
            "ask_duration",
            "Time from sending an ask to its reply or error, by target actor kind and outcome",
            Unit::Seconds,
            self.ask_duration.clone(),
        );
        r.register(
            "activations",
            "Virtual actor activations on this node, by actor kind",
            self.activations.clone(),
        );
        r.register(
            "passivations",
            "Virtual actor passivations on this node, by actor kind",
            self.passivations.clone(),
        );
        r.register(
            "live_actors",
            "Actors currently active on this node, by actor kind",
            self.live_actors.clone(),
        );
        r.register(
            "membership_size",
            "Members this node currently sees as alive or suspect, itself included",
            self.membership_size.clone(),
        );
        r.register(
            "quorum",
            "1 while this node reaches a majority of its cluster and may host virtual actors, 0 while it is fenced",
            self.quorum.clone(),
        );
        r.register(
            "quorum_losses",
            "Times this node lost its quorum and passivated every activation",
            self.quorum_losses.clone(),
        );
        r.register(
            "membership_changes",
            "Membership changes seen by this node, by event (joined, suspect, down, left)",
            self.membership_changes.clone(),
        );
        r.register_with_unit(
            "peer_rtt",
            "Last measured QUIC round-trip time to a peer node, by peer node name",
            Unit::Seconds,
            self.peer_rtt.clone(),
        );
        r.register_with_unit(
            "peer_sent",
            "Bytes sent to a peer node over QUIC, by peer node name",
            Unit::Bytes,
            self.peer_sent_bytes.clone(),
        );
        r.register_with_unit(
            "peer_received",
            "Bytes received from a peer node over QUIC, by peer node name",
            Unit::Bytes,
            self.peer_received_bytes.clone(),
        );
        r.register(
            "peer_lost_packets",
            "QUIC packets to a peer node declared lost and sent again, by peer node name \
             (a steady rise on a quiet network: datagrams dropped by a full UDP receive buffer)",
            self.peer_lost_packets.clone(),
        );
        r.register(
            "gossip_datagrams_accepted",
            "Gossip (SWIM) datagrams accepted: authentic, fresh and decoded",
            self.gossip_accepted.clone(),
        );
        r.register(
            "gossip_datagrams_rejected",
            "Gossip (SWIM) datagrams rejected, by reason",
            self.gossip_rejected.clone(),
        );
        r.register(
            "pubsub_delivered",
            "Pub-sub messages delivered to local subscribers",
            self.pubsub_delivered.clone(),
        );
        r.register(
            "pubsub_dropped",
            "Pub-sub messages dropped because a subscriber was full or gone",
            self.pubsub_dropped.clone(),
        );
        r.register(
            "idempotency_keys_handed_over",
            "Answered idempotency keys sent to the new owner of an actor this node handed over",
            self.idempotency_keys_handed_over.clone(),
        );
        r.register(
            "idempotency_keys_adopted",
            "Answered idempotency keys taken from the previous owner of an actor that moved here",
            self.idempotency_keys_adopted.clone(),
        );
        r.register(
            "build",
            "Build information of the running node",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }
}
