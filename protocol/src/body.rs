//! Envelope bodies: the only place that touches bincode, so the codec stays swappable.
//!
//! Bodies are bincode 2 with `config::standard()` (little-endian, varint integers, no
//! limit). Decoding always runs through [`crate::guard`], which keeps allocations to the
//! bytes actually present and bounds nesting; that, not a bincode limit, is what makes a
//! hostile length harmless (see the guard's module doc for why).

use std::marker::PhantomData;

use bincode::config::{self, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::kind;
use crate::envelope::{Envelope, ForwardBody, RequestMeta, Target};
use crate::error::{DecodeError, EncodeError};
use crate::fast;
use crate::guard::Root;

fn cfg() -> impl Config {
    config::standard()
}

impl Envelope {
    /// The kind byte this envelope travels under (see [`kind`](crate::kind)).
    pub fn kind(&self) -> u8 {
        match self {
            Envelope::Hello(_) => kind::HELLO,
            Envelope::Welcome(_) => kind::WELCOME,
            Envelope::Error(_) => kind::ERROR,
            Envelope::Ping(_) => kind::PING,
            Envelope::Pong(_) => kind::PONG,
            Envelope::Tell(_) => kind::TELL,
            Envelope::Ask(_) => kind::ASK,
            Envelope::Reply(_) => kind::REPLY,
            Envelope::Forward(_) => kind::FORWARD,
            Envelope::Publish(_) => kind::PUBLISH,
            Envelope::Subscribe(_) => kind::SUBSCRIBE,
            Envelope::Unsubscribe(_) => kind::UNSUBSCRIBE,
            Envelope::Delivery(_) => kind::DELIVERY,
            Envelope::TopologySnapshot(_) => kind::TOPOLOGY_SNAPSHOT,
            Envelope::TopologyUpdate(_) => kind::TOPOLOGY_UPDATE,
        }
    }

    /// True when the envelope may travel inside a batch (everything but Hello, Welcome and
    /// Error, which must stand alone so a peer of any version can read them).
    pub fn is_batchable(&self) -> bool {
        batchable(self.kind())
    }
}

pub(crate) fn batchable(kind: u8) -> bool {
    !matches!(
        kind,
        kind::HELLO | kind::WELCOME | kind::ERROR | kind::BATCH
    )
}

fn check_meta(meta: &RequestMeta) -> Result<(), EncodeError> {
    meta.trace
        .validate()
        .map_err(|e| EncodeError::InvalidField {
            field: "meta.trace.tracestate",
            reason: e.to_string(),
        })
}

fn check_target(t: &Target) -> Result<(), EncodeError> {
    t.validate().map_err(|e| EncodeError::InvalidField {
        field: "target",
        reason: e.to_string(),
    })
}

/// Refuses, before any byte is written, the values the peer's decoder would refuse but the
/// types cannot rule out (their fields are public).
pub(crate) fn check_envelope(env: &Envelope) -> Result<(), EncodeError> {
    match env {
        Envelope::Tell(t) => check_target(&t.target).and(check_meta(&t.meta)),
        Envelope::Ask(a) => check_target(&a.target).and(check_meta(&a.meta)),
        Envelope::Forward(f) => match &f.body {
            ForwardBody::Tell(t) => check_target(&t.target).and(check_meta(&t.meta)),
            ForwardBody::Ask(a) => check_target(&a.target).and(check_meta(&a.meta)),
        },
        Envelope::Publish(p) => check_meta(&p.meta),
        Envelope::Delivery(d) => check_meta(&d.publish.meta),
        _ => Ok(()),
    }
}

fn put<T: Serialize>(v: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    bincode::serde::encode_into_std_write(v, out, cfg())
        .map(|_| ())
        .map_err(|e| EncodeError::Codec(e.to_string()))
}

/// Appends the body of `env` to `out` (on error `out` may hold a partial body: the caller
/// truncates).
pub(crate) fn encode_body(env: &Envelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match env {
        Envelope::Hello(v) => put(v, out),
        Envelope::Welcome(v) => put(v, out),
        Envelope::Error(v) => put(v, out),
        Envelope::Ping(v) => put(v, out),
        Envelope::Pong(v) => put(v, out),
        Envelope::Tell(v) => put(v, out),
        Envelope::Ask(v) => put(v, out),
        Envelope::Reply(v) => put(v, out),
        Envelope::Forward(v) => put(v, out),
        Envelope::Publish(v) => put(v, out),
        Envelope::Subscribe(v) => put(v, out),
        Envelope::Unsubscribe(v) => put(v, out),
        Envelope::Delivery(v) => put(v, out),
        Envelope::TopologySnapshot(v) => put(v, out),
        Envelope::TopologyUpdate(v) => put(v, out),
    }
}

/// Decodes exactly `bytes` as a `T`: trailing bytes are an error.
fn body<T: DeserializeOwned>(kind: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    match bincode::serde::seed_decode_from_slice(Root::<T>(PhantomData), bytes, cfg()) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(DecodeError::TrailingBytes {
            kind,
            extra: bytes.len() - used,
        }),
        Err(e) => Err(DecodeError::Body {
            kind,
            reason: e.to_string(),
        }),
    }
}

pub(crate) fn decode_envelope(k: u8, b: &[u8]) -> Result<Envelope, DecodeError> {
    // The message path's envelopes first try the hand decoders, which defer every case they
    // do not cover (and every error) to the guarded serde path below.
    let fast = match k {
        kind::TELL => fast::tell_envelope(b),
        kind::ASK => fast::ask_envelope(b),
        kind::REPLY => fast::reply(b).map(Envelope::Reply),
        kind::FORWARD => fast::forward(b).map(Envelope::Forward),
        _ => None,
    };
    match fast {
        Some(env) => Ok(env),
        None => decode_envelope_slow(k, b),
    }
}

/// [`decode_envelope`] through serde and the guard only.
pub(crate) fn decode_envelope_slow(k: u8, b: &[u8]) -> Result<Envelope, DecodeError> {
    Ok(match k {
        kind::HELLO => Envelope::Hello(body(k, b)?),
        kind::WELCOME => Envelope::Welcome(body(k, b)?),
        kind::ERROR => Envelope::Error(body(k, b)?),
        kind::PING => Envelope::Ping(body(k, b)?),
        kind::PONG => Envelope::Pong(body(k, b)?),
        kind::TELL => Envelope::Tell(body(k, b)?),
        kind::ASK => Envelope::Ask(body(k, b)?),
        kind::REPLY => Envelope::Reply(body(k, b)?),
        kind::FORWARD => Envelope::Forward(body(k, b)?),
        kind::PUBLISH => Envelope::Publish(body(k, b)?),
        kind::SUBSCRIBE => Envelope::Subscribe(body(k, b)?),
        kind::UNSUBSCRIBE => Envelope::Unsubscribe(body(k, b)?),
        kind::DELIVERY => Envelope::Delivery(body(k, b)?),
        kind::TOPOLOGY_SNAPSHOT => Envelope::TopologySnapshot(body(k, b)?),
        kind::TOPOLOGY_UPDATE => Envelope::TopologyUpdate(body(k, b)?),
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// Encodes a user message with the wire codec (for message registries).
///
/// ```
/// use cortex_protocol::{decode_payload, encode_payload};
/// let bytes = encode_payload(&("deposit", 42u64)).unwrap();
/// let back: (String, u64) = decode_payload(&bytes).unwrap();
/// assert_eq!(back, ("deposit".to_string(), 42));
/// ```
///
/// # Errors
/// [`EncodeError::Codec`] if serde cannot represent the value.
pub fn encode_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(value, cfg()).map_err(|e| EncodeError::Codec(e.to_string()))
}

/// Decodes a user message encoded by [`encode_payload`], rejecting trailing bytes.
///
/// Safe on hostile bytes: nothing is allocated past what `bytes` holds and nesting deeper
/// than 64 levels is refused.
///
/// # Errors
/// [`DecodeError::Body`] (kind 0) or [`DecodeError::TrailingBytes`].
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    body(0, bytes)
}
