//! Envelopes: the messages nodes and clients exchange, one per frame (or many per batch).
//!
//! User payloads stay opaque: a [`MessageName`] plus the bytes its registered codec made.
//! Every request (tell, ask, forward, publish) carries [`RequestMeta`]: a deadline budget and
//! W3C trace context.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::{ActorId, IdError, MessageName, NodeId, RequestId, TopicId, check_name};

/// The wire versions this build speaks, oldest first.
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// A closed range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionRange {
    /// Oldest version spoken.
    pub min: u8,
    /// Newest version spoken.
    pub max: u8,
}

impl VersionRange {
    /// The newest version both ranges contain, if any.
    ///
    /// ```
    /// use cortex_protocol::VersionRange;
    /// let a = VersionRange { min: 1, max: 3 };
    /// assert_eq!(a.negotiate(&VersionRange { min: 2, max: 5 }), Some(3));
    /// assert_eq!(a.negotiate(&VersionRange { min: 4, max: 5 }), None);
    /// ```
    pub fn negotiate(&self, other: &VersionRange) -> Option<u8> {
        let lo = self.min.max(other.min);
        let hi = self.max.min(other.max);
        (lo <= hi).then_some(hi)
    }
}

/// W3C `traceparent` in binary form (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceParent {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte parent span id.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Longest `tracestate` accepted (the W3C limit).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// W3C trace context carried by every request.
///
/// `tracestate` is checked on decode (and by [`encode`](crate::encode)): more than
/// [`MAX_TRACESTATE_LEN`] bytes is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTraceContext")]
pub struct TraceContext {
    /// The caller's span, when the request is traced.
    pub parent: Option<TraceParent>,
    /// Vendor state, passed through untouched (at most 512 bytes).
    pub tracestate: String,
}

#[derive(Deserialize)]
#[serde(rename = "TraceContext")]
struct RawTraceContext {
    parent: Option<TraceParent>,
    tracestate: String,
}

impl TryFrom<RawTraceContext> for TraceContext {
    type Error = TraceStateTooLong;
    fn try_from(raw: RawTraceContext) -> Result<Self, TraceStateTooLong> {
        let ctx = TraceContext {
            parent: raw.parent,
            tracestate: raw.tracestate,
        };
        ctx.validate()?;
        Ok(ctx)
    }
}

/// A `tracestate` longer than [`MAX_TRACESTATE_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "tracestate is {len} bytes long; the W3C limit is {MAX_TRACESTATE_LEN}: drop list members from its end"
)]
pub struct TraceStateTooLong {
    /// Its length in bytes.
    pub len: usize,
}

impl TraceContext {
    /// Brings `tracestate` within [`MAX_TRACESTATE_LEN`] the W3C way: drops list members
    /// from the end (clearing it if even the first is too long). For state taken from an
    /// incoming HTTP header, before it is put on the wire.
    ///
    /// ```
    /// use cortex_protocol::{TraceContext, MAX_TRACESTATE_LEN};
    /// let mut ctx = TraceContext::default();
    /// ctx.tracestate = format!("a=1,b={}", "x".repeat(600));
    /// ctx.trim_tracestate();
    /// assert_eq!(ctx.tracestate, "a=1");
    /// assert!(ctx.validate().is_ok());
    /// ```
    pub fn trim_tracestate(&mut self) {
        while self.tracestate.len() > MAX_TRACESTATE_LEN {
            match self.tracestate.rfind(',') {
                Some(at) => self.tracestate.truncate(at),
                None => self.tracestate.clear(),
            }
        }
    }

    /// Checks the `tracestate` length, as the decoder will.
    ///
    /// # Errors
    /// [`TraceStateTooLong`] past [`MAX_TRACESTATE_LEN`] bytes.
    pub fn validate(&self) -> Result<(), TraceStateTooLong> {
        if self.tracestate.len() > MAX_TRACESTATE_LEN {
            return Err(TraceStateTooLong {
                len: self.tracestate.len(),
            });
        }
        Ok(())
    }
}

/// Metadata every request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Time left until the caller gives up, in microseconds, measured when the frame was
    /// written. Relative, so that nodes need no synchronised clocks; each hop subtracts the
    /// time it held the request. `0` means "no deadline" (tells only).
    pub budget_us: u64,
    /// Trace context.
    pub trace: TraceContext,
}

/// Where a message goes.
///
/// A system actor's `name` follows the actor-kind rules (1 to 64 of `[A-Za-z0-9._-]`),
/// checked on decode and by [`encode`](crate::encode); [`Target::system`] checks it up front.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTarget")]
pub enum Target {
    /// A virtual actor, placed by the ring.
    Virtual(ActorId),
    /// A plain spawned actor living on `node`, known there by `local`.
    Spawned {
        /// The node hosting it (incarnation included: a restarted node refuses it).
        node: NodeId,
        /// The node-local actor number.
        local: u64,
    },
    /// A system actor (`system/<name>`) on a given node.
    System {
        /// The node hosting it.
        node: NodeId,
        /// Its name, such as `metrics`.
        name: String,
    },
}

// Same variants in the same order as `Target`, so both have one wire layout.
#[derive(Deserialize)]
#[serde(rename = "Target")]
enum RawTarget {
    Virtual(ActorId),
    Spawned { node: NodeId, local: u64 },
    System { node: NodeId, name: String },
}

impl TryFrom<RawTarget> for Target {
    type Error = IdError;
    fn try_from(raw: RawTarget) -> Result<Self, IdError> {
        Ok(match raw {
            RawTarget::Virtual(id) => Target::Virtual(id),
            RawTarget::Spawned { node, local } => Target::Spawned { node, local },
            RawTarget::System { node, name } => Target::system(node, name)?,
        })
    }
}

/// Longest system actor name.
pub const MAX_SYSTEM_NAME_LEN: usize = 64;

impl Target {
    /// A system actor target, checking the name.
    ///
    /// ```
    /// use cortex_protocol::{NodeId, Target};
    /// let node = NodeId::new("cortex-0", 1).unwrap();
    /// assert!(Target::system(node.clone(), "metrics").is_ok());
    /// assert!(Target::system(node, "no/slash").is_err());
    /// ```
    ///
    /// # Errors
    /// [`IdError`] naming the first problem with `name`.
    pub fn system(node: NodeId, name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        check_name("system actor name", &name, MAX_SYSTEM_NAME_LEN)?;
        Ok(Target::System { node, name })
    }

    /// Checks what the type cannot: a system actor's name.
    ///
    /// # Errors
    /// [`IdError`] naming the first problem.
    pub fn validate(&self) -> Result<(), IdError> {
        match self {
            Target::System { name, .. } => {
                check_name("system actor name", name, MAX_SYSTEM_NAME_LEN)
            }
            Target::Virtual(_) | Target::Spawned { .. } => Ok(()),
        }
    }
}

/// Fire-and-forget message (at-most-once).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tell {
    /// Recipient.
    pub target: Target,
    /// Registered message-type name.
    pub message: MessageName,
    /// Encoded message.
    pub payload: Bytes,
    /// Deadline and trace.
    pub meta: RequestMeta,
    /// Ring epoch the sender routed under (0 when it had no view, such as a fresh client).
    pub epoch: u64,
}

/// Request expecting exactly one [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ask {
    /// Correlates the reply.
    pub request: RequestId,
    /// Recipient.
    pub target: Target,
    /// Registered message-type name.
    pub message: MessageName,
    /// Encoded message.
    pub payload: Bytes,
    /// Deadline and trace.
    pub meta: RequestMeta,
    /// Ring epoch the sender routed under.
    pub epoch: u64,
    /// When set, the host runs the ask at most once per key within its dedupe window and
    /// answers retries with the first reply.
    pub idempotency_key: Option<[u8; 16]>,
}

/// The answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    /// The ask this answers.
    pub request: RequestId,
    /// Outcome.
    pub result: ReplyResult,
}

/// Outcome of an ask.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplyResult {
    /// The handler's reply.
    Ok {
        /// Reply type name.
        message: MessageName,
        /// Encoded reply.
        payload: Bytes,
    },
    /// A typed failure.
    Err(RemoteError),
}

/// A failure that crossed the wire. The same codes surface locally and remotely.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human detail for logs; never parsed.
    pub detail: String,
}

/// Failure classes. Stable within a protocol version; new codes need a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The deadline passed.
    Timeout,
    /// No route to the owner (no members, connection lost).
    Unreachable,
    /// The actor kind is not registered on the owner.
    UnknownKind,
    /// The message name is not registered for that kind.
    UnknownMessage,
    /// The recipient refused the message (mailbox full, shutting down, circuit open).
    Rejected,
    /// The handler failed (panicked or returned an error).
    ActorFailed,
    /// The actor stopped before answering.
    ActorStopped,
    /// The payload did not decode.
    Decode,
    /// Forwarding exceeded the hop limit (a routing loop).
    HopLimit,
    /// The peer offers no protocol version this side speaks.
    VersionMismatch,
    /// Authentication or cluster-name check failed.
    Unauthorized,
    /// The peer broke the protocol (bad frame order, oversize frame).
    ProtocolViolation,
    /// The target node incarnation is gone.
    StaleIncarnation,
}

/// A request moved on by a node that is not the owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Forward {
    /// Hops taken so far; the receiver refuses at the configured limit.
    pub hops: u8,
    /// Node that first accepted the request.
    pub origin: NodeId,
    /// The forwarded request.
    pub body: ForwardBody,
}

/// What a [`Forward`] carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ForwardBody {
    /// A tell.
    Tell(Tell),
    /// An ask; the reply goes back along the connection it arrived on.
    Ask(Ask),
}

/// A pub-sub message for every subscriber of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Publish {
    /// The topic.
    pub topic: TopicId,
    /// Registered message-type name.
    pub message: MessageName,
    /// Encoded message.
    pub payload: Bytes,
    /// Deadline and trace.
    pub meta: RequestMeta,
    /// Publisher-chosen id, unique per publisher, so receivers can drop duplicates.
    pub publish_id: u64,
}

/// A client asks the node it is connected to for a topic's messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subscribe {
    /// Client-chosen subscription number, unique on its connection.
    pub subscription: u64,
    /// The topic.
    pub topic: TopicId,
}

/// Ends a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// The subscription number.
    pub subscription: u64,
}

/// A topic message delivered to a client subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delivery {
    /// The subscription it is for.
    pub subscription: u64,
    /// The published message.
    pub publish: Publish,
}

/// A member as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Identity.
    pub node: NodeId,
    /// Where to reach it over QUIC.
    pub quic_addr: SocketAddr,
    /// Its HTTP endpoint.
    pub http_addr: SocketAddr,
    /// State as the sender sees it.
    pub state: MemberState,
    /// Roles (free-form labels).
    pub roles: Vec<String>,
}

/// Membership state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Alive and in the ring.
    Up,
    /// Suspected: still in the ring until declared down.
    Suspect,
    /// Declared failed.
    Down,
    /// Left gracefully.
    Left,
}

/// The full topology, sent to a client after its handshake and whenever it asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopologySnapshot {
    /// Ring epoch this view belongs to.
    pub epoch: u64,
    /// Virtual nodes per member, so the client builds the same ring.
    pub vnodes: u32,
    /// Members (only `Up` and `Suspect` ones own ids).
    pub members: Vec<MemberInfo>,
}

/// An incremental topology change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopologyUpdate {
    /// The epoch after applying `changes`.
    pub epoch: u64,
    /// The changes, in order.
    pub changes: Vec<MemberChange>,
}

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberChange {
    /// A member joined or changed state or addresses.
    Upsert(MemberInfo),
    /// A member is gone (down or left).
    Removed(NodeId),
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerIdentity {
    /// A cluster member.
    Node(NodeId),
    /// An SDK client, never a member.
    Client {
        /// A name for logs.
        name: String,
    },
}

/// Feature bit: the sender accepts [`Frame::Batch`].
pub const FEATURE_BATCH: u64 = 1 << 0;
/// Feature bit: the sender wants topology updates (clients).
pub const FEATURE_TOPOLOGY: u64 = 1 << 1;
/// Feature bit: the sender writes its replies on a stream of their own (SPEC.md section 1),
/// when both sides announce it.
pub const FEATURE_REPLY_LANE: u64 = 1 << 2;

/// First frame on every connection, from the dialer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hello {
    /// Versions the dialer speaks.
    pub versions: VersionRange,
    /// Cluster name; must match.
    pub cluster: String,
    /// Dialer identity.
    pub identity: PeerIdentity,
    /// Feature bits (`FEATURE_*`).
    pub features: u64,
    /// Bearer token for clients without a certificate.
    pub token: Option<String>,
}

/// The acceptor's answer to a [`Hello`] it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Welcome {
    /// The version chosen for the connection.
    pub version: u8,
    /// Acceptor identity.
    pub node: NodeId,
    /// Feature bits both sides support.
    pub features: u64,
}

/// An error that closes a handshake or reports a connection-level problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human detail.
    pub detail: String,
    /// The versions this side speaks (always set on [`ErrorCode::VersionMismatch`]).
    pub supported: Option<VersionRange>,
}

/// Liveness and round-trip probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
}

/// Answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// Every envelope kind. The kind byte of a frame selects the variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Envelope {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`ErrorFrame`].
    Error(ErrorFrame),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`Tell`].
    Tell(Tell),
    /// See [`Ask`].
    Ask(Ask),
    /// See [`Reply`].
    Reply(Reply),
    /// See [`Forward`].
    Forward(Forward),
    /// See [`Publish`].
    Publish(Publish),
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// See [`Unsubscribe`].
    Unsubscribe(Unsubscribe),
    /// See [`Delivery`].
    Delivery(Delivery),
    /// See [`TopologySnapshot`].
    TopologySnapshot(TopologySnapshot),
    /// See [`TopologyUpdate`].
    TopologyUpdate(TopologyUpdate),
}

/// A decoded frame: one envelope, or a batch of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(
    clippy::large_enum_variant,
    reason = "a frame is built once per read and handed on by value; boxing the single case would cost an allocation per frame on the hot path"
)]
pub enum Frame {
    /// One envelope.
    Single(Envelope),
    /// Many small envelopes coalesced into one frame (never handshake envelopes).
    Batch(Vec<Envelope>),
}
