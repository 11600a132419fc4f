//! Log setup: `tracing` events to stderr, human or JSON, filtered by the configured level.
//!
//! Call [`init`] once, first thing in `main`, with the `log_format` and `log_level` of the
//! [`crate::config::NodeConfig`]. Libraries only emit events; the binary decides where they go.

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The filter does not parse.
    #[error(
        "invalid log filter {filter:?}: {reason}; use a level (error, warn, info, debug, trace) or directives like info,cortex_node=debug"
    )]
    Filter {
        /// The filter as given.
        filter: String,
        /// What the parser said.
        reason: String,
    },
    /// A global subscriber was already installed (init called twice).
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// Installs the global subscriber: events at or above `filter` (tracing `EnvFilter`
/// directives, e.g. `info,cortex_node=debug`) go to stderr, as coloured text when `format`
/// is [`LogFormat::Human`] and stderr is a terminal, or as one JSON object per line.
///
/// # Errors
/// [`TelemetryError`] if the filter is invalid or a subscriber is already installed.
///
/// # Examples
/// ```
/// use cortex_node::{config::LogFormat, telemetry};
/// telemetry::init(LogFormat::Json, "warn").unwrap();
/// assert!(telemetry::init(LogFormat::Human, "info").is_err(), "only once per process");
/// ```
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
            filter: filter.to_string(),
            reason: e.to_string(),
        })?;
    // Internal-error reporting uses eprintln!, which panics when stderr is a closed pipe
    // (a `cortex-node dev` parent that died): losing log lines beats losing the thread.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let result = match format {
        LogFormat::Human => {
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)
}
