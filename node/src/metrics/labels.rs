//! Label sets and the bounded label interner that keeps series counts finite.
//!
//! Every label value that comes from outside the code (an actor kind, a peer name, a gossip
//! reject reason) goes through a [`BoundedLabels`] or a fixed list first, so a hostile or buggy
//! caller can never grow the number of series past the documented caps.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// The label value used once a bounded label set is full, or for a value that is not a valid name.
pub const OTHER: &str = "other";
/// The kind label of system actors (`system/<name>`), always admitted.
pub const SYSTEM: &str = "system";
/// Longest label value admitted; longer ones become [`OTHER`] (actor kinds and node names are
/// at most 64 bytes on the wire, see `cortex_protocol::ids`).
const MAX_VALUE_LEN: usize = 64;

/// A label value interned once and shared by every series that carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Label(Arc<str>);

impl Label {
    pub(crate) fn new(s: &str) -> Self {
        Self(Arc::from(s))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Whether a message stayed on this node or crossed the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Path {
    Local,
    Remote,
}

impl Path {
    pub(crate) fn from_remote(remote: bool) -> Self {
        if remote { Self::Remote } else { Self::Local }
    }
}

impl EncodeLabelValue for Path {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Local => "local",
            Self::Remote => "remote",
        })
    }
}

/// How an ask ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Ok,
    Error,
}

impl Outcome {
    pub(crate) fn from_ok(ok: bool) -> Self {
        if ok { Self::Ok } else { Self::Error }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Ok => "ok",
            Self::Error => "error",
        })
    }
}

/// A membership change as seen by this node, the `event` label of
/// `cortex_membership_changes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A member became active (first seen, or came back from suspect).
    Joined,
    /// A member stopped answering probes and is suspected.
    Suspect,
    /// A member was declared down.
    Down,
    /// A member left gracefully.
    Left,
}

impl MembershipEvent {
    /// Every event, in label order.
    pub const ALL: [MembershipEvent; 4] = [Self::Joined, Self::Suspect, Self::Down, Self::Left];

    /// The label value: `joined`, `suspect`, `down` or `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Left => "left",
        }
    }
}

impl EncodeLabelValue for MembershipEvent {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The reasons a gossip datagram can be rejected for; anything else is counted as [`OTHER`].
/// These are the snake_case names of the membership layer's reject reasons.
pub const GOSSIP_REJECT_REASONS: [&str; 10] = [
    "truncated",
    "too_large",
    "bad_magic",
    "unsupported_version",
    "bad_tag",
    "unknown_kind",
    "stale",
    "replayed",
    "too_many_senders",
    "malformed",
];

/// Maps a reject reason to its label value: itself when listed, [`OTHER`] otherwise.
pub(crate) fn gossip_reason(reason: &str) -> &'static str {
    GOSSIP_REJECT_REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or(OTHER)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct KindPath {
    pub(crate) kind: Label,
    pub(crate) path: Path,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct KindOnly {
    pub(crate) kind: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct KindOutcome {
    pub(crate) kind: Label,
    pub(crate) outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct EventOnly {
    pub(crate) event: MembershipEvent,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PeerOnly {
    pub(crate) peer: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReasonOnly {
    pub(crate) reason: &'static str,
}

/// A set of label values that admits new values first come, first served, up to `cap`
/// distinct values (the reserved ones included), and maps everything beyond to [`OTHER`].
#[derive(Debug)]
pub(crate) struct BoundedLabels {
    what: &'static str,
    cap: usize,
    other: Label,
    known: RwLock<HashMap<Box<str>, Label>>,
    warned: AtomicBool,
}

impl BoundedLabels {
    /// `reserved` values are admitted up front; [`OTHER`] is always one of them.
    pub(crate) fn new(what: &'static str, cap: usize, reserved: &[&str]) -> Self {
        let other = Label::new(OTHER);
        let mut known = HashMap::new();
        known.insert(Box::from(OTHER), other.clone());
        for r in reserved {
            known.insert(Box::from(*r), Label::new(r));
        }
        Self {
            what,
            cap: cap.max(known.len()),
            other,
            known: RwLock::new(known),
            warned: AtomicBool::new(false),
        }
    }

    /// The label for `value`: itself if admitted (now or before), [`OTHER`] if the set is full
    /// or the value is not a name (1 to 64 of `[A-Za-z0-9._-]`).
    pub(crate) fn resolve(&self, value: &str) -> Label {
        if let Some(l) = self.known.read().get(value) {
            return l.clone();
        }
        if !is_name(value) {
            return self.other.clone();
        }
        let mut known = self.known.write();
        if let Some(l) = known.get(value) {
            return l.clone();
        }
        if known.len() >= self.cap {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    what = self.what,
                    cap = self.cap,
                    value,
                    "metric label set is full; further values are counted as \"other\""
                );
            }
            return self.other.clone();
        }
        let label = Label::new(value);
        known.insert(Box::from(value), label.clone());
        label
    }

    /// Forgets `value` so that its slot can be reused; returns its label if it was admitted.
    /// Reserved values other than [`OTHER`] can be forgotten too.
    pub(crate) fn forget(&self, value: &str) -> Option<Label> {
        if value == OTHER {
            return None;
        }
        self.known.write().remove(value)
    }

    /// Every admitted label, [`OTHER`] included, in no particular order.
    pub(crate) fn labels(&self) -> Vec<Label> {
        self.known.read().values().cloned().collect()
    }

    /// How many distinct values are admitted, [`OTHER`] included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.known.read().len()
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VALUE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_labels_cap_and_fallback() {
        let set = BoundedLabels::new("kind", 4, &[SYSTEM]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.resolve("order").as_str(), "order");
        assert_eq!(set.resolve("cart").as_str(), "cart");
        assert_eq!(set.len(), 4);
        assert_eq!(
            set.resolve("late").as_str(),
            OTHER,
            "full set maps to other"
        );
        assert_eq!(
            set.resolve("order").as_str(),
            "order",
            "admitted stays admitted"
        );
        assert_eq!(set.resolve(SYSTEM).as_str(), SYSTEM);
        assert_eq!(set.len(), 4);
        assert!(set.forget("cart").is_some());
        assert_eq!(
            set.resolve("late").as_str(),
            "late",
            "a forgotten slot is reused"
        );
    }

    #[test]
    fn invalid_values_are_other() {
        let set = BoundedLabels::new("peer", 256, &[]);
        for bad in ["", "has space", "quote\"", "new\nline", &"x".repeat(65)] {
            assert_eq!(set.resolve(bad).as_str(), OTHER, "{bad:?}");
        }
        assert_eq!(set.len(), 1);
        assert_eq!(set.forget(OTHER), None, "other is permanent");
    }

    #[test]
    fn gossip_reasons_are_a_fixed_list() {
        assert_eq!(gossip_reason("bad_tag"), "bad_tag");
        assert_eq!(gossip_reason("anything else"), OTHER);
    }
}
