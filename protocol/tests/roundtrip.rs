//! Property tests: every envelope variant, and batches of them, survive encode then decode
//! unchanged, and re-encode to the same bytes.

mod common;

use common::*;
use cortex_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

type UserPayload = (u64, String, Vec<u8>, Option<i32>, Vec<(bool, char)>);

fn round_trip(env: Envelope) -> Result<(), TestCaseError> {
    let buf = frame_of(&env);
    prop_assert_eq!(
        buf.len() - 4,
        u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize
    );
    prop_assert_eq!(buf[4], CURRENT_VERSION);
    prop_assert_eq!(buf[5], env.kind());
    let (frame, used) = FrameDecoder::default().decode(&buf).unwrap().unwrap();
    prop_assert_eq!(used, buf.len());
    let Frame::Single(decoded) = frame else {
        return Err(TestCaseError::fail("expected a single frame"));
    };
    prop_assert_eq!(&decoded, &env);
    // Encoding is canonical: the decoded value writes the very same bytes.
    prop_assert_eq!(&frame_of(&decoded), &buf);
    // Frames are self-delimiting: a following frame is left untouched.
    let mut two = frame_of(&env);
    two.extend_from_slice(&frame_of(&Envelope::Ping(Ping { nonce: 1 })));
    let (_, used) = FrameDecoder::default().decode(&two).unwrap().unwrap();
    prop_assert_eq!(used, buf.len());
    Ok(())
}

macro_rules! round_trip_props {
    ($($name:ident: $strategy:expr => $variant:path;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            $(
                #[test]
                fn $name(v in $strategy) {
                    round_trip($variant(v))?;
                }
            )*
        }
    };
}

round_trip_props! {
    hello_round_trips: hello() => Envelope::Hello;
    welcome_round_trips: welcome() => Envelope::Welcome;
    error_round_trips: error_frame() => Envelope::Error;
    ping_round_trips: any::<u64>().prop_map(|nonce| Ping { nonce }) => Envelope::Ping;
    pong_round_trips: any::<u64>().prop_map(|nonce| Pong { nonce }) => Envelope::Pong;
    tell_round_trips: tell() => Envelope::Tell;
    ask_round_trips: ask() => Envelope::Ask;
    reply_round_trips: reply() => Envelope::Reply;
    forward_round_trips: forward() => Envelope::Forward;
    publish_round_trips: publish() => Envelope::Publish;
    subscribe_round_trips: (any::<u64>(), topic_id())
        .prop_map(|(subscription, topic)| Subscribe { subscription, topic }) => Envelope::Subscribe;
    unsubscribe_round_trips: any::<u64>()
        .prop_map(|subscription| Unsubscribe { subscription }) => Envelope::Unsubscribe;
    delivery_round_trips: delivery() => Envelope::Delivery;
    topology_snapshot_round_trips: topology_snapshot() => Envelope::TopologySnapshot;
    topology_update_round_trips: topology_update() => Envelope::TopologyUpdate;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batch_round_trips(envs in vec(batchable_envelope(), 0..12)) {
        let buf = batch_of(&envs);
        let mut w = BatchWriter::new();
        for e in &envs {
            w.push(e).unwrap();
        }
        prop_assert_eq!(w.len(), envs.len());
        prop_assert_eq!(w.encoded_len(), buf.len());
        prop_assert_eq!(buf[5], kind::BATCH);
        let (frame, used) = FrameDecoder::default().decode(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        // Streamed into a sink, the same envelopes in the same order.
        let mut streamed: Vec<Envelope> = Vec::new();
        let got = FrameDecoder::default().decode_into(&buf, &mut streamed).unwrap();
        prop_assert_eq!(got, Some((buf.len(), envs.len())));
        prop_assert_eq!(&streamed, &envs);
        prop_assert_eq!(frame, Frame::Batch(envs));
    }

    #[test]
    fn user_payloads_round_trip(v in any::<UserPayload>()) {
        let bytes = encode_payload(&v).unwrap();
        let back: UserPayload = decode_payload(&bytes).unwrap();
        prop_assert_eq!(back, v);
    }
}

#[test]
fn handshake_envelopes_are_not_batchable() {
    let mut w = BatchWriter::new();
    for (_, env) in samples() {
        let batchable = !matches!(
            env,
            Envelope::Hello(_) | Envelope::Welcome(_) | Envelope::Error(_)
        );
        assert_eq!(env.is_batchable(), batchable, "{env:?}");
        match w.push(&env) {
            Ok(()) => assert!(batchable),
            Err(EncodeError::NotBatchable(k)) => {
                assert!(!batchable);
                assert_eq!(k, env.kind());
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn empty_batch_is_a_valid_frame() {
    let buf = batch_of(&[]);
    assert_eq!(buf, [0, 0, 0, 6, 1, 0x7f, 0, 0, 0, 0]);
    assert_eq!(decode_all(&buf).unwrap(), Some(Frame::Batch(vec![])));
}

/// Regression: the old tiered bincode limit counted 21 bytes of "claims" for each 4-byte
/// `Removed` entry (bincode charges the in-memory size of every integer), so an honest
/// update this dense was refused as over the limit.
#[test]
fn dense_small_integers_do_not_trip_a_limit() {
    let changes = (0..20_000)
        .map(|i| MemberChange::Removed(NodeId::new("a", i % 200).unwrap()))
        .collect();
    let env = Envelope::TopologyUpdate(TopologyUpdate { epoch: 1, changes });
    let buf = frame_of(&env);
    assert!(buf.len() < 100_000);
    assert_eq!(decode_all(&buf).unwrap(), Some(Frame::Single(env)));
}

#[test]
fn push_within_respects_the_limit() {
    let tell = Envelope::Tell(sample_tell());
    let one = frame_of(&tell).len() - 1; // an entry is a frame without its version byte
    let max = 2 + 4 + 3 * one; // version, kind, count, three entries
    let mut w = BatchWriter::new();
    assert!(w.push_within(&tell, max).unwrap());
    assert!(w.push_within(&tell, max).unwrap());
    assert!(w.push_within(&tell, max).unwrap());
    assert!(!w.push_within(&tell, max).unwrap());
    assert_eq!(w.len(), 3);
    let mut buf = Vec::new();
    w.finish_with_limit(&mut buf, max).unwrap();
    assert_eq!(buf.len() - 4, max);
    assert_eq!(decode_all(&buf).unwrap(), Some(Frame::Batch(vec![tell; 3])));
}
