//! Authenticated gossip datagrams.
//!
//! Every UDP datagram of the membership protocol is
//!
//! ```text
//! magic "CS" (2) | version 1 (1) | kind (1) | sender (8, BE) | counter (8, BE) | payload | tag (32)
//! ```
//!
//! `tag` is HMAC-SHA256 over everything before it, keyed with a key derived by HKDF-SHA256
//! from the cluster secret and the cluster name. The payload is authenticated, not encrypted.
//!
//! **Replay protection** (sender id + monotonic counter, bounded by a clock window):
//! - `sender` is derived from the sender's [`NodeId`] (name and incarnation), `counter` is the
//!   sender's wall clock in microseconds, forced strictly increasing per sender. Counters are
//!   therefore unique per sender even across restarts of the same incarnation.
//! - A receiver keeps, per sender, the last [`WINDOW`] counters it accepted plus a floor
//!   (the newest counter that fell out of the window): a counter at or below the floor, or one
//!   already seen, is a replay. Reordering deeper than [`WINDOW`] datagrams is refused too.
//! - Counters more than `max_skew` away from the receiver's clock are refused as stale. This is
//!   what keeps the per-sender table bounded: an entry idle for `2 * max_skew` can be
//!   forgotten, because anything it could still catch is stale by then. So the cluster's
//!   clocks must agree within `max_skew` (60 s by default; run NTP).
//!
//! Every refusal is counted by reason ([`MembershipCounters`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cortex_protocol::NodeId;
use ring::{digest, hkdf, hmac};

/// The two bytes every gossip datagram starts with.
pub(crate) const MAGIC: [u8; 2] = *b"CS";
/// The datagram format version this build speaks.
pub const DATAGRAM_VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 2 + 1 + 1 + 8 + 8;
/// Bytes of the trailing tag.
pub(crate) const TAG_LEN: usize = 32;
/// Bytes the envelope adds to a payload.
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest datagram sent or accepted (below a 1500-byte Ethernet MTU with IP/UDP headers).
pub const MAX_DATAGRAM: usize = 1400;
/// Counters remembered per sender.
pub(crate) const WINDOW: usize = 64;
/// Senders remembered at once.
pub(crate) const MAX_SENDERS: usize = 4096;
/// Shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A foca packet.
    Swim = 0,
    /// "Please announce to me": payload is the sender's postcard-encoded identity.
    Join = 1,
    /// "I am leaving now": payload is the sender's postcard-encoded identity.
    Leave = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Swim),
            1 => Some(Self::Join),
            2 => Some(Self::Leave),
            _ => None,
        }
    }
}

/// Why an incoming datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Shorter than the envelope.
    Truncated,
    /// Longer than [`MAX_DATAGRAM`].
    TooLarge,
    /// Not a Cortex gossip datagram (wrong magic bytes).
    BadMagic,
    /// A datagram version this build does not speak (upgrade the older node).
    UnsupportedVersion,
    /// Tag mismatch: forged, corrupted, or sent with another cluster secret or name.
    BadTag,
    /// Authentic, but of a kind this build does not know.
    UnknownKind,
    /// Counter too far from the local clock: an old replay, or clocks out of sync.
    Stale,
    /// A counter already seen (or older than the replay window) from this sender.
    Replayed,
    /// The replay table is full of active senders.
    TooManySenders,
    /// Authentic, but the payload did not decode or was refused by the SWIM state machine.
    Malformed,
}

/// Datagram counters (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipCounters {
    /// Datagrams accepted (authentic, fresh, decoded).
    pub accepted: u64,
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams that could not be sent (socket errors).
    pub send_errors: u64,
    /// Refusals by reason.
    pub rejected: RejectCounts,
}

/// Refusals by reason (see [`RejectReason`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectCounts {
    /// [`RejectReason::Truncated`].
    pub truncated: u64,
    /// [`RejectReason::TooLarge`].
    pub too_large: u64,
    /// [`RejectReason::BadMagic`].
    pub bad_magic: u64,
    /// [`RejectReason::UnsupportedVersion`].
    pub unsupported_version: u64,
    /// [`RejectReason::BadTag`].
    pub bad_tag: u64,
    /// [`RejectReason::UnknownKind`].
    pub unknown_kind: u64,
    /// [`RejectReason::Stale`].
    pub stale: u64,
    /// [`RejectReason::Replayed`].
    pub replayed: u64,
    /// [`RejectReason::TooManySenders`].
    pub too_many_senders: u64,
    /// [`RejectReason::Malformed`].
    pub malformed: u64,
}

impl RejectCounts {
    /// The count for one reason.
    pub fn get(&self, reason: RejectReason) -> u64 {
        match reason {
            RejectReason::Truncated => self.truncated,
            RejectReason::TooLarge => self.too_large,
            RejectReason::BadMagic => self.bad_magic,
            RejectReason::UnsupportedVersion => self.unsupported_version,
            RejectReason::BadTag => self.bad_tag,
            RejectReason::UnknownKind => self.unknown_kind,
            RejectReason::Stale => self.stale,
            RejectReason::Replayed => self.replayed,
            RejectReason::TooManySenders => self.too_many_senders,
            RejectReason::Malformed => self.malformed,
        }
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.truncated
            + self.too_large
            + self.bad_magic
            + self.unsupported_version
            + self.bad_tag
            + self.unknown_kind
            + self.stale
            + self.replayed
            + self.too_many_senders
            + self.malformed
    }
}

const REASONS: usize = 10;

fn reason_index(r: RejectReason) -> usize {
    match r {
        RejectReason::Truncated => 0,
        RejectReason::TooLarge => 1,
        RejectReason::BadMagic => 2,
        RejectReason::UnsupportedVersion => 3,
        RejectReason::BadTag => 4,
        RejectReason::UnknownKind => 5,
        RejectReason::Stale => 6,
        RejectReason::Replayed => 7,
        RejectReason::TooManySenders => 8,
        RejectReason::Malformed => 9,
    }
}

/// Live counters, shared between the core (which counts) and handles (which read).
#[derive(Debug, Default)]
pub(crate) struct CounterCells {
    accepted: AtomicU64,
    sent: AtomicU64,
    send_errors: AtomicU64,
    rejected: [AtomicU64; REASONS],
}

impl CounterCells {
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn rejected(&self, reason: RejectReason) {
        self.rejected[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> MembershipCounters {
        let r = |reason| self.rejected[reason_index(reason)].load(Ordering::Relaxed);
        MembershipCounters {
            accepted: self.accepted.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            rejected: RejectCounts {
                truncated: r(RejectReason::Truncated),
                too_large: r(RejectReason::TooLarge),
                bad_magic: r(RejectReason::BadMagic),
                unsupported_version: r(RejectReason::UnsupportedVersion),
                bad_tag: r(RejectReason::BadTag),
                unknown_kind: r(RejectReason::UnknownKind),
                stale: r(RejectReason::Stale),
                replayed: r(RejectReason::Replayed),
                too_many_senders: r(RejectReason::TooManySenders),
                malformed: r(RejectReason::Malformed),
            },
        }
    }
}

/// The 64-bit sender id of a node: the first 8 bytes of SHA-256 over its name and incarnation.
pub(crate) fn sender_id(id: &NodeId) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"cortex-gossip-sender\0");
    ctx.update(id.name().as_bytes());
    ctx.update(&[0]);
    ctx.update(&id.incarnation().to_be_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

fn micros(wall: SystemTime) -> u64 {
    // Before 1970 means a broken clock; 0 makes every datagram stale, which the counters show.
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Window {
    floor: u64,
    seen: BTreeSet<u64>,
    last_active_us: u64,
}

/// Seals outgoing and opens incoming datagrams for one node.
pub(crate) struct Authenticator {
    key: hmac::Key,
    sender: u64,
    last_counter: u64,
    max_skew_us: u64,
    windows: BTreeMap<u64, Window>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("sender", &self.sender)
            .field("senders_tracked", &self.windows.len())
            .finish_non_exhaustive()
    }
}

/// Derives the gossip HMAC key of a cluster.
fn derive_key(secret: &[u8], cluster: &str) -> hmac::Key {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"cortex-gossip-v1");
    let prk = salt.extract(secret);
    let info: [&[u8]; 3] = [b"cortex swim hmac-sha256", b"\0", cluster.as_bytes()];
    // `expand` fails only when the output is longer than 255 hash blocks; an HMAC-SHA256 key
    // is one block, and `fill`/`From<Okm>` therefore cannot fail either.
    match prk.expand(&info, hmac::HMAC_SHA256) {
        Ok(okm) => hmac::Key::from(okm),
        Err(_) => hmac::Key::new(hmac::HMAC_SHA256, secret),
    }
}

impl Authenticator {
    pub(crate) fn new(secret: &[u8], cluster: &str, local: &NodeId, max_skew: Duration) -> Self {
        Self {
            key: derive_key(secret, cluster),
            sender: sender_id(local),
            last_counter: 0,
            max_skew_us: u64::try_from(max_skew.as_micros()).unwrap_or(u64::MAX),
            windows: BTreeMap::new(),
        }
    }

    /// Switches the sender id after the local identity changed (renewal).
    pub(crate) fn set_local(&mut self, local: &NodeId) {
        self.sender = sender_id(local);
    }

    /// Builds a datagram around `payload`. The caller keeps payloads within
    /// `MAX_DATAGRAM - OVERHEAD` bytes.
    pub(crate) fn seal(&mut self, kind: Kind, payload: &[u8], wall: SystemTime) -> Vec<u8> {
        let counter = micros(wall).max(self.last_counter.saturating_add(1));
        self.last_counter = counter;
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(DATAGRAM_VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(payload);
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Checks a datagram and returns its kind and payload. Refusals are *not* counted here:
    /// the caller counts them (so it can also count payload-level refusals in one place).
    pub(crate) fn open<'a>(
        &mut self,
        bytes: &'a [u8],
        wall: SystemTime,
    ) -> Result<(Kind, &'a [u8]), RejectReason> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(RejectReason::TooLarge);
        }
        if bytes.len() < OVERHEAD {
            return Err(RejectReason::Truncated);
        }
        if bytes[..2] != MAGIC {
            return Err(RejectReason::BadMagic);
        }
        if bytes[2] != DATAGRAM_VERSION {
            return Err(RejectReason::UnsupportedVersion);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        hmac::verify(&self.key, body, tag).map_err(|_| RejectReason::BadTag)?;
        let kind = Kind::from_byte(body[3]).ok_or(RejectReason::UnknownKind)?;
        let sender = u64::from_be_bytes(take8(&body[4..12]));
        let counter = u64::from_be_bytes(take8(&body[12..20]));
        self.admit(sender, counter, micros(wall))?;
        Ok((kind, &body[HEADER_LEN..]))
    }

    fn admit(&mut self, sender: u64, counter: u64, now_us: u64) -> Result<(), RejectReason> {
        if counter.saturating_add(self.max_skew_us) < now_us
            || counter > now_us.saturating_add(self.max_skew_us)
        {
            return Err(RejectReason::Stale);
        }
        if !self.windows.contains_key(&sender) {
            if self.windows.len() >= MAX_SENDERS {
                // Only entries idle for 2 * max_skew may go: anything they could still refuse
                // is stale by now (see the module docs).
                let idle_before = now_us.saturating_sub(self.max_skew_us.saturating_mul(2));
                self.windows.retain(|_, w| w.last_active_us >= idle_before);
                if self.windows.len() >= MAX_SENDERS {
                    return Err(RejectReason::TooManySenders);
                }
            }
            self.windows.insert(
                sender,
                Window {
                    floor: 0,
                    seen: BTreeSet::new(),
                    last_active_us: now_us,
                },
            );
        }
        let Some(w) = self.windows.get_mut(&sender) else {
            // Inserted just above.
            return Err(RejectReason::TooManySenders);
        };
        if counter <= w.floor || w.seen.contains(&counter) {
            return Err(RejectReason::Replayed);
        }
        w.seen.insert(counter);
        if w.seen.len() > WINDOW
            && let Some(oldest) = w.seen.pop_first()
        {
            w.floor = oldest;
        }
        w.last_active_us = now_us;
        Ok(())
    }
}

fn take8(s: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(s);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name, 1).unwrap()
    }

    fn pair() -> (Authenticator, Authenticator) {
        let skew = Duration::from_secs(60);
        (
            Authenticator::new(b"0123456789abcdef", "c", &node("a"), skew),
            Authenticator::new(b"0123456789abcdef", "c", &node("b"), skew),
        )
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn round_trip() {
        let (mut a, mut b) = pair();
        let d = a.seal(Kind::Join, b"hello", t(0));
        assert_eq!(d.len(), OVERHEAD + 5);
        assert_eq!(b.open(&d, t(0)), Ok((Kind::Join, &b"hello"[..])));
    }

    #[test]
    fn forged_truncated_wrong_version_and_key_are_refused() {
        let (mut a, mut b) = pair();
        let d = a.seal(Kind::Swim, b"payload", t(0));

        let mut forged = d.clone();
        forged[HEADER_LEN] ^= 1;
        assert_eq!(b.open(&forged, t(0)), Err(RejectReason::BadTag));
        let mut forged_tag = d.clone();
        let last = forged_tag.len() - 1;
        forged_tag[last] ^= 0x80;
        assert_eq!(b.open(&forged_tag, t(0)), Err(RejectReason::BadTag));

        assert_eq!(
            b.open(&d[..OVERHEAD - 1], t(0)),
            Err(RejectReason::Truncated)
        );
        assert_eq!(b.open(&d[..d.len() - 1], t(0)), Err(RejectReason::BadTag));

        let mut v2 = d.clone();
        v2[2] = 2;
        assert_eq!(b.open(&v2, t(0)), Err(RejectReason::UnsupportedVersion));
        let mut magic = d.clone();
        magic[0] = b'X';
        assert_eq!(b.open(&magic, t(0)), Err(RejectReason::BadMagic));
        assert_eq!(
            b.open(&vec![0; MAX_DATAGRAM + 1], t(0)),
            Err(RejectReason::TooLarge)
        );

        let skew = Duration::from_secs(60);
        let mut other_key = Authenticator::new(b"another-secret-xx", "c", &node("b"), skew);
        assert_eq!(other_key.open(&d, t(0)), Err(RejectReason::BadTag));
        let mut other_cluster = Authenticator::new(b"0123456789abcdef", "other", &node("b"), skew);
        assert_eq!(other_cluster.open(&d, t(0)), Err(RejectReason::BadTag));

        // The genuine datagram still passes after all that.
        assert!(b.open(&d, t(0)).is_ok());
    }

    #[test]
    fn replays_and_stale_datagrams_are_refused() {
        let (mut a, mut b) = pair();
        let first = a.seal(Kind::Swim, b"1", t(0));
        let second = a.seal(Kind::Swim, b"2", t(0));
        // Reordering within the window is fine.
        assert!(b.open(&second, t(0)).is_ok());
        assert!(b.open(&first, t(0)).is_ok());
        assert_eq!(b.open(&first, t(0)), Err(RejectReason::Replayed));
        assert_eq!(b.open(&second, t(1)), Err(RejectReason::Replayed));

        // Older than the window: refused even though never seen.
        let old = a.seal(Kind::Swim, b"old", t(0));
        for _ in 0..WINDOW + 1 {
            let d = a.seal(Kind::Swim, b"x", t(0));
            assert!(b.open(&d, t(0)).is_ok());
        }
        assert_eq!(b.open(&old, t(0)), Err(RejectReason::Replayed));

        // Outside the clock window either way.
        let d = a.seal(Kind::Swim, b"s", t(100));
        assert_eq!(b.open(&d, t(0)), Err(RejectReason::Stale));
        assert_eq!(b.open(&d, t(200)), Err(RejectReason::Stale));
        assert!(b.open(&d, t(130)).is_ok());
    }

    #[test]
    fn counters_snapshot_by_reason() {
        let c = CounterCells::default();
        c.rejected(RejectReason::Replayed);
        c.rejected(RejectReason::Replayed);
        c.rejected(RejectReason::BadTag);
        c.accepted();
        let s = c.snapshot();
        assert_eq!(s.rejected.get(RejectReason::Replayed), 2);
        assert_eq!(s.rejected.bad_tag, 1);
        assert_eq!(s.rejected.total(), 3);
        assert_eq!(s.accepted, 1);
    }
}
