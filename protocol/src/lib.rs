//! The Cortex wire format: ids, envelopes, frames, the handshake and the codec.
//!
//! This crate does no I/O and knows nothing of tokio: it turns envelopes into bytes and
//! bytes into envelopes, refusing anything malformed with a typed [`DecodeError`] and never
//! sizing an allocation from a length the bytes do not back. `SPEC.md` beside this crate
//! describes every byte.
//!
//! ```
//! use cortex_protocol::*;
//! let tell = Envelope::Tell(Tell {
//!     target: Target::Virtual("order/1".parse().unwrap()),
//!     message: MessageName::new("shop.Add").unwrap(),
//!     payload: vec![1, 2, 3].into(),
//!     meta: RequestMeta::default(),
//!     epoch: 4,
//! });
//! let mut buf = Vec::new();
//! encode(&tell, &mut buf).unwrap();
//! let (frame, _) = FrameDecoder::default().decode(&buf).unwrap().unwrap();
//! assert_eq!(frame, Frame::Single(tell));
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod body;
mod codec;
mod envelope;
mod error;
mod fast;
mod guard;
mod handshake;
mod ids;
mod ring;

pub use body::{decode_payload, encode_payload};
pub use codec::{
    BatchWriter, CURRENT_VERSION, DEFAULT_MAX_FRAME, EnvelopeSink, FrameDecoder, HEADER_LEN,
    encode, encode_with_limit, kind,
};
pub use envelope::*;
pub use error::{DecodeError, EncodeError};
pub use handshake::answer_hello;
pub use ids::*;
pub use ring::{DEFAULT_VNODES, Ring};
