//! Codec errors, and how a decode failure is reported to the peer.

use crate::envelope::{ErrorCode, ErrorFrame, SUPPORTED_VERSIONS, VersionRange};

/// Why bytes did not decode. Always the peer's fault (or a corrupted stream); the decoder
/// keeps no state, nothing was consumed, and the connection should be closed, ideally after
/// sending the [`ErrorFrame`] this converts into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length field exceeds the configured maximum.
    #[error(
        "frame of {len} bytes exceeds the limit of {max}: raise max_frame on both sides or send smaller messages"
    )]
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
    #[error(
        "frame version {got} is not spoken here (supported {}..={}): upgrade the older side",
        supported.min, supported.max
    )]
    UnsupportedVersion {
        /// The version byte.
        got: u8,
        /// What this side speaks.
        supported: VersionRange,
    },
    /// An unknown kind byte.
    #[error("unknown frame kind 0x{0:02x}: the peer speaks a newer or foreign protocol")]
    UnknownKind(u8),
    /// The body is not a valid envelope of its kind (bad tag, bad UTF-8, an invalid id, a
    /// length past the end, a value nested too deep ...).
    #[error("invalid body for frame kind 0x{kind:02x}: {reason}")]
    Body {
        /// Kind byte (0 for a user payload decoded with `decode_payload`).
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

/// Why an envelope could not be encoded. Always the caller's problem; the output buffer is
/// left as it was.
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
    /// A field holds a value the peer's decoder would refuse (checked here so that one bad
    /// message fails alone instead of closing the connection it would travel on).
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl From<DecodeError> for ErrorFrame {
    /// The error frame to send before closing a connection whose bytes did not decode.
    ///
    /// ```
    /// use cortex_protocol::{DecodeError, ErrorCode, ErrorFrame, FrameDecoder};
    /// let err = FrameDecoder::default().decode(&[0, 0, 0, 2, 9, 0x10]).unwrap_err();
    /// let frame = ErrorFrame::from(err);
    /// assert_eq!(frame.code, ErrorCode::VersionMismatch);
    /// assert!(frame.supported.is_some());
    /// ```
    fn from(e: DecodeError) -> Self {
        let (code, supported) = match e {
            DecodeError::UnsupportedVersion { .. } => {
                (ErrorCode::VersionMismatch, Some(SUPPORTED_VERSIONS))
            }
            _ => (ErrorCode::ProtocolViolation, None),
        };
        ErrorFrame {
            code,
            detail: e.to_string(),
            supported,
        }
    }
}
