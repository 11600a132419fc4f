//! Layering: flags > `CORTEX_*` environment > TOML file > defaults.
//!
//! clap reads the process environment itself when an argument has `env = ...`; to keep the
//! layers testable without touching process-global state, parsing strips those attributes
//! and applies the environment from an explicit map instead, through the same value parsers.
//! The attributes stay on the derive so that `--help` shows each variable.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use clap::{Args, Command, FromArgMatches};

use super::error::{ConfigError, clap_one_line};
use super::{NodeConfig, Settings};

/// The standalone command that parses only [`Settings`] (program name `cortex-node`).
pub fn settings_command() -> Command {
    Settings::augment_args(Command::new("cortex-node")).mut_args(|a| a.hide_env_values(true))
}

/// Removes every `env = ...` from `cmd` and its subcommands, so that parsing reads flags only.
pub fn strip_env(cmd: Command) -> Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd.mut_args(|a| a.env(None::<&'static str>));
    for name in names {
        cmd = cmd.mut_subcommand(name, strip_env);
    }
    cmd
}

/// Parses `args` (the first item is the program name) as settings flags and resolves them
/// against `env`: the whole precedence chain in one call, without reading the process
/// environment.
///
/// # Errors
/// [`ConfigError`] naming the first bad setting.
///
/// # Examples
/// ```
/// use std::collections::HashMap;
/// let dir = tempfile::tempdir().unwrap();
/// let env = HashMap::from([
///     ("CORTEX_CLUSTER_SECRET".to_string(), "0123456789abcdef0123".to_string()),
///     ("CORTEX_TLS_DIR".to_string(), dir.path().display().to_string()),
/// ]);
/// let cfg = cortex_node::config::load_from(["cortex-node", "--node-name", "n1"], &env).unwrap();
/// assert_eq!(cfg.node_name, "n1");
/// assert_eq!(cfg.vnodes, 160);
/// ```
pub fn load_from<I, T>(args: I, env: &HashMap<String, String>) -> Result<NodeConfig, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = strip_env(settings_command())
        .try_get_matches_from(args)
        .map_err(|e| ConfigError::Usage(clap_one_line(&e)))?;
    let flags =
        Settings::from_arg_matches(&matches).map_err(|e| ConfigError::Usage(clap_one_line(&e)))?;
    resolve(flags, env)
}

/// Resolves settings given as flags against the environment map, the config file (named by
/// `--config` or `CORTEX_CONFIG`) and the defaults, and validates the result.
///
/// # Errors
/// [`ConfigError`] naming the first bad setting.
pub fn resolve(flags: Settings, env: &HashMap<String, String>) -> Result<NodeConfig, ConfigError> {
    let above_file = flags.or(env_layer(env)?);
    let file = match &above_file.config {
        Some(path) => file_layer(path)?,
        None => Settings::default(),
    };
    NodeConfig::from_settings(above_file.or(file), env)
}

/// The settings given by `CORTEX_*` variables in `env`. Empty values count as unset
/// (Kubernetes manifests often template empty strings).
///
/// # Errors
/// [`ConfigError::Env`] naming the variable whose value does not parse.
pub fn env_layer(env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let full = settings_command();
    let stripped = strip_env(full.clone());
    let mut acc = Settings::default();
    for arg in full.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(var) = var.to_str() else { continue };
        let Some(value) = env.get(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        // `--flag=value` so that a value starting with '-' is not taken for a flag.
        let argv = [
            OsString::from("cortex-node"),
            OsString::from(format!("--{long}={value}")),
        ];
        let one = stripped
            .clone()
            .try_get_matches_from(argv)
            .and_then(|m| Settings::from_arg_matches(&m))
            .map_err(|e| ConfigError::Env {
                var: var.to_string(),
                reason: clap_one_line(&e),
            })?;
        acc = acc.or(one);
    }
    Ok(acc)
}

/// The settings in a TOML file.
///
/// # Errors
/// [`ConfigError::FileRead`] or [`ConfigError::FileSyntax`] with the line and column.
pub fn file_layer(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileRead {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str::<Settings>(&text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(&text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::FileSyntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().replace('\n', " ").trim().to_string(),
        }
    })
}
