//! The harness's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Why a harness operation failed. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A binary the harness runs is not built.
    #[error(
        "{path} does not exist: build the binaries first (cargo build --workspace --bins; the bank example needs cargo build -p cortex-node --examples) or point CORTEX_BIN_DIR at them"
    )]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A command (certs, kill) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and output.
        detail: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node process exited while it was expected to run.
    #[error("node {name} exited ({status}) during {during}; last log lines:\n{log_tail}")]
    Exited {
        /// Node name.
        name: String,
        /// Exit status.
        status: String,
        /// What the harness was waiting for.
        during: String,
        /// The end of its log.
        log_tail: String,
    },
    /// An HTTP request failed or answered something unreadable.
    #[error("GET http://{addr}{path}: {detail}")]
    Http {
        /// The server.
        addr: std::net::SocketAddr,
        /// The path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A condition did not hold before its deadline.
    #[error("timed out after {after:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// The condition.
        what: String,
        /// The deadline.
        after: Duration,
        /// What was seen the last time it was checked.
        last: String,
    },
    /// The operation does not apply in the node's current state.
    #[error("{0}")]
    State(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}
