//! The `cortex` command line: inspect a cluster and talk to its actors from the shell.
//!
//! Cluster inspection (`members`, `ring`, `activations`) and JSON messages go to a node's
//! admin HTTP endpoint (`--node`); raw bincode messages (`--payload-hex`) and `subscribe`
//! go over QUIC like any SDK client (`--seed` plus TLS flags). Human-readable tables by
//! default, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the operation failed (the cluster answered with an error),
//! 2 usage error, 3 unreachable, 4 timeout.

mod commands;
mod output;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use commands::run;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed (the cluster answered with an error).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no node could be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the deadline passed.
pub const EXIT_TIMEOUT: u8 = 4;

/// Talk to a Cortex cluster.
///
/// Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 unreachable, 4 timeout.
#[derive(Debug, Parser)]
#[command(name = "cortex", version)]
pub struct Cli {
    /// Admin HTTP address of any node.
    #[arg(
        long,
        global = true,
        env = "CORTEX_NODE",
        default_value = "http://127.0.0.1:7480"
    )]
    pub node: String,
    /// QUIC address of a node (repeat for more), for raw messages and subscriptions.
    #[arg(
        long = "seed",
        global = true,
        env = "CORTEX_SEEDS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    pub seeds: Vec<String>,
    /// Cluster name the nodes run with.
    #[arg(
        long,
        global = true,
        env = "CORTEX_CLUSTER_NAME",
        default_value = "cortex"
    )]
    pub cluster: String,
    /// Directory with ca.crt and the client certificate NAME.crt / NAME.key.
    #[arg(
        long,
        global = true,
        env = "CORTEX_TLS_DIR",
        default_value = ".cortex/dev-ca"
    )]
    pub tls_dir: PathBuf,
    /// Client certificate name inside --tls-dir (`cortex-node certs issue NAME --client`).
    #[arg(
        long,
        global = true,
        env = "CORTEX_CLIENT_CERT_NAME",
        default_value = "client"
    )]
    pub cert_name: String,
    /// CA certificate (overrides --tls-dir).
    #[arg(long, global = true, env = "CORTEX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (overrides --tls-dir).
    #[arg(long, global = true, env = "CORTEX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (overrides --tls-dir).
    #[arg(long, global = true, env = "CORTEX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token, for nodes started with --client-token (instead of a certificate).
    #[arg(
        long,
        global = true,
        env = "CORTEX_CLIENT_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Deadline of each operation (e.g. 500ms, 5s, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Deadline for dialing a node over QUIC.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Payload of a message: JSON (through the admin endpoint) or raw bincode (over QUIC).
#[derive(Debug, Clone, clap::Args)]
pub struct Payload {
    /// The message as JSON (sent to --node, which converts it with the message's type).
    #[arg(value_name = "JSON")]
    pub body: Option<String>,
    /// The message already encoded with the wire codec (bincode), as hex; sent over QUIC.
    #[arg(long, value_name = "HEX", conflicts_with = "body")]
    pub payload_hex: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// List the cluster's members as --node sees them.
    Members,
    /// Show each node's share of the ring, or the owner of one actor id.
    Ring {
        /// An actor id (KIND/KEY) to locate.
        id: Option<String>,
    },
    /// Tell an actor (at most once).
    Tell {
        /// The actor, KIND/KEY.
        id: String,
        /// The registered message name, e.g. bank.Deposit.
        message: String,
        /// The payload.
        #[command(flatten)]
        payload: Payload,
    },
    /// Ask an actor and print its reply.
    Ask {
        /// The actor, KIND/KEY.
        id: String,
        /// The registered message name, e.g. bank.Deposit.
        message: String,
        /// The payload.
        #[command(flatten)]
        payload: Payload,
        /// Retries under an idempotency key (raw asks over QUIC only).
        #[arg(long, default_value_t = 0)]
        retries: u32,
    },
    /// Publish a message to a topic.
    Publish {
        /// The topic.
        topic: String,
        /// The registered message name.
        message: String,
        /// The payload.
        #[command(flatten)]
        payload: Payload,
    },
    /// Print the messages published to a topic (over QUIC) until Ctrl-C, --count or --for.
    Subscribe {
        /// The topic.
        topic: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long (e.g. 30s).
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// List the activations recorded by one node (by name, or an http:// URL).
    Activations {
        /// Node name (looked up through --node) or its admin URL.
        #[arg(value_name = "NODE")]
        member: String,
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

/// Parses `500ms`, `2s`, `1m`, `1h` or `250us`.
///
/// # Errors
/// A message saying how to write a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: write a number with a unit, e.g. 500ms, 5s, 1m");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    })
}

/// Parses the command line; `Err` carries the text to print and the exit code (0 for
/// help and version, 2 for usage errors).
///
/// # Errors
/// As described.
pub fn parse<I, T>(args: I) -> Result<Cli, (String, u8)>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| {
        use clap::error::ErrorKind;
        let code = match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => EXIT_OK,
            _ => EXIT_USAGE,
        };
        (e.to_string(), code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn usage_errors_exit_2_and_help_0() {
        assert_eq!(parse(["cortex"]).unwrap_err().1, EXIT_USAGE);
        assert_eq!(parse(["cortex", "bogus"]).unwrap_err().1, EXIT_USAGE);
        assert_eq!(parse(["cortex", "--help"]).unwrap_err().1, EXIT_OK);
        let e = parse(["cortex", "ask", "a/b", "m", "{}", "--payload-hex", "00"]).unwrap_err();
        assert_eq!(e.1, EXIT_USAGE, "JSON and hex conflict");
        let cli = parse(["cortex", "--json", "ring", "account/alice"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Ring { id: Some(_) }));
        let cli = parse(["cortex", "--json", "ask", "a/b", "m.N", "{\"x\": 1}"]).unwrap();
        let Command::Ask { payload, .. } = cli.command else {
            panic!("not an ask")
        };
        assert_eq!(payload.body.as_deref(), Some("{\"x\": 1}"));
        let cli = parse(["cortex", "tell", "a/b", "m.N", "--payload-hex="]).unwrap();
        let Command::Tell { payload, .. } = cli.command else {
            panic!("not a tell")
        };
        assert_eq!(payload.payload_hex.as_deref(), Some(""));
        let cli = parse(["cortex", "--node", "http://h:1", "activations", "n1"]).unwrap();
        assert_eq!(cli.node, "http://h:1");
        assert!(matches!(cli.command, Command::Activations { member, .. } if member == "n1"));
    }
}
