//! Hostile and broken input: arbitrary bytes, truncations, single-byte mutations, oversize
//! lengths and every typed refusal. Nothing may panic; nothing wrong may decode.

mod common;

use common::*;
use cortex_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

const KINDS: [u8; 16] = [
    kind::HELLO,
    kind::WELCOME,
    kind::ERROR,
    kind::PING,
    kind::PONG,
    kind::TELL,
    kind::ASK,
    kind::REPLY,
    kind::FORWARD,
    kind::PUBLISH,
    kind::SUBSCRIBE,
    kind::UNSUBSCRIBE,
    kind::DELIVERY,
    kind::TOPOLOGY_SNAPSHOT,
    kind::TOPOLOGY_UPDATE,
    kind::BATCH,
];

type UserPayload = (
    String,
    Vec<Vec<u64>>,
    Option<Vec<u8>>,
    std::collections::BTreeMap<String, i64>,
);

/// Decodes and checks the decoder's promises whatever the outcome.
fn decode_checked(
    decoder: &FrameDecoder,
    buf: &[u8],
) -> Result<Option<(Frame, usize)>, DecodeError> {
    let r = decoder.decode(buf);
    if let Ok(Some((frame, used))) = &r {
        assert!(*used <= buf.len() && *used >= HEADER_LEN);
        assert!(*used - 4 <= decoder.max_frame());
        // Whatever decoded is well formed: it encodes again and means the same.
        let again = match frame {
            Frame::Single(env) => frame_of(env),
            Frame::Batch(envs) => batch_of(envs),
        };
        assert_eq!(decoder.decode(&again).unwrap().unwrap().0, *frame);
    }
    r
}

/// All sample frames, a batch included.
fn sample_frames() -> Vec<Vec<u8>> {
    let mut v: Vec<_> = samples().iter().map(|(_, e)| frame_of(e)).collect();
    v.push(batch_of(&sample_batch()));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..512)) {
        let _ = decode_checked(&FrameDecoder::default(), &buf);
        let _ = decode_checked(&FrameDecoder::new(64), &buf);
    }

    /// Garbage behind a well-formed header reaches every body decoder.
    #[test]
    fn arbitrary_bodies_never_panic(
        k in prop_oneof![proptest::sample::select(&KINDS[..]), any::<u8>()],
        body in vec(any::<u8>(), 0..400),
    ) {
        let _ = decode_checked(&FrameDecoder::default(), &raw_frame(CURRENT_VERSION, k, &body));
    }

    /// Garbage inside otherwise valid batch entries.
    #[test]
    fn arbitrary_batch_entries_never_panic(
        entries in vec((proptest::sample::select(&KINDS[..]), vec(any::<u8>(), 0..60)), 0..6),
    ) {
        let mut body = u32::try_from(entries.len()).unwrap().to_be_bytes().to_vec();
        for (k, b) in &entries {
            body.extend_from_slice(&u32::try_from(b.len() + 1).unwrap().to_be_bytes());
            body.push(*k);
            body.extend_from_slice(b);
        }
        let _ = decode_checked(&FrameDecoder::default(), &raw_frame(CURRENT_VERSION, kind::BATCH, &body));
    }

    #[test]
    fn arbitrary_user_payloads_never_panic(buf in vec(any::<u8>(), 0..256)) {
        let _ = decode_payload::<UserPayload>(&buf);
        let _ = decode_payload::<(Tell, Ask)>(&buf);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A prefix of a frame is never a frame: the decoder waits for more.
    #[test]
    fn truncated_buffers_wait_for_more(env in envelope()) {
        let buf = frame_of(&env);
        for cut in 0..buf.len() {
            prop_assert_eq!(FrameDecoder::default().decode(&buf[..cut]), Ok(None), "cut at {}", cut);
        }
    }

    /// A truncated body under a corrected length is refused: bodies are self-delimiting,
    /// so no proper prefix of one is itself valid.
    #[test]
    fn truncated_bodies_are_refused(env in envelope()) {
        let buf = frame_of(&env);
        let body = &buf[HEADER_LEN..];
        for cut in 0..body.len() {
            let r = FrameDecoder::default().decode(&raw_frame(buf[4], buf[5], &body[..cut]));
            prop_assert!(r.is_err(), "cut at {} decoded: {:?}", cut, r);
        }
    }

    #[test]
    fn truncated_batches_are_refused(envs in vec(batchable_envelope(), 1..5)) {
        let buf = batch_of(&envs);
        let body = &buf[HEADER_LEN..];
        for cut in 0..body.len() {
            let r = FrameDecoder::default().decode(&raw_frame(buf[4], buf[5], &body[..cut]));
            prop_assert!(r.is_err(), "cut at {} decoded: {:?}", cut, r);
        }
    }
}

/// Every position of every sample frame, set to every other byte value.
#[test]
fn every_single_byte_mutation_is_handled() {
    let decoder = FrameDecoder::default();
    let mut decoded_ok = 0usize;
    for frame in sample_frames() {
        let mut m = frame.clone();
        for at in 0..frame.len() {
            for b in 0..=u8::MAX {
                if b == frame[at] {
                    continue;
                }
                m[at] = b;
                match decode_checked(&decoder, &m) {
                    Ok(Some(_)) => decoded_ok += 1,
                    // Only a larger length can leave the decoder waiting.
                    Ok(None) => assert!(at < 4 && b > frame[at], "byte {at} = {b:#x}"),
                    Err(_) => {}
                }
            }
            m[at] = frame[at];
        }
    }
    // Mutating payload bytes yields other valid frames; the test would be vacuous otherwise.
    assert!(decoded_ok > 1000, "{decoded_ok}");
}

#[test]
fn oversize_length_is_refused_from_the_prefix_alone() {
    let d = FrameDecoder::new(1024);
    let too_big = 1025u32.to_be_bytes();
    assert_eq!(
        d.frame_len(&too_big),
        Err(DecodeError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    );
    // Only the 4 prefix bytes are present: refused without waiting for (or buffering) the body.
    assert_eq!(
        d.decode(&too_big),
        Err(DecodeError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    );
    assert!(matches!(
        FrameDecoder::default().decode(&[0xff; 4]),
        Err(DecodeError::FrameTooLarge {
            len: 0xffff_ffff,
            max: DEFAULT_MAX_FRAME
        })
    ));
    assert_eq!(d.frame_len(&1024u32.to_be_bytes()), Ok(Some(1028)));
    assert_eq!(d.frame_len(&[0, 0, 0]), Ok(None));
    for short in [0u32, 1] {
        assert_eq!(
            d.decode(&short.to_be_bytes()),
            Err(DecodeError::FrameTooShort(short as usize))
        );
    }
}

#[test]
fn encode_refuses_frames_past_the_limit_and_leaves_the_buffer() {
    let mut tell = sample_tell();
    tell.payload = vec![0u8; 2000].into();
    let mut out = vec![9, 9];
    let err = encode_with_limit(&Envelope::Tell(tell), &mut out, 1024).unwrap_err();
    assert!(matches!(err, EncodeError::FrameTooLarge { max: 1024, .. }));
    assert_eq!(out, [9, 9]);

    let mut w = BatchWriter::new();
    w.push(&Envelope::Tell(sample_tell())).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        w.finish_with_limit(&mut out, 10),
        Err(EncodeError::FrameTooLarge { max: 10, .. })
    ));
    assert!(out.is_empty() && w.is_empty());
}

#[test]
fn frame_level_refusals_are_typed() {
    let d = FrameDecoder::default();
    let ping = frame_of(&Envelope::Ping(Ping { nonce: 3 }));

    let mut v9 = ping.clone();
    v9[4] = 9;
    assert_eq!(
        d.decode(&v9),
        Err(DecodeError::UnsupportedVersion {
            got: 9,
            supported: SUPPORTED_VERSIONS
        })
    );

    assert_eq!(
        d.decode(&raw_frame(1, 0x66, &[0])),
        Err(DecodeError::UnknownKind(0x66))
    );

    let mut trailing = ping[HEADER_LEN..].to_vec();
    trailing.push(0);
    assert_eq!(
        d.decode(&raw_frame(1, kind::PING, &trailing)),
        Err(DecodeError::TrailingBytes {
            kind: kind::PING,
            extra: 1
        })
    );

    assert!(matches!(
        d.decode(&raw_frame(1, kind::PING, &[])),
        Err(DecodeError::Body {
            kind: kind::PING,
            ..
        })
    ));
}

#[test]
fn hello_and_error_decode_whatever_their_version() {
    for (name, env) in samples() {
        if !matches!(name, "hello" | "error") {
            continue;
        }
        let mut buf = frame_of(&env);
        for v in [0u8, 2, 200, 255] {
            buf[4] = v;
            assert_eq!(
                decode_all(&buf).unwrap(),
                Some(Frame::Single(env.clone())),
                "{name} v{v}"
            );
        }
    }
    // Welcome is not frozen.
    let mut buf = frame_of(&Envelope::Welcome(sample_welcome()));
    buf[4] = 2;
    assert!(matches!(
        FrameDecoder::default().decode(&buf),
        Err(DecodeError::UnsupportedVersion { got: 2, .. })
    ));
}

#[test]
fn batch_refusals_are_typed() {
    let d = FrameDecoder::default();
    // Count claims more entries than the body can hold: refused before sizing anything.
    let r = d.decode(&raw_frame(
        1,
        kind::BATCH,
        &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
    ));
    assert!(matches!(r, Err(DecodeError::Batch(_))), "{r:?}");
    assert!(matches!(
        d.decode(&raw_frame(1, kind::BATCH, &[0, 0])),
        Err(DecodeError::Batch(_))
    ));

    // A Hello smuggled into a batch.
    let hello = frame_of(&Envelope::Hello(sample_hello()));
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&u32::try_from(hello.len() - 5).unwrap().to_be_bytes());
    body.extend_from_slice(&hello[5..]);
    assert_eq!(
        d.decode(&raw_frame(1, kind::BATCH, &body)),
        Err(DecodeError::NotBatchable(kind::HELLO))
    );

    // A batch in a batch.
    let inner = batch_of(&[]);
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&u32::try_from(inner.len() - 5).unwrap().to_be_bytes());
    body.extend_from_slice(&inner[5..]);
    body.extend_from_slice(&[0, 0]); // pad so the count check passes
    assert!(matches!(
        d.decode(&raw_frame(1, kind::BATCH, &body)),
        Err(DecodeError::NotBatchable(kind::BATCH) | DecodeError::Batch(_))
    ));

    // Bytes after the last entry.
    let mut buf = batch_of(&[Envelope::Ping(Ping { nonce: 1 })]);
    buf.push(0);
    buf[3] += 1;
    assert_eq!(
        d.decode(&buf),
        Err(DecodeError::TrailingBytes {
            kind: kind::BATCH,
            extra: 1
        })
    );
}

/// Frames whose body is `value` serialized directly, skipping `encode`'s checks.
fn unchecked_frame<T: serde::Serialize>(k: u8, value: &T) -> Vec<u8> {
    raw_frame(CURRENT_VERSION, k, &encode_payload(value).unwrap())
}

#[test]
fn invalid_ids_are_refused_on_decode() {
    let d = FrameDecoder::default();
    // Patch the actor kind "order" into "or der" with the same length by replacing 'd'.
    let mut buf = frame_of(&Envelope::Tell(sample_tell()));
    let at = buf.windows(5).position(|w| w == b"order").unwrap();
    buf[at + 2] = b' ';
    let err = d.decode(&buf).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Body {
                kind: kind::TELL,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("actor kind"), "{err}");

    // An empty node name.
    let mut buf = frame_of(&Envelope::Welcome(sample_welcome()));
    let at = buf.windows(9).position(|w| w == b"\x08cortex-1").unwrap();
    buf.drain(at + 1..at + 9);
    buf[at] = 0;
    buf[3] -= 8;
    let err = d.decode(&buf).unwrap_err();
    assert!(
        err.to_string().contains("node name must not be empty"),
        "{err}"
    );

    // A system actor name with a '/'.
    #[derive(serde::Serialize)]
    enum RawTarget {
        #[allow(dead_code)]
        Virtual(ActorId),
        #[allow(dead_code)]
        Spawned {
            node: NodeId,
            local: u64,
        },
        System {
            node: NodeId,
            name: String,
        },
    }
    let bad = RawTarget::System {
        node: sample_node("n", 1),
        name: "a/b".into(),
    };
    let mut tell_body = encode_payload(&bad).unwrap();
    let rest = encode_payload(&(
        MessageName::new("m").unwrap(),
        bytes::Bytes::new(),
        RequestMeta::default(),
        0u64,
    ))
    .unwrap();
    tell_body.extend_from_slice(&rest);
    let err = d.decode(&raw_frame(1, kind::TELL, &tell_body)).unwrap_err();
    assert!(err.to_string().contains("system actor name"), "{err}");
}

#[test]
fn over_long_tracestate_is_refused_both_ways() {
    let mut tell = sample_tell();
    tell.meta.trace.tracestate = "k=".to_string() + &"v".repeat(MAX_TRACESTATE_LEN - 2);
    assert!(encode(&Envelope::Tell(tell.clone()), &mut Vec::new()).is_ok());

    tell.meta.trace.tracestate.push('v');
    let mut out = Vec::new();
    let err = encode(&Envelope::Tell(tell.clone()), &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::InvalidField {
                field: "meta.trace.tracestate",
                ..
            }
        ),
        "{err}"
    );
    assert!(out.is_empty());
    let mut w = BatchWriter::new();
    assert!(w.push(&Envelope::Tell(tell.clone())).is_err());
    assert!(w.is_empty());

    let err = FrameDecoder::default()
        .decode(&unchecked_frame(kind::TELL, &tell))
        .unwrap_err();
    assert!(err.to_string().contains("tracestate is 513 bytes"), "{err}");
}

#[test]
fn bad_system_name_is_refused_by_encode() {
    let tell = Tell {
        target: Target::System {
            node: sample_node("n", 1),
            name: "has space".into(),
        },
        ..sample_tell()
    };
    let err = encode(&Envelope::Tell(tell), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::InvalidField {
                field: "target",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }
    // Each level is one variant byte: 1 = Node, then 0 = Leaf.
    let mut shallow = vec![1u8; 20];
    shallow.push(0);
    assert!(decode_payload::<Tree>(&shallow).is_ok());
    let mut deep = vec![1u8; 100_000];
    deep.push(0);
    let err = decode_payload::<Tree>(&deep).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
}

#[test]
fn decode_errors_become_error_frames() {
    let f = ErrorFrame::from(DecodeError::UnsupportedVersion {
        got: 9,
        supported: SUPPORTED_VERSIONS,
    });
    assert_eq!(f.code, ErrorCode::VersionMismatch);
    assert_eq!(f.supported, Some(SUPPORTED_VERSIONS));
    let f = ErrorFrame::from(DecodeError::UnknownKind(0x66));
    assert_eq!(f.code, ErrorCode::ProtocolViolation);
    assert!(f.detail.contains("0x66"));
    // And the frame is sendable.
    assert!(encode(&Envelope::Error(f), &mut Vec::new()).is_ok());
}

#[test]
fn answer_hello_negotiates() {
    let mut hello = sample_hello();
    hello.versions = VersionRange { min: 1, max: 4 };
    assert_eq!(
        answer_hello(&hello, VersionRange { min: 2, max: 3 }, "prod"),
        Ok(3)
    );
    assert_eq!(
        answer_hello(&hello, VersionRange { min: 4, max: 9 }, "prod"),
        Ok(4)
    );

    let err = answer_hello(&hello, VersionRange { min: 5, max: 6 }, "prod").unwrap_err();
    assert_eq!(err.code, ErrorCode::VersionMismatch);
    assert_eq!(err.supported, Some(VersionRange { min: 5, max: 6 }));
    assert!(
        err.detail.contains("1..=4") && err.detail.contains("5..=6"),
        "{}",
        err.detail
    );

    let err = answer_hello(&hello, SUPPORTED_VERSIONS, "staging").unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthorized);
    assert_eq!(err.supported, None);

    hello.versions = VersionRange { min: 3, max: 1 };
    let err = answer_hello(&hello, VersionRange { min: 1, max: 3 }, "prod").unwrap_err();
    assert_eq!(err.code, ErrorCode::ProtocolViolation);
}
