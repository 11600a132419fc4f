//! The acceptor's side of version negotiation, as a pure function.
//!
//! The dialer sends [`Hello`] first; the acceptor answers [`Welcome`](crate::Welcome) with
//! the version [`answer_hello`] chose, or the [`ErrorFrame`] it returned, then closes. Hello
//! and Error frames are read whatever their version byte, so this works between any two
//! builds.

use crate::envelope::{ErrorCode, ErrorFrame, Hello, VersionRange};

/// Picks the version for a connection from the dialer's [`Hello`].
///
/// Checks the cluster name first (a node of another cluster learns nothing more), then
/// returns the newest version both sides speak.
///
/// ```
/// use cortex_protocol::*;
/// let hello = Hello {
///     versions: VersionRange { min: 1, max: 3 },
///     cluster: "prod".into(),
///     identity: PeerIdentity::Client { name: "cli".into() },
///     features: FEATURE_BATCH,
///     token: None,
/// };
/// assert_eq!(answer_hello(&hello, SUPPORTED_VERSIONS, "prod"), Ok(1));
///
/// let err = answer_hello(&hello, VersionRange { min: 4, max: 5 }, "prod").unwrap_err();
/// assert_eq!(err.code, ErrorCode::VersionMismatch);
/// assert_eq!(err.supported, Some(VersionRange { min: 4, max: 5 }));
///
/// let err = answer_hello(&hello, SUPPORTED_VERSIONS, "staging").unwrap_err();
/// assert_eq!(err.code, ErrorCode::Unauthorized);
/// ```
///
/// # Errors
/// An [`ErrorFrame`] to send before closing: [`ErrorCode::Unauthorized`] when the cluster
/// names differ, [`ErrorCode::VersionMismatch`] (with `supported: Some(ours)`) when the
/// ranges do not overlap.
pub fn answer_hello(hello: &Hello, ours: VersionRange, cluster: &str) -> Result<u8, ErrorFrame> {
    if hello.cluster != cluster {
        return Err(ErrorFrame {
            code: ErrorCode::Unauthorized,
            detail: format!(
                "this node belongs to cluster {cluster:?}, not {:?}: check the cluster name in the dialer's configuration",
                truncated(&hello.cluster)
            ),
            supported: None,
        });
    }
    let theirs = hello.versions;
    if theirs.min > theirs.max {
        return Err(ErrorFrame {
            code: ErrorCode::ProtocolViolation,
            detail: format!(
                "hello offers the empty version range {}..={}",
                theirs.min, theirs.max
            ),
            supported: Some(ours),
        });
    }
    ours.negotiate(&theirs).ok_or_else(|| ErrorFrame {
        code: ErrorCode::VersionMismatch,
        detail: format!(
            "no common protocol version: you speak {}..={}, this side {}..={}; upgrade the older side",
            theirs.min, theirs.max, ours.min, ours.max
        ),
        supported: Some(ours),
    })
}

/// Keeps peer-chosen text in our error messages short.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}
