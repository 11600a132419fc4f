//! Framing and the envelope codec.
//!
//! A frame is `u32 length (big-endian) | u8 version | u8 kind | body`, where `length` counts
//! the version byte, the kind byte and the body. Bodies are bincode 2 (standard config:
//! little-endian, varint integers) of the envelope struct the kind byte names. The codec is
//! private to this module: callers use [`encode`], [`BatchWriter`] and [`FrameDecoder`], so
//! it can change without touching them.

use bincode::config::{self, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{Envelope, Frame, SUPPORTED_VERSIONS, VersionRange};

/// Default largest frame, in bytes (length field value), accepted or produced.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Bytes before the body: length (4), version (1), kind (1).
pub const HEADER_LEN: usize = 6;
/// The version this build writes.
pub const CURRENT_VERSION: u8 = SUPPORTED_VERSIONS.max;

/// Kind bytes. Stable forever within a version; see SPEC.md.
pub mod kind {
    /// Handshake request.
    pub const HELLO: u8 = 0x01;
    /// Handshake accept.
    pub const WELCOME: u8 = 0x02;
    /// Error.
    pub const ERROR: u8 = 0x03;
    /// Ping.
    pub const PING: u8 = 0x04;
    /// Pong.
    pub const PONG: u8 = 0x05;
    /// Tell.
    pub const TELL: u8 = 0x10;
    /// Ask.
    pub const ASK: u8 = 0x11;
    /// Reply.
    pub const REPLY: u8 = 0x12;
    /// Forward.
    pub const FORWARD: u8 = 0x13;
    /// Publish.
    pub const PUBLISH: u8 = 0x20;
    /// Subscribe.
    pub const SUBSCRIBE: u8 = 0x21;
    /// Unsubscribe.
    pub const UNSUBSCRIBE: u8 = 0x22;
    /// Delivery.
    pub const DELIVERY: u8 = 0x23;
    /// Topology snapshot.
    pub const TOPOLOGY_SNAPSHOT: u8 = 0x30;
    /// Topology update.
    pub const TOPOLOGY_UPDATE: u8 = 0x31;
    /// Batch of envelopes.
    pub const BATCH: u8 = 0x7f;
}

/// Why bytes did not decode. Always the peer's fault; the decoder's state is unchanged
/// except that nothing was consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length field exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}: raise max_frame on both sides or send smaller messages")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The length field is smaller than the version and kind bytes.
    #[error("frame length {0} is shorter than the 2-byte version/kind header")]
    FrameTooShort(usize),
    /// A version this side does not speak.
    #[error("frame version {got} is not spoken here (supported {}..={})", supported.min, supported.max)]
    UnsupportedVersion {
        /// The version byte.
        got: u8,
        /// What this side speaks.
        supported: VersionRange,
    },
    /// An unknown kind byte.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The body is not a valid envelope of its kind.
    #[error("invalid body for frame kind 0x{kind:02x}: {reason}")]
    Body {
        /// Kind byte.
        kind: u8,
        /// What the codec reported.
        reason: String,
    },
    /// The body decoded but bytes were left over.
    #[error("{extra} trailing bytes after the body of frame kind 0x{kind:02x}")]
    TrailingBytes {
        /// Kind byte.
        kind: u8,
        /// Left-over bytes.
        extra: usize,
    },
    /// A batch entry is malformed.
    #[error("malformed batch: {0}")]
    Batch(&'static str),
    /// A handshake or batch envelope inside a batch.
    #[error("frame kind 0x{0:02x} may not appear inside a batch")]
    NotBatchable(u8),
}

/// Why an envelope could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the limit.
    #[error("encoded frame of {len} bytes exceeds the limit of {max}: send a smaller payload")]
    FrameTooLarge {
        /// Encoded length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The serializer failed (only for types serde cannot represent; a bug).
    #[error("encoding failed: {0}")]
    Codec(String),
    /// A handshake envelope pushed into a batch.
    #[error("frame kind 0x{0:02x} may not appear inside a batch")]
    NotBatchable(u8),
}

fn cfg() -> impl Config {
    config::standard()
}

fn kind_of(env: &Envelope) -> u8 {
    match env {
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

fn batchable(kind: u8) -> bool {
    !matches!(kind, kind::HELLO | kind::WELCOME | kind::ERROR | kind::BATCH)
}

fn put_body<T: Serialize>(v: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    bincode::serde::encode_into_std_write(v, out, cfg())
        .map(|_| ())
        .map_err(|e| EncodeError::Codec(e.to_string()))
}

fn encode_body(env: &Envelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match env {
        Envelope::Hello(v) => put_body(v, out),
        Envelope::Welcome(v) => put_body(v, out),
        Envelope::Error(v) => put_body(v, out),
        Envelope::Ping(v) => put_body(v, out),
        Envelope::Pong(v) => put_body(v, out),
        Envelope::Tell(v) => put_body(v, out),
        Envelope::Ask(v) => put_body(v, out),
        Envelope::Reply(v) => put_body(v, out),
        Envelope::Forward(v) => put_body(v, out),
        Envelope::Publish(v) => put_body(v, out),
        Envelope::Subscribe(v) => put_body(v, out),
        Envelope::Unsubscribe(v) => put_body(v, out),
        Envelope::Delivery(v) => put_body(v, out),
        Envelope::TopologySnapshot(v) => put_body(v, out),
        Envelope::TopologyUpdate(v) => put_body(v, out),
    }
}

/// Appends one frame holding `env` to `out`, written with [`CURRENT_VERSION`].
///
/// ```
/// use cortex_protocol::{encode, Envelope, FrameDecoder, Frame, Ping};
/// let mut buf = Vec::new();
/// encode(&Envelope::Ping(Ping { nonce: 7 }), &mut buf).unwrap();
/// let (frame, used) = FrameDecoder::default().decode(&buf).unwrap().unwrap();
/// assert_eq!(used, buf.len());
/// assert_eq!(frame, Frame::Single(Envelope::Ping(Ping { nonce: 7 })));
/// ```
///
/// # Errors
/// [`EncodeError::FrameTooLarge`] past [`DEFAULT_MAX_FRAME`]; `out` is left as it was.
pub fn encode(env: &Envelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_with_limit(env, out, DEFAULT_MAX_FRAME)
}

/// [`encode`] with an explicit frame limit.
///
/// # Errors
/// As [`encode`].
pub fn encode_with_limit(env: &Envelope, out: &mut Vec<u8>, max: usize) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, CURRENT_VERSION, kind_of(env)]);
    if let Err(e) = encode_body(env, out) {
        out.truncate(start);
        return Err(e);
    }
    finish_frame(out, start, max)
}

fn finish_frame(out: &mut Vec<u8>, start: usize, max: usize) -> Result<(), EncodeError> {
    let len = out.len() - start - 4;
    if len > max || u32::try_from(len).is_err() {
        out.truncate(start);
        return Err(EncodeError::FrameTooLarge { len, max });
    }
    // Checked just above: len fits in u32.
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Coalesces many small envelopes into one batch frame.
///
/// Entries are `u32 length | u8 kind | body`; the frame body is `u32 count` then the entries.
///
/// ```
/// use cortex_protocol::{BatchWriter, Envelope, FrameDecoder, Frame, Ping};
/// let mut batch = BatchWriter::new();
/// for nonce in 0..3 {
///     batch.push(&Envelope::Ping(Ping { nonce })).unwrap();
/// }
/// let mut buf = Vec::new();
/// batch.finish(&mut buf).unwrap();
/// let (frame, _) = FrameDecoder::default().decode(&buf).unwrap().unwrap();
/// assert!(matches!(frame, Frame::Batch(ref v) if v.len() == 3));
/// ```
#[derive(Debug, Default)]
pub struct BatchWriter {
    entries: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an envelope.
    ///
    /// # Errors
    /// [`EncodeError::NotBatchable`] for handshake and error envelopes.
    pub fn push(&mut self, env: &Envelope) -> Result<(), EncodeError> {
        let k = kind_of(env);
        if !batchable(k) {
            return Err(EncodeError::NotBatchable(k));
        }
        let start = self.entries.len();
        self.entries.extend_from_slice(&[0, 0, 0, 0, k]);
        if let Err(e) = encode_body(env, &mut self.entries) {
            self.entries.truncate(start);
            return Err(e);
        }
        finish_frame(&mut self.entries, start, DEFAULT_MAX_FRAME)?;
        self.count += 1;
        Ok(())
    }
    /// Envelopes pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes the finished frame will take.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + 4 + self.entries.len()
    }
    /// Appends the batch frame to `out` and empties the writer.
    ///
    /// # Errors
    /// [`EncodeError::FrameTooLarge`] past [`DEFAULT_MAX_FRAME`]; the writer is emptied anyway.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.finish_with_limit(out, DEFAULT_MAX_FRAME)
    }
    /// [`BatchWriter::finish`] with an explicit frame limit.
    ///
    /// # Errors
    /// As [`BatchWriter::finish`].
    pub fn finish_with_limit(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, CURRENT_VERSION, kind::BATCH]);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.entries);
        self.entries.clear();
        self.count = 0;
        finish_frame(out, start, max)
    }
}

/// Decodes frames from a byte buffer, checking the length against a limit before reading
/// (or allocating for) the body.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }
    /// The configured limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Reads the 4-byte length prefix and checks it; `Ok(None)` if fewer than 4 bytes.
    ///
    /// Transports use it to know how many bytes to read before calling [`Self::decode`].
    ///
    /// # Errors
    /// [`DecodeError::FrameTooLarge`] or [`DecodeError::FrameTooShort`].
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(prefix) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > self.max_frame {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len < 2 {
            return Err(DecodeError::FrameTooShort(len));
        }
        Ok(Some(4 + len))
    }

    /// Decodes the first frame in `buf`. `Ok(None)` means more bytes are needed; otherwise
    /// the frame and how many bytes it used.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the problem; the connection should be closed.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(total) = self.frame_len(buf)? else {
            return Ok(None);
        };
        let Some(frame) = buf.get(..total) else {
            return Ok(None);
        };
        let (version, kind) = (frame[4], frame[5]);
        let body = &frame[HEADER_LEN..];
        // Hello and Error have a layout frozen across versions, so that peers that share no
        // version can still tell each other so.
        let frozen = matches!(kind, kind::HELLO | kind::ERROR);
        if !frozen && (version < SUPPORTED_VERSIONS.min || version > SUPPORTED_VERSIONS.max) {
            return Err(DecodeError::UnsupportedVersion {
                got: version,
                supported: SUPPORTED_VERSIONS,
            });
        }
        let out = if kind == kind::BATCH {
            Frame::Batch(decode_batch(body)?)
        } else {
            Frame::Single(decode_envelope(kind, body)?)
        };
        Ok(Some((out, total)))
    }

    /// Decodes the version byte of the first frame, if complete (for the handshake).
    pub fn peek_version(&self, buf: &[u8]) -> Option<u8> {
        buf.get(4).copied()
    }
}

fn decode_batch(body: &[u8]) -> Result<Vec<Envelope>, DecodeError> {
    let (count, mut rest) = body
        .split_first_chunk::<4>()
        .ok_or(DecodeError::Batch("missing entry count"))?;
    let count = u32::from_be_bytes(*count) as usize;
    // Every entry takes at least 5 bytes, so a count that could not fit is refused before
    // the vector is sized from it.
    if count > rest.len() / 5 {
        return Err(DecodeError::Batch("entry count exceeds what the body can hold"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Batch("truncated entry length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len < 1 || len > tail.len() {
            return Err(DecodeError::Batch("entry length out of bounds"));
        }
        let (entry, tail) = tail.split_at(len);
        let k = entry[0];
        if !batchable(k) {
            return Err(DecodeError::NotBatchable(k));
        }
        out.push(decode_envelope(k, &entry[1..])?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind: kind::BATCH,
            extra: rest.len(),
        });
    }
    Ok(out)
}

/// bincode's limit is a type parameter; pick the smallest tier at least as large as the body
/// so that a hostile length inside a small body can claim no more than 4x the body's size.
fn body<T: DeserializeOwned>(kind: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    macro_rules! tiers {
        ($($n:literal),*) => {
            $(
                if bytes.len() <= (1usize << $n) {
                    return finish_body(kind, bytes,
                        bincode::serde::decode_from_slice(bytes, config::standard().with_limit::<{ 1usize << $n }>()));
                }
            )*
        };
    }
    tiers!(12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    Err(DecodeError::Body {
        kind,
        reason: "body larger than 1 GiB".into(),
    })
}

fn finish_body<T>(
    kind: u8,
    bytes: &[u8],
    r: Result<(T, usize), bincode::error::DecodeError>,
) -> Result<T, DecodeError> {
    match r {
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

fn decode_envelope(k: u8, b: &[u8]) -> Result<Envelope, DecodeError> {
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
/// # Errors
/// [`EncodeError::Codec`] if serde cannot represent the value.
pub fn encode_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(value, cfg()).map_err(|e| EncodeError::Codec(e.to_string()))
}

/// Decodes a user message encoded by [`encode_payload`], rejecting trailing bytes.
///
/// # Errors
/// [`DecodeError::Body`] (kind 0) or [`DecodeError::TrailingBytes`].
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    body(0, bytes)
}
