//! The process entry point shared by the stock `cortex-node` binary and user binaries that
//! register their own actor kinds: same subcommands, flags, environment and exit codes.

use std::process::ExitCode;

use super::NodeBuilder;
use crate::cli::{self, EXIT_FAILURE, EXIT_USAGE, Invocation};

/// Runs the `cortex-node` command line (`run`, `dev`, `certs`) with `customize` applied to
/// the node builder of `run`, e.g. to register actor kinds. `dev` starts children of the
/// current executable, so a user binary's dev cluster hosts the user's kinds.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     cortex_node::main_with(|builder| builder /* .kind(...) */)
/// }
/// ```
#[allow(clippy::print_stderr)]
pub fn main_with(customize: impl FnOnce(NodeBuilder) -> NodeBuilder) -> ExitCode {
    let env = cli::process_env();
    let (config, exit_with_parent) = match cli::parse(std::env::args_os(), &env) {
        Ok(Invocation::Run {
            config,
            exit_with_parent,
        }) => (*config, exit_with_parent),
        Ok(other) => return cli::execute(other),
        Err(exit) => return exit.report(),
    };
    cortex_transport::tls::install_crypto_provider();
    if exit_with_parent {
        cli::exit_when_stdin_closes();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cortex-node: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // The OTLP exporter's gRPC channel lives on this runtime.
    let _guard = rt.enter();
    let tracer = match crate::trace::init(
        config.log_format,
        &config.log_level,
        config.otlp_endpoint.as_deref(),
        &config.node_name,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cortex-node: error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let node = config.node_name.clone();
    let builder = customize(NodeBuilder::new(config));
    let result = rt.block_on(super::run_builder(builder));
    if let Some(t) = tracer {
        // Flush spans still in the batch queue.
        let _ = t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(node = %node, error = format!("{e:#}"), "node failed");
            eprintln!("cortex-node: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
