//! Cortex chaos harness: starts real node processes (in one network namespace each when
//! root, else on loopback), runs a register / counter / pub-sub workload through
//! `cortex-client`, injects a scenario's faults (kill -9, SIGSTOP, graceful and crash
//! restarts, partitions, packet loss, added delay), then checks the recorded history for
//! lost or duplicated work, double activations, slow convergence and missed deadlines,
//! and writes a report (`history.jsonl`, `summary.json`, `report.html` with plots).
//!
//! Start from [`run::run`] with a [`scenario::Scenario`], or the `cortex-chaos` binary:
//!
//! ```no_run
//! # async fn demo() -> Result<(), cortex_chaos::ChaosError> {
//! use cortex_chaos::{run::{RunOptions, run}, scenario::Scenario};
//! let s = Scenario::load("chaos/scenarios/kill-one.toml".as_ref())?;
//! let out = run(&s, RunOptions::short("target/chaos-report".into())).await?;
//! assert!(out.passed());
//! # Ok(()) }
//! ```
//!
//! It drives the node binary from outside and never links the node crate.

use std::path::PathBuf;

pub mod check;
pub mod faults;
pub mod history;
// The bank host's message types, shared verbatim (names and shapes must match).
#[path = "../../node/examples/shared/messages.rs"]
mod messages;
pub mod net;
pub mod nfq_hold;
pub mod nodes;
pub mod observe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod workload;

/// Why a chaos run could not be carried out (a checker failing is not an error: see
/// [`run::RunOutcome`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// The scenario file is unreadable or invalid.
    #[error("scenario {path}: {detail}")]
    Scenario {
        /// File.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A binary the run needs is not built.
    #[error(
        "{path} is missing: build it with `cargo build -p cortex-node --examples` (or set CORTEX_BIN_DIR / CORTEX_CHAOS_NODE_BIN)"
    )]
    MissingBinary {
        /// Expected path.
        path: PathBuf,
    },
    /// A system command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// Command line.
        command: String,
        /// Status and output.
        detail: String,
    },
    /// A recorded history has a line that is not a history record.
    #[error(
        "{path}:{line}: not a cortex-chaos history record ({detail}); pass the history.jsonl of a run's report folder"
    )]
    History {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The cluster or client did not get going.
    #[error("{0}")]
    State(String),
}

impl ChaosError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ChaosError::Io {
            path: path.into(),
            source,
        }
    }
}
