//! [`KindMetrics`]: the per-kind handles resolved once, for hot paths.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::NodeMetrics;
use super::labels::{KindOnly, KindOutcome, KindPath, Label, Outcome, Path};

/// Every per-kind metric of one actor kind, looked up once.
///
/// Recording through it is a plain atomic update: no label hashing, no lock. It records into the
/// same series as the [`NodeMetrics`] methods of the same name. Cheap to clone.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cortex_node::metrics::NodeMetrics;
///
/// let metrics = NodeMetrics::new("node-a");
/// let orders = metrics.kind("order");
/// orders.received(false);
/// orders.ask(true, Duration::from_millis(2));
/// assert_eq!(orders.kind(), "order");
/// assert!(metrics.encode().contains(r#"cortex_messages_received_total{node="node-a",kind="order",path="local"} 1"#));
/// ```
#[derive(Clone, Debug)]
pub struct KindMetrics {
    kind: Label,
    /// Indexed by `remote as usize`.
    sent: [Counter; 2],
    received: [Counter; 2],
    forwarded: [Counter; 2],
    dropped: [Counter; 2],
    mailbox_depth: Gauge,
    activations: Counter,
    passivations: Counter,
    live: Gauge,
    ask_ok: Histogram,
    ask_error: Histogram,
}

impl KindMetrics {
    pub(super) fn new(m: &NodeMetrics, kind: Label) -> Self {
        let i = &m.inner;
        let pair = |f: &prometheus_client::metrics::family::Family<KindPath, Counter>| {
            [Path::Local, Path::Remote].map(|path| {
                f.get_or_create_owned(&KindPath {
                    kind: kind.clone(),
                    path,
                })
            })
        };
        let only = KindOnly { kind: kind.clone() };
        let outcome = |outcome| {
            i.ask_duration.get_or_create_owned(&KindOutcome {
                kind: kind.clone(),
                outcome,
            })
        };
        Self {
            sent: pair(&i.messages_sent),
            received: pair(&i.messages_received),
            forwarded: pair(&i.messages_forwarded),
            dropped: pair(&i.messages_dropped),
            mailbox_depth: i.mailbox_depth.get_or_create_owned(&only),
            activations: i.activations.get_or_create_owned(&only),
            passivations: i.passivations.get_or_create_owned(&only),
            live: i.live_actors.get_or_create_owned(&only),
            ask_ok: outcome(Outcome::Ok),
            ask_error: outcome(Outcome::Error),
            kind,
        }
    }

    /// The label these handles record under: the kind itself, or `"other"` when the kind did
    /// not fit under the cap.
    pub fn kind(&self) -> &str {
        self.kind.as_str()
    }

    /// See [`NodeMetrics::message_sent`].
    pub fn sent(&self, remote: bool) {
        self.sent[usize::from(remote)].inc();
    }

    /// See [`NodeMetrics::message_received`].
    pub fn received(&self, remote: bool) {
        self.received[usize::from(remote)].inc();
    }

    /// See [`NodeMetrics::message_forwarded`].
    pub fn forwarded(&self, remote: bool) {
        self.forwarded[usize::from(remote)].inc();
    }

    /// See [`NodeMetrics::message_dropped`].
    pub fn dropped(&self, remote: bool) {
        self.dropped[usize::from(remote)].inc();
    }

    /// See [`NodeMetrics::record_ask`].
    pub fn ask(&self, ok: bool, elapsed: Duration) {
        let h = if ok { &self.ask_ok } else { &self.ask_error };
        h.observe(elapsed.as_secs_f64());
    }

    /// See [`NodeMetrics::set_mailbox_depth`].
    pub fn set_mailbox_depth(&self, depth: i64) {
        self.mailbox_depth.set(depth);
    }

    /// See [`NodeMetrics::add_mailbox_depth`].
    pub fn add_mailbox_depth(&self, delta: i64) {
        self.mailbox_depth.inc_by(delta);
    }

    /// See [`NodeMetrics::actor_activated`].
    pub fn activated(&self) {
        self.activations.inc();
        self.live.inc();
    }

    /// See [`NodeMetrics::actor_passivated`].
    pub fn passivated(&self) {
        self.passivations.inc();
        self.live.dec();
    }
}

/// How many kinds get lock-free handles; later ones take the labelled path.
const HOT_KINDS: usize = 32;

/// [`KindMetrics`] of registered kinds, found by a scan of a few short names: no hashing and
/// no lock on the read side, which every message takes (label maps behind a lock cost ~3% of
/// a remote tell). Slots are only ever added; kind labels are never forgotten.
#[derive(Debug, Default)]
pub(super) struct HotKinds {
    slots: [OnceLock<(Box<str>, KindMetrics)>; HOT_KINDS],
    len: AtomicUsize,
    add: Mutex<()>,
}

impl HotKinds {
    pub(super) fn get(&self, kind: &str) -> Option<&KindMetrics> {
        let len = self.len.load(Ordering::Acquire);
        self.slots[..len.min(HOT_KINDS)]
            .iter()
            .filter_map(OnceLock::get)
            .find(|(k, _)| &**k == kind)
            .map(|(_, m)| m)
    }

    /// Adds `kind` unless present or full.
    pub(super) fn add(&self, kind: &str, make: impl FnOnce() -> KindMetrics) {
        let _one_writer = self.add.lock();
        let len = self.len.load(Ordering::Acquire);
        if len >= HOT_KINDS || self.get(kind).is_some() {
            return;
        }
        if self.slots[len].set((Box::from(kind), make())).is_ok() {
            self.len.store(len + 1, Ordering::Release);
        }
    }
}
