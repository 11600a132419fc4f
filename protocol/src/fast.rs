//! Hand-written decoders for the envelopes of the message path: `Tell`, `Ask`, `Reply` and
//! `Forward`, one per message at the cluster's full rate.
//!
//! They read the exact layout SPEC.md section 4 gives (the one serde + bincode write) and
//! apply the same checks as the typed constructors (`ActorId::new`, `MessageName::new`, the
//! `tracestate` limit). They never report errors: on anything they do not handle (a target
//! other than a virtual actor, a malformed or truncated body) they return `None` and the
//! caller decodes the body again through the guarded serde path, which produces the value or
//! the canonical error. So this module can only make a decode faster, never change its
//! outcome; the unit tests below check that against the serde path on valid and on mutated
//! bodies. Skipping serde's visitor layers and the guard's wrappers (with the inline ids)
//! took a tell's decode from 0.77x to 1.2-1.4x the speed of a plain bincode decode of the
//! same struct (BENCHMARKS.md, Codec). Error replies are rare, so they are left to serde too.

use bytes::Bytes;

use crate::envelope::{
    Ask, Envelope, Forward, ForwardBody, Reply, ReplyResult, RequestMeta, Target, Tell,
    TraceContext, TraceParent,
};
use crate::ids::{ActorId, MessageName, NodeId, RequestId};

/// A cursor over one body; every read checks the bytes left.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        let (&b, tail) = self.buf.split_first()?;
        self.buf = tail;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.buf.split_first_chunk::<N>()?;
        self.buf = tail;
        Some(*head)
    }

    /// bincode's varint (SPEC.md: one byte up to 250, else `fb`/`fc`/`fd` and 2/4/8 bytes
    /// little-endian; longer forms than needed are accepted).
    fn varint(&mut self) -> Option<u64> {
        Some(match self.u8()? {
            b @ 0..=250 => u64::from(b),
            0xfb => u64::from(u16::from_le_bytes(self.array()?)),
            0xfc => u64::from(u32::from_le_bytes(self.array()?)),
            0xfd => u64::from_le_bytes(self.array()?),
            _ => return None,
        })
    }

    /// An enum's variant index: a `u32` varint, so the 8-byte form is refused as bincode
    /// refuses it.
    fn variant(&mut self) -> Option<u32> {
        if self.buf.first() == Some(&0xfd) {
            return None;
        }
        u32::try_from(self.varint()?).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn option(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn done(&self) -> bool {
        self.buf.is_empty()
    }
}

fn target(r: &mut Reader<'_>) -> Option<Target> {
    // Spawned and system targets are rare; serde handles them.
    if r.variant()? != 0 {
        return None;
    }
    let kind = r.str()?;
    let key = r.str()?;
    ActorId::new(kind, key).ok().map(Target::Virtual)
}

fn message(r: &mut Reader<'_>) -> Option<MessageName> {
    MessageName::new(r.str()?).ok()
}

fn payload(r: &mut Reader<'_>) -> Option<Bytes> {
    r.bytes().map(Bytes::copy_from_slice)
}

fn meta(r: &mut Reader<'_>) -> Option<RequestMeta> {
    let budget_us = r.varint()?;
    let parent = if r.option()? {
        Some(TraceParent {
            trace_id: r.array()?,
            span_id: r.array()?,
            flags: r.u8()?,
        })
    } else {
        None
    };
    let trace = TraceContext {
        parent,
        tracestate: r.str()?.to_owned(),
    };
    trace.validate().ok()?;
    Some(RequestMeta { budget_us, trace })
}

/// Reads a `Tell`'s fields and wraps the value with `make` (`Envelope::Tell`, say): the wrapper
/// is built around the fields, not moved into afterwards (a 256-byte copy a message for an
/// `Envelope`).
fn tell_fields<T>(r: &mut Reader<'_>, make: impl FnOnce(Tell) -> T) -> Option<T> {
    let (target, message, payload) = (target(r)?, message(r)?, payload(r)?);
    let (meta, epoch) = (meta(r)?, r.varint()?);
    Some(make(Tell {
        target,
        message,
        payload,
        meta,
        epoch,
    }))
}

/// [`tell_fields`] for an `Ask`.
fn ask_fields<T>(r: &mut Reader<'_>, make: impl FnOnce(Ask) -> T) -> Option<T> {
    let request = RequestId(r.varint()?);
    let (target, message, payload) = (target(r)?, message(r)?, payload(r)?);
    let (meta, epoch) = (meta(r)?, r.varint()?);
    let idempotency_key = if r.option()? { Some(r.array()?) } else { None };
    Some(make(Ask {
        request,
        target,
        message,
        payload,
        meta,
        epoch,
        idempotency_key,
    }))
}

/// Runs `f` over the whole body; `None` unless it consumed every byte.
fn whole<T>(body: &[u8], f: impl FnOnce(&mut Reader<'_>) -> Option<T>) -> Option<T> {
    let mut r = Reader { buf: body };
    let v = f(&mut r)?;
    r.done().then_some(v)
}

/// A whole `Tell` body as an [`Envelope`].
pub(crate) fn tell_envelope(body: &[u8]) -> Option<Envelope> {
    whole(body, |r| tell_fields(r, Envelope::Tell))
}

/// A whole `Ask` body as an [`Envelope`].
pub(crate) fn ask_envelope(body: &[u8]) -> Option<Envelope> {
    whole(body, |r| ask_fields(r, Envelope::Ask))
}

pub(crate) fn reply(body: &[u8]) -> Option<Reply> {
    whole(body, |r| {
        let request = RequestId(r.varint()?);
        let result = match r.variant()? {
            0 => ReplyResult::Ok {
                message: message(r)?,
                payload: payload(r)?,
            },
            // Error replies (and unknown variants) go to serde.
            _ => return None,
        };
        Some(Reply { request, result })
    })
}

pub(crate) fn forward(body: &[u8]) -> Option<Forward> {
    whole(body, |r| {
        let hops = r.u8()?;
        let name = r.str()?;
        let origin = NodeId::new(name, r.varint()?).ok()?;
        let body = match r.variant()? {
            0 => tell_fields(r, ForwardBody::Tell)?,
            1 => ask_fields(r, ForwardBody::Ask)?,
            _ => return None,
        };
        Some(Forward { hops, origin, body })
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::body::decode_envelope_slow;
    use crate::codec::kind;
    use crate::envelope::Envelope;
    use crate::envelope::{ErrorCode, RemoteError};

    fn ident(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-z0-9._-]{{1,{max}}}")).unwrap()
    }

    fn key() -> impl Strategy<Value = String> {
        // Past smol_str's 23 inline bytes too.
        proptest::string::string_regex("[!-~]{1,40}").unwrap()
    }

    fn meta_s() -> impl Strategy<Value = RequestMeta> {
        (
            any::<u64>(),
            proptest::option::of((any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())),
            proptest::string::string_regex("[a-z0-9=,]{0,20}").unwrap(),
        )
            .prop_map(|(budget_us, parent, tracestate)| RequestMeta {
                budget_us,
                trace: TraceContext {
                    parent: parent.map(|(trace_id, span_id, flags)| TraceParent {
                        trace_id,
                        span_id,
                        flags,
                    }),
                    tracestate,
                },
            })
    }

    fn target_s() -> impl Strategy<Value = Target> {
        prop_oneof![
            4 => (ident(20), key()).prop_map(|(k, v)| Target::Virtual(ActorId::new(k, v).unwrap())),
            1 => (ident(10), any::<u64>(), any::<u64>()).prop_map(|(n, i, local)| Target::Spawned {
                node: NodeId::new(n, i).unwrap(),
                local,
            }),
        ]
    }

    fn tell_s() -> impl Strategy<Value = Tell> {
        (
            target_s(),
            ident(30),
            proptest::collection::vec(any::<u8>(), 0..80),
            meta_s(),
            any::<u64>(),
        )
            .prop_map(|(target, m, p, meta, epoch)| Tell {
                target,
                message: MessageName::new(m).unwrap(),
                payload: p.into(),
                meta,
                epoch,
            })
    }

    fn ask_s() -> impl Strategy<Value = Ask> {
        (
            any::<u64>(),
            tell_s(),
            proptest::option::of(any::<[u8; 16]>()),
        )
            .prop_map(|(request, t, idempotency_key)| Ask {
                request: RequestId(request),
                target: t.target,
                message: t.message,
                payload: t.payload,
                meta: t.meta,
                epoch: t.epoch,
                idempotency_key,
            })
    }

    fn reply_s() -> impl Strategy<Value = Reply> {
        let result = prop_oneof![
            (ident(30), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(m, p)| {
                ReplyResult::Ok {
                    message: MessageName::new(m).unwrap(),
                    payload: p.into(),
                }
            }),
            (
                prop::sample::select(vec![
                    ErrorCode::Timeout,
                    ErrorCode::Rejected,
                    ErrorCode::StaleIncarnation,
                ]),
                ".{0,30}"
            )
                .prop_map(|(code, detail)| ReplyResult::Err(RemoteError { code, detail })),
        ];
        (any::<u64>(), result).prop_map(|(request, result)| Reply {
            request: RequestId(request),
            result,
        })
    }

    fn envelope_s() -> impl Strategy<Value = Envelope> {
        prop_oneof![
            tell_s().prop_map(Envelope::Tell),
            ask_s().prop_map(Envelope::Ask),
            reply_s().prop_map(Envelope::Reply),
            (any::<u8>(), ident(10), any::<u64>(), tell_s()).prop_map(|(hops, n, i, t)| {
                Envelope::Forward(Forward {
                    hops,
                    origin: NodeId::new(n, i).unwrap(),
                    body: ForwardBody::Tell(t),
                })
            }),
            (any::<u8>(), ident(10), any::<u64>(), ask_s()).prop_map(|(hops, n, i, a)| {
                Envelope::Forward(Forward {
                    hops,
                    origin: NodeId::new(n, i).unwrap(),
                    body: ForwardBody::Ask(a),
                })
            }),
        ]
    }

    fn body_of(env: &Envelope) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        crate::body::encode_body(env, &mut out).unwrap();
        (env.kind(), out)
    }

    fn fast(k: u8, b: &[u8]) -> Option<Envelope> {
        match k {
            kind::TELL => tell_envelope(b),
            kind::ASK => ask_envelope(b),
            kind::REPLY => reply(b).map(Envelope::Reply),
            kind::FORWARD => forward(b).map(Envelope::Forward),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// On valid bodies the fast path decodes what serde decodes (or defers to it).
        #[test]
        fn valid_bodies_decode_as_serde_does(env in envelope_s()) {
            let (k, b) = body_of(&env);
            let slow = decode_envelope_slow(k, &b).unwrap();
            prop_assert_eq!(&slow, &env);
            if let Some(f) = fast(k, &b) {
                prop_assert_eq!(f, slow);
            } else {
                // Only non-virtual targets and error replies are left to serde.
                let virtual_only = match &env {
                    Envelope::Reply(Reply { result: ReplyResult::Err(_), .. }) => false,
                    Envelope::Tell(t) => matches!(t.target, Target::Virtual(_)),
                    Envelope::Ask(a) => matches!(a.target, Target::Virtual(_)),
                    Envelope::Forward(Forward { body: ForwardBody::Tell(t), .. }) => {
                        matches!(t.target, Target::Virtual(_))
                    }
                    Envelope::Forward(Forward { body: ForwardBody::Ask(a), .. }) => {
                        matches!(a.target, Target::Virtual(_))
                    }
                    _ => true,
                };
                prop_assert!(!virtual_only, "fast path gave up on {env:?}");
            }
        }

        /// On damaged bodies the fast path never accepts what serde refuses, nor decodes it
        /// differently.
        #[test]
        fn damaged_bodies_never_diverge(
            env in envelope_s(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let (k, mut b) = body_of(&env);
            for (at, byte, op) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.truncate(i),
                    _ => b.insert(i, byte),
                }
            }
            if let Some(f) = fast(k, &b) {
                prop_assert_eq!(Ok(f), decode_envelope_slow(k, &b));
            }
        }
    }
}
