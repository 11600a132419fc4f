//! The `cortex-node` command line: `run`, `dev` and `certs`.
//!
//! [`parse`] turns arguments and an environment map into an [`Invocation`] or a [`CliExit`]
//! (help, version, or a usage/config error with its exit code). `main` executes `run`
//! itself (it calls `cortex_node::run_node`); [`execute`] runs the other subcommands.
//! Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure.

use std::collections::HashMap;
use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::certs_cmd::{self, CertsCommand};
use crate::config::{self, ConfigError, NodeConfig, Settings};
use crate::dev::{self, DevArgs};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Cortex cluster node.
///
/// Every `run` setting can also come from a CORTEX_* environment variable or a TOML file
/// (--config); flags beat the environment, which beats the file, which beats the defaults.
#[derive(Debug, Parser)]
#[command(name = "cortex-node", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum CliCommand {
    /// Run a cluster node.
    Run(Box<RunArgs>),
    /// Run a local cluster of N nodes on 127.0.0.1 (a dev CA is made once and reused).
    Dev(DevArgs),
    /// Make the cluster CA and node or client certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `run` arguments: the node settings plus process options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Node settings.
    #[command(flatten)]
    pub settings: Settings,
    /// Exit when standard input closes: `cortex-node dev` sets it so that its children never
    /// outlive it, even when it is killed with SIGKILL.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// What to do, once the command line and the settings are understood.
#[derive(Debug)]
#[non_exhaustive]
pub enum Invocation {
    /// Run a node.
    Run {
        /// The validated settings.
        config: Box<NodeConfig>,
        /// Exit when stdin closes (set by `dev`).
        exit_with_parent: bool,
    },
    /// Run a local cluster.
    Dev(DevArgs),
    /// A `certs` subcommand.
    Certs(CertsCommand),
}

/// An early end: help or version text (code 0) or a usage/config error (code 2).
#[derive(Debug)]
pub struct CliExit {
    /// Process exit code.
    pub code: u8,
    /// Text to print (stdout for code 0, stderr otherwise), without a trailing newline.
    pub message: String,
}

impl CliExit {
    fn usage(message: String) -> Self {
        CliExit {
            code: EXIT_USAGE,
            message,
        }
    }

    /// Prints the message where it belongs and returns the exit code.
    #[allow(clippy::print_stdout, clippy::print_stderr)]
    pub fn report(self) -> ExitCode {
        if self.code == EXIT_OK {
            println!("{}", self.message);
        } else {
            eprintln!("{}", self.message);
        }
        ExitCode::from(self.code)
    }
}

impl From<ConfigError> for CliExit {
    fn from(e: ConfigError) -> Self {
        CliExit::usage(format!("cortex-node: error: {e}"))
    }
}

/// The full command with its `env = ...` annotations (for help output).
pub fn command() -> clap::Command {
    // Help shows each variable's name, never its current value (it may be a secret).
    Cli::command().mut_subcommand("run", |run| run.mut_args(|a| a.hide_env_values(true)))
}

/// Parses `args` (program name first) with `env` as the environment.
///
/// # Errors
/// [`CliExit`] for help/version (code 0) and for usage or configuration errors (code 2),
/// each with a message ready to print.
pub fn parse<I, T>(args: I, env: &HashMap<String, String>) -> Result<Invocation, CliExit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = match config::strip_env(command()).try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => return Err(clap_exit(&args, &e)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| clap_exit(&args, &e))?;
    match cli.command {
        CliCommand::Run(run) => {
            let config = config::resolve(run.settings, env)?;
            Ok(Invocation::Run {
                config: Box::new(config),
                exit_with_parent: run.exit_with_parent,
            })
        }
        CliCommand::Dev(d) => Ok(Invocation::Dev(d)),
        CliCommand::Certs(c) => Ok(Invocation::Certs(c)),
    }
}

/// Help and version come from the command with env annotations so `--help` shows every
/// `CORTEX_*` variable; errors are shortened to one line.
fn clap_exit(args: &[OsString], e: &clap::Error) -> CliExit {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let text = match command().try_get_matches_from(args) {
                Err(full) if full.kind() == e.kind() => full.to_string(),
                _ => e.to_string(),
            };
            CliExit {
                code: EXIT_OK,
                message: text.trim_end().to_string(),
            }
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            CliExit::usage(command().render_help().to_string().trim_end().to_string())
        }
        _ => CliExit::usage(format!(
            "cortex-node: error: {}; see cortex-node --help",
            config::clap_one_line(e)
        )),
    }
}

/// Runs `dev` or `certs` (not `run`, which `main` owns) and returns the exit code.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn execute(inv: Invocation) -> ExitCode {
    match inv {
        Invocation::Certs(cmd) => match certs_cmd::run(&cmd) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cortex-node: error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Invocation::Dev(args) => dev::main(args),
        Invocation::Run { .. } => {
            eprintln!("cortex-node: error: `run` is executed by main, not cli::execute");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The process environment as a map; variables that are not UTF-8 are skipped.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Sends this process SIGTERM when standard input reaches end of file or fails, so that a
/// child of `cortex-node dev` stops (gracefully, through its SIGTERM handling) when its
/// parent goes away, however the parent ended. Watching runs on a detached thread: a
/// blocking stdin read cannot be cancelled, and the thread dies with the process.
pub fn exit_when_stdin_closes() {
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            loop {
                match std::io::Read::read(&mut stdin, &mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Signal first: with the parent gone, stderr may be a closed pipe too.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::TERM,
            );
            tracing::warn!("parent process gone (stdin closed): stopping");
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the parent process");
    }
}
