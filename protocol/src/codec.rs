//! Framing and the envelope codec.
//!
//! A frame is `u32 length (big-endian) | u8 version | u8 kind | body`, where `length` counts
//! the version byte, the kind byte and the body. Bodies are bincode 2 (standard config:
//! little-endian, varint integers) of the envelope struct the kind byte names. The codec is
//! private to this crate: callers use [`encode`], [`BatchWriter`] and [`FrameDecoder`], so
//! it can change without touching them.
//!
//! Decoding checks the length against the configured limit before touching (or allocating
//! for) the body, decodes bodies straight into validated types, and rejects trailing bytes.

use crate::body::{batchable, check_envelope, decode_envelope, encode_body};
use crate::envelope::{Envelope, Frame, SUPPORTED_VERSIONS};
use crate::error::{DecodeError, EncodeError};

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
/// [`EncodeError::FrameTooLarge`] past [`DEFAULT_MAX_FRAME`], [`EncodeError::InvalidField`]
/// for a value the peer would refuse (an over-long `tracestate`, a bad system actor name);
/// `out` is left as it was.
pub fn encode(env: &Envelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_with_limit(env, out, DEFAULT_MAX_FRAME)
}

/// [`encode`] with an explicit frame limit (the length field's value: version, kind and
/// body bytes).
///
/// # Errors
/// As [`encode`].
pub fn encode_with_limit(env: &Envelope, out: &mut Vec<u8>, max: usize) -> Result<(), EncodeError> {
    check_envelope(env)?;
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, CURRENT_VERSION, env.kind()]);
    if let Err(e) = encode_body(env, out) {
        out.truncate(start);
        return Err(e);
    }
    finish_frame(out, start, max)
}

/// Writes the length of the frame (or batch entry) that starts at `start`, or removes it
/// if it is too long.
fn finish_frame(out: &mut Vec<u8>, start: usize, max: usize) -> Result<(), EncodeError> {
    let len = out.len() - start - 4;
    let Some(len32) = u32::try_from(len).ok().filter(|_| len <= max) else {
        out.truncate(start);
        return Err(EncodeError::FrameTooLarge { len, max });
    };
    // The caller wrote 4 placeholder bytes at `start`, so the range is in bounds.
    out[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// Coalesces many small envelopes into one batch frame.
///
/// The frame body is `u32 count (big-endian)` then `count` entries, each
/// `u32 length (big-endian) | u8 kind | body` where `length` counts the kind byte and body.
/// Handshake and error envelopes cannot be batched.
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

/// Bytes a batch adds before its entries: the frame header and the entry count.
const BATCH_OVERHEAD: usize = HEADER_LEN + 4;

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an envelope.
    ///
    /// # Errors
    /// [`EncodeError::NotBatchable`] for handshake and error envelopes, and the errors of
    /// [`encode`]; the batch is unchanged.
    pub fn push(&mut self, env: &Envelope) -> Result<(), EncodeError> {
        let k = env.kind();
        if !batchable(k) {
            return Err(EncodeError::NotBatchable(k));
        }
        if self.count == u32::MAX {
            return Err(EncodeError::FrameTooLarge {
                len: self.encoded_len(),
                max: DEFAULT_MAX_FRAME,
            });
        }
        check_envelope(env)?;
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
    /// [`BatchWriter::push`], unless the finished frame would then exceed `max` (the length
    /// field's value). Returns `Ok(false)`, batch unchanged, when the envelope does not fit:
    /// flush with [`BatchWriter::finish_with_limit`] and push again (an envelope too large
    /// for an empty batch belongs in a frame of its own).
    ///
    /// # Errors
    /// As [`BatchWriter::push`].
    pub fn push_within(&mut self, env: &Envelope, max: usize) -> Result<bool, EncodeError> {
        let (before, count) = (self.entries.len(), self.count);
        self.push(env)?;
        if self.encoded_len() - 4 > max {
            self.entries.truncate(before);
            self.count = count;
            return Ok(false);
        }
        Ok(true)
    }
    /// Envelopes pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes the finished frame will take, length prefix included.
    pub fn encoded_len(&self) -> usize {
        BATCH_OVERHEAD + self.entries.len()
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
///
/// It keeps no state between calls: a transport reads into its own buffer, asks
/// [`FrameDecoder::frame_len`] how much it needs, then calls [`FrameDecoder::decode`] and
/// drops the bytes it reports used. Any error means the peer is broken or hostile: send the
/// [`ErrorFrame`](crate::ErrorFrame) it converts into and close the connection.
///
/// ```
/// use cortex_protocol::{DecodeError, FrameDecoder};
/// let decoder = FrameDecoder::new(1024);
/// // A 2 GiB length is refused from the 4-byte prefix alone, before any body arrives.
/// assert!(matches!(
///     decoder.decode(&[0x80, 0, 0, 0]),
///     Err(DecodeError::FrameTooLarge { .. })
/// ));
/// // An incomplete frame asks for more bytes.
/// assert_eq!(decoder.decode(&[0, 0, 0, 9, 1]), Ok(None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// A decoder refusing frames whose length field exceeds `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }
    /// The configured limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Reads the 4-byte length prefix and checks it. `Ok(None)` with fewer than 4 bytes,
    /// otherwise the frame's total size, prefix included.
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
    /// the frame and how many bytes it used (bytes after it are left alone).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the problem; the connection should be closed.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some((kind, body, total)) = self.frame(buf)? else {
            return Ok(None);
        };
        let out = if kind == kind::BATCH {
            let mut v = Vec::new();
            decode_batch(body, &mut v)?;
            Frame::Batch(v)
        } else {
            Frame::Single(decode_envelope(kind, body)?)
        };
        Ok(Some((out, total)))
    }

    /// [`Self::decode`], handing the frame's envelopes to `sink` as they decode (a batch's
    /// are not collected into a vector first). `Ok(Some((used, count)))`: the bytes the
    /// frame used and the envelopes pushed. On an error, some of a batch's envelopes may
    /// already be in `sink`; the connection should be closed anyway.
    ///
    /// # Errors
    /// As [`Self::decode`].
    ///
    /// # Examples
    /// ```
    /// use cortex_protocol::{Envelope, FrameDecoder, Ping, encode};
    /// let mut buf = Vec::new();
    /// encode(&Envelope::Ping(Ping { nonce: 7 }), &mut buf).unwrap();
    /// let mut got: Vec<Envelope> = Vec::new();
    /// let (used, n) = FrameDecoder::default().decode_into(&buf, &mut got).unwrap().unwrap();
    /// assert_eq!((used, n), (buf.len(), 1));
    /// assert!(matches!(got[0], Envelope::Ping(Ping { nonce: 7 })));
    /// ```
    pub fn decode_into(
        &self,
        buf: &[u8],
        sink: &mut impl EnvelopeSink,
    ) -> Result<Option<(usize, usize)>, DecodeError> {
        let Some((kind, body, total)) = self.frame(buf)? else {
            return Ok(None);
        };
        let n = if kind == kind::BATCH {
            decode_batch(body, sink)?
        } else {
            sink.push(decode_envelope(kind, body)?);
            1
        };
        Ok(Some((total, n)))
    }

    /// The first whole frame in `buf`: its kind, its body and its length with the header.
    fn frame<'b>(&self, buf: &'b [u8]) -> Result<Option<FrameParts<'b>>, DecodeError> {
        let Some(total) = self.frame_len(buf)? else {
            return Ok(None);
        };
        let Some(frame) = buf.get(..total) else {
            return Ok(None);
        };
        let Some((&[_, _, _, _, version, kind], body)) = frame.split_first_chunk::<HEADER_LEN>()
        else {
            // frame_len guarantees total >= 4 + 2 = HEADER_LEN.
            return Err(DecodeError::FrameTooShort(total.saturating_sub(4)));
        };
        // Hello and Error have a layout frozen across versions, so that peers that share no
        // version can still tell each other so.
        let frozen = matches!(kind, kind::HELLO | kind::ERROR);
        if !frozen && !(SUPPORTED_VERSIONS.min..=SUPPORTED_VERSIONS.max).contains(&version) {
            return Err(DecodeError::UnsupportedVersion {
                got: version,
                supported: SUPPORTED_VERSIONS,
            });
        }
        Ok(Some((kind, body, total)))
    }

    /// The version byte of the first frame, once at least 5 bytes are buffered (the frame
    /// itself may still be incomplete).
    pub fn peek_version(&self, buf: &[u8]) -> Option<u8> {
        buf.get(4).copied()
    }
}

/// Smallest batch entry: length (4), kind (1), and a body of at least one byte (every
/// envelope body holds at least one field).
const MIN_ENTRY: usize = 6;
/// How many times its body's size a batch's envelopes may take in memory before their
/// vector is reserved whole (see `decode_batch`).
const RESERVE_RATIO: usize = 4;

/// A whole frame's kind, body, and length with its header.
type FrameParts<'b> = (u8, &'b [u8], usize);

/// Where [`FrameDecoder::decode_into`] puts decoded envelopes.
pub trait EnvelopeSink {
    /// Room for `additional` more envelopes is about to be needed (a hint).
    fn reserve(&mut self, additional: usize);
    /// One decoded envelope, in frame order.
    fn push(&mut self, env: Envelope);
}

impl EnvelopeSink for Vec<Envelope> {
    fn reserve(&mut self, additional: usize) {
        self.reserve_exact(additional);
    }
    fn push(&mut self, env: Envelope) {
        Vec::push(self, env);
    }
}

/// Decodes a batch body into `out`; the number of envelopes pushed.
fn decode_batch(body: &[u8], out: &mut impl EnvelopeSink) -> Result<usize, DecodeError> {
    let (count, mut rest) = body
        .split_first_chunk::<4>()
        .ok_or(DecodeError::Batch("missing entry count"))?;
    let count = u32::from_be_bytes(*count) as usize;
    // A count the body could not hold is refused before the vector is sized from it.
    if count > rest.len() / MIN_ENTRY {
        return Err(DecodeError::Batch(
            "entry count exceeds what the body can hold",
        ));
    }
    // Envelopes are far larger in memory than their smallest encoding: reserve no more
    // than the body's own size, and grow with what actually decodes. Once the first entry
    // has decoded, a count whose envelopes take at most `RESERVE_RATIO` times the body's
    // bytes in memory (a batch of ordinary tells: ~2.5x) is reserved whole, which spares
    // the doubling's copies of 256-byte envelopes.
    out.reserve(count.min(rest.len() / size_of::<Envelope>()));
    let whole = count.saturating_mul(size_of::<Envelope>()) <= RESERVE_RATIO * body.len();
    for i in 0..count {
        if i == 1 && whole {
            out.reserve(count - 1);
        }
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Batch("truncated entry length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err(DecodeError::Batch("entry length past the end of the batch"));
        }
        let (entry, tail) = tail.split_at(len);
        let Some((&k, entry_body)) = entry.split_first() else {
            return Err(DecodeError::Batch("empty entry (no kind byte)"));
        };
        if !batchable(k) {
            return Err(DecodeError::NotBatchable(k));
        }
        out.push(decode_envelope(k, entry_body)?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind: kind::BATCH,
            extra: rest.len(),
        });
    }
    Ok(count)
}
