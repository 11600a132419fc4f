//! Shared by the integration tests: proptest strategies for every envelope, fixed sample
//! values for the golden vectors, and frame helpers.
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::Bytes;
use cortex_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------- ids

pub fn node_id() -> impl Strategy<Value = NodeId> {
    ("[A-Za-z0-9._-]{1,63}", any::<u64>()).prop_map(|(n, i)| NodeId::new(n, i).unwrap())
}

pub fn actor_id() -> impl Strategy<Value = ActorId> {
    ("[A-Za-z0-9._-]{1,64}", "[!-~]{1,256}").prop_map(|(k, v)| ActorId::new(k, v).unwrap())
}

pub fn message_name() -> impl Strategy<Value = MessageName> {
    "[A-Za-z0-9._:-]{1,128}".prop_map(|s| MessageName::new(s).unwrap())
}

pub fn topic_id() -> impl Strategy<Value = TopicId> {
    "[!-~]{1,256}".prop_map(|s| TopicId::new(s).unwrap())
}

pub fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        vec(any::<u8>(), 0..300).prop_map(Bytes::from),
    ]
}

/// Any text, Unicode included, for free-form fields.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z]{0,300}"]
}

// ---------------------------------------------------------------- envelope parts

pub fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        actor_id().prop_map(Target::Virtual),
        (node_id(), any::<u64>()).prop_map(|(node, local)| Target::Spawned { node, local }),
        (node_id(), "[A-Za-z0-9._-]{1,64}")
            .prop_map(|(node, name)| Target::system(node, name).unwrap()),
    ]
}

pub fn trace() -> impl Strategy<Value = TraceContext> {
    let parent = (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>()).prop_map(
        |(trace_id, span_id, flags)| TraceParent {
            trace_id,
            span_id,
            flags,
        },
    );
    (
        proptest::option::of(parent),
        prop_oneof!["[ -~]{0,40}", "[ -~]{500,512}"],
    )
        .prop_map(|(parent, tracestate)| TraceContext { parent, tracestate })
}

pub fn meta() -> impl Strategy<Value = RequestMeta> {
    (any::<u64>(), trace()).prop_map(|(budget_us, trace)| RequestMeta { budget_us, trace })
}

pub fn tell() -> impl Strategy<Value = Tell> {
    (target(), message_name(), payload(), meta(), any::<u64>()).prop_map(
        |(target, message, payload, meta, epoch)| Tell {
            target,
            message,
            payload,
            meta,
            epoch,
        },
    )
}

pub fn ask() -> impl Strategy<Value = Ask> {
    (
        any::<u64>(),
        target(),
        message_name(),
        payload(),
        meta(),
        any::<u64>(),
        any::<Option<[u8; 16]>>(),
    )
        .prop_map(
            |(request, target, message, payload, meta, epoch, idempotency_key)| Ask {
                request: RequestId(request),
                target,
                message,
                payload,
                meta,
                epoch,
                idempotency_key,
            },
        )
}

pub const ALL_CODES: [ErrorCode; 13] = [
    ErrorCode::Timeout,
    ErrorCode::Unreachable,
    ErrorCode::UnknownKind,
    ErrorCode::UnknownMessage,
    ErrorCode::Rejected,
    ErrorCode::ActorFailed,
    ErrorCode::ActorStopped,
    ErrorCode::Decode,
    ErrorCode::HopLimit,
    ErrorCode::VersionMismatch,
    ErrorCode::Unauthorized,
    ErrorCode::ProtocolViolation,
    ErrorCode::StaleIncarnation,
];

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(&ALL_CODES[..])
}

pub fn version_range() -> impl Strategy<Value = VersionRange> {
    (any::<u8>(), any::<u8>()).prop_map(|(min, max)| VersionRange { min, max })
}

pub fn reply() -> impl Strategy<Value = Reply> {
    let result = prop_oneof![
        (message_name(), payload())
            .prop_map(|(message, payload)| ReplyResult::Ok { message, payload }),
        (error_code(), text())
            .prop_map(|(code, detail)| ReplyResult::Err(RemoteError { code, detail })),
    ];
    (any::<u64>(), result).prop_map(|(r, result)| Reply {
        request: RequestId(r),
        result,
    })
}

pub fn forward() -> impl Strategy<Value = Forward> {
    let body = prop_oneof![
        tell().prop_map(ForwardBody::Tell),
        ask().prop_map(ForwardBody::Ask)
    ];
    (any::<u8>(), node_id(), body).prop_map(|(hops, origin, body)| Forward { hops, origin, body })
}

pub fn publish() -> impl Strategy<Value = Publish> {
    (topic_id(), message_name(), payload(), meta(), any::<u64>()).prop_map(
        |(topic, message, payload, meta, publish_id)| Publish {
            topic,
            message,
            payload,
            meta,
            publish_id,
        },
    )
}

/// IPv6 addresses carry only address and port on the wire (serde's compact form drops
/// flow info and scope id), so those are generated as zero.
pub fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

pub fn member_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        Just(MemberState::Up),
        Just(MemberState::Suspect),
        Just(MemberState::Down),
        Just(MemberState::Left),
    ]
}

pub fn member_info() -> impl Strategy<Value = MemberInfo> {
    (
        node_id(),
        socket_addr(),
        socket_addr(),
        member_state(),
        vec(text(), 0..4),
    )
        .prop_map(|(node, quic_addr, http_addr, state, roles)| MemberInfo {
            node,
            quic_addr,
            http_addr,
            state,
            roles,
        })
}

pub fn peer_identity() -> impl Strategy<Value = PeerIdentity> {
    prop_oneof![
        node_id().prop_map(PeerIdentity::Node),
        text().prop_map(|name| PeerIdentity::Client { name }),
    ]
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (
        version_range(),
        text(),
        peer_identity(),
        any::<u64>(),
        proptest::option::of(text()),
    )
        .prop_map(|(versions, cluster, identity, features, token)| Hello {
            versions,
            cluster,
            identity,
            features,
            token,
        })
}

pub fn welcome() -> impl Strategy<Value = Welcome> {
    (any::<u8>(), node_id(), any::<u64>()).prop_map(|(version, node, features)| Welcome {
        version,
        node,
        features,
    })
}

pub fn error_frame() -> impl Strategy<Value = ErrorFrame> {
    (error_code(), text(), proptest::option::of(version_range())).prop_map(
        |(code, detail, supported)| ErrorFrame {
            code,
            detail,
            supported,
        },
    )
}

pub fn delivery() -> impl Strategy<Value = Delivery> {
    (any::<u64>(), publish()).prop_map(|(subscription, publish)| Delivery {
        subscription,
        publish,
    })
}

pub fn topology_snapshot() -> impl Strategy<Value = TopologySnapshot> {
    (any::<u64>(), any::<u32>(), vec(member_info(), 0..5)).prop_map(|(epoch, vnodes, members)| {
        TopologySnapshot {
            epoch,
            vnodes,
            members,
        }
    })
}

pub fn topology_update() -> impl Strategy<Value = TopologyUpdate> {
    let change = prop_oneof![
        member_info().prop_map(MemberChange::Upsert),
        node_id().prop_map(MemberChange::Removed),
    ];
    (any::<u64>(), vec(change, 0..5)).prop_map(|(epoch, changes)| TopologyUpdate { epoch, changes })
}

/// Every envelope that may travel in a batch.
pub fn batchable_envelope() -> impl Strategy<Value = Envelope> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| Envelope::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Envelope::Pong(Pong { nonce })),
        tell().prop_map(Envelope::Tell),
        ask().prop_map(Envelope::Ask),
        reply().prop_map(Envelope::Reply),
        forward().prop_map(Envelope::Forward),
        publish().prop_map(Envelope::Publish),
        (any::<u64>(), topic_id()).prop_map(|(subscription, topic)| Envelope::Subscribe(
            Subscribe {
                subscription,
                topic
            }
        )),
        any::<u64>().prop_map(|subscription| Envelope::Unsubscribe(Unsubscribe { subscription })),
        delivery().prop_map(Envelope::Delivery),
        topology_snapshot().prop_map(Envelope::TopologySnapshot),
        topology_update().prop_map(Envelope::TopologyUpdate),
    ]
}

/// Every envelope.
pub fn envelope() -> impl Strategy<Value = Envelope> {
    prop_oneof![
        1 => hello().prop_map(Envelope::Hello),
        1 => welcome().prop_map(Envelope::Welcome),
        1 => error_frame().prop_map(Envelope::Error),
        12 => batchable_envelope(),
    ]
}

// ---------------------------------------------------------------- helpers

pub fn frame_of(env: &Envelope) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(env, &mut buf).unwrap();
    buf
}

pub fn batch_of(envs: &[Envelope]) -> Vec<u8> {
    let mut w = BatchWriter::new();
    for e in envs {
        w.push(e).unwrap();
    }
    let mut buf = Vec::new();
    w.finish(&mut buf).unwrap();
    buf
}

/// A frame with the given header bytes around `body` (length computed).
pub fn raw_frame(version: u8, kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 2).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&[version, kind]);
    out.extend_from_slice(body);
    out
}

/// Decodes a whole buffer that must hold exactly one frame.
pub fn decode_all(buf: &[u8]) -> Result<Option<Frame>, DecodeError> {
    Ok(FrameDecoder::default().decode(buf)?.map(|(f, used)| {
        assert_eq!(used, buf.len(), "decoder must use the whole frame");
        f
    }))
}

// ---------------------------------------------------------------- fixed samples

pub fn sample_node(name: &str, incarnation: u64) -> NodeId {
    NodeId::new(name, incarnation).unwrap()
}

pub fn sample_trace() -> TraceContext {
    TraceContext {
        parent: Some(TraceParent {
            trace_id: [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ],
            span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
            flags: 1,
        }),
        tracestate: "congo=t61rcWkgMzE".into(),
    }
}

pub fn sample_hello() -> Hello {
    Hello {
        versions: VersionRange { min: 1, max: 1 },
        cluster: "prod".into(),
        identity: PeerIdentity::Node(sample_node("cortex-0", 7)),
        features: FEATURE_BATCH | FEATURE_TOPOLOGY,
        token: None,
    }
}

pub fn sample_welcome() -> Welcome {
    Welcome {
        version: 1,
        node: sample_node("cortex-1", 3),
        features: FEATURE_BATCH,
    }
}

/// The Tell used by the spec and the batch sample: a virtual target, a 3-byte payload,
/// a 5 s budget and no trace.
pub fn sample_tell() -> Tell {
    Tell {
        target: Target::Virtual(ActorId::new("order", "1234").unwrap()),
        message: MessageName::new("shop.Add").unwrap(),
        payload: Bytes::from_static(&[0xca, 0xfe, 0x01]),
        meta: RequestMeta {
            budget_us: 5_000_000,
            trace: TraceContext::default(),
        },
        epoch: 300,
    }
}

pub fn sample_ask() -> Ask {
    Ask {
        request: RequestId(42),
        target: Target::Spawned {
            node: sample_node("cortex-2", 1),
            local: 9,
        },
        message: MessageName::new("bank.Balance").unwrap(),
        payload: Bytes::from_static(b"acct-7"),
        meta: RequestMeta {
            budget_us: 250_000,
            trace: sample_trace(),
        },
        epoch: 12,
        idempotency_key: Some([0x11; 16]),
    }
}

pub fn sample_publish() -> Publish {
    Publish {
        topic: TopicId::new("prices.eur").unwrap(),
        message: MessageName::new("market.Tick").unwrap(),
        payload: Bytes::from_static(&[1, 2, 3, 4]),
        meta: RequestMeta::default(),
        publish_id: 70_000,
    }
}

pub fn sample_member(name: &str, last: u8, state: MemberState) -> MemberInfo {
    MemberInfo {
        node: sample_node(name, 2),
        quic_addr: SocketAddr::from(([10, 0, 0, last], 7400)),
        http_addr: SocketAddr::from(([10, 0, 0, last], 8080)),
        state,
        roles: vec!["worker".into()],
    }
}

/// One named sample per envelope kind; the name is the vector file's stem.
pub fn samples() -> Vec<(&'static str, Envelope)> {
    vec![
        ("hello", Envelope::Hello(sample_hello())),
        ("welcome", Envelope::Welcome(sample_welcome())),
        (
            "error",
            Envelope::Error(ErrorFrame {
                code: ErrorCode::VersionMismatch,
                detail: "no common version".into(),
                supported: Some(SUPPORTED_VERSIONS),
            }),
        ),
        ("ping", Envelope::Ping(Ping { nonce: 0xdead_beef })),
        ("pong", Envelope::Pong(Pong { nonce: 0xdead_beef })),
        ("tell", Envelope::Tell(sample_tell())),
        ("ask", Envelope::Ask(sample_ask())),
        (
            "reply",
            Envelope::Reply(Reply {
                request: RequestId(42),
                result: ReplyResult::Ok {
                    message: MessageName::new("bank.BalanceIs").unwrap(),
                    payload: Bytes::from_static(&[0x64]),
                },
            }),
        ),
        (
            "forward",
            Envelope::Forward(Forward {
                hops: 1,
                origin: sample_node("cortex-0", 7),
                body: ForwardBody::Tell(Tell {
                    target: Target::system(sample_node("cortex-1", 3), "metrics").unwrap(),
                    ..sample_tell()
                }),
            }),
        ),
        ("publish", Envelope::Publish(sample_publish())),
        (
            "subscribe",
            Envelope::Subscribe(Subscribe {
                subscription: 5,
                topic: TopicId::new("prices.eur").unwrap(),
            }),
        ),
        (
            "unsubscribe",
            Envelope::Unsubscribe(Unsubscribe { subscription: 5 }),
        ),
        (
            "delivery",
            Envelope::Delivery(Delivery {
                subscription: 5,
                publish: sample_publish(),
            }),
        ),
        (
            "topology_snapshot",
            Envelope::TopologySnapshot(TopologySnapshot {
                epoch: 12,
                vnodes: 128,
                members: vec![
                    sample_member("cortex-0", 1, MemberState::Up),
                    MemberInfo {
                        quic_addr: "[fd00::2]:7400".parse().unwrap(),
                        ..sample_member("cortex-1", 2, MemberState::Suspect)
                    },
                ],
            }),
        ),
        (
            "topology_update",
            Envelope::TopologyUpdate(TopologyUpdate {
                epoch: 13,
                changes: vec![
                    MemberChange::Upsert(sample_member("cortex-3", 4, MemberState::Up)),
                    MemberChange::Removed(sample_node("cortex-1", 2)),
                ],
            }),
        ),
    ]
}

/// The batch sample: two tells and a ping.
pub fn sample_batch() -> Vec<Envelope> {
    vec![
        Envelope::Tell(sample_tell()),
        Envelope::Tell(Tell {
            target: Target::Virtual(ActorId::new("order", "5678").unwrap()),
            payload: Bytes::new(),
            ..sample_tell()
        }),
        Envelope::Ping(Ping { nonce: 1 }),
    ]
}

/// Writes `bytes` as lowercase hex, 32 bytes a line.
pub fn to_hex_lines(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.chunks(32) {
        s.push_str(&hex::encode(chunk));
        s.push('\n');
    }
    s
}

/// Reads hex, ignoring whitespace and lines starting with `#`.
pub fn from_hex_lines(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).unwrap()
}

/// True when the golden files should be rewritten instead of checked.
pub fn blessing() -> bool {
    std::env::var("CORTEX_BLESS").is_ok_and(|v| v == "1")
}
