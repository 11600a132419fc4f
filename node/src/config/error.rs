//! What can be wrong with the settings, each message naming the setting and how to fix it.

use std::path::PathBuf;

/// A setting that could not be read or is not acceptable. Every message is one line that
/// names the setting (flag, environment variable or file) and says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line could not be parsed.
    #[error("{0}")]
    Usage(String),
    /// An environment variable held a value that does not parse.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable, e.g. `CORTEX_QUIC_BIND`.
        var: String,
        /// What was wrong with its value.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}; check --config / CORTEX_CONFIG", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown or mistyped key.
    #[error("config file {}{}: {message}", path.display(), location(*line, *column))]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// What the parser said.
        message: String,
    },
    /// A required setting has no value.
    #[error("missing {setting}: {hint}")]
    Missing {
        /// The setting (in flag form).
        setting: &'static str,
        /// How to provide it.
        hint: String,
    },
    /// A setting has a value that is not acceptable.
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        /// The setting (in flag form).
        setting: &'static str,
        /// The offending value (secrets are never shown).
        value: String,
        /// Why, and what is acceptable.
        reason: String,
    },
    /// A file named by a setting (secret, token list) could not be read.
    #[error("cannot read {setting} file {}: {source}", path.display())]
    SettingFile {
        /// The setting (in flag form).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l} column {c}"),
        (Some(l), None) => format!(" line {l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    pub(crate) fn invalid(
        setting: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            setting,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// The first line of a clap error without its `error: ` prefix: clap renders usage and a
/// "try --help" trailer that do not belong in a one-line message.
pub(crate) fn clap_one_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim()
        .to_string()
}
