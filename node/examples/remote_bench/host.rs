//! `remote_bench run ...`: a node (the full `cortex-node run` command line, bank kinds plus
//! `sink`) that optionally runs a workload driver from inside the cluster.
//!
//! Driver flags are taken off the command line before the node parses it:
//! `--workload=NAME` and any `--bench-KEY=VALUE` (see `workload.rs`). The node keeps serving
//! after its driver ends, until SIGINT or SIGTERM, so that its activation log can be read.

use std::collections::HashMap;
use std::process::ExitCode;

use cortex_node::cli::{self, Invocation};
use cortex_node::{NodeBuilder, telemetry};

/// Driver options: `--workload=NAME` and `--bench-KEY=VALUE`.
#[derive(Debug, Default, Clone)]
pub(crate) struct DriverOpts {
    pub(crate) workload: Option<String>,
    pub(crate) kv: HashMap<String, String>,
}

impl DriverOpts {
    /// The value of `--bench-KEY`, parsed, or `default`.
    pub(crate) fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.kv.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--bench-{key}={v} is not a valid value")),
        }
    }

    /// The value of `--bench-KEY` as text, if given.
    pub(crate) fn text(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }
}

/// Splits the driver flags off `args`.
pub(crate) fn split_args(args: Vec<String>) -> (Vec<String>, DriverOpts) {
    let mut rest = Vec::new();
    let mut opts = DriverOpts::default();
    for a in args {
        if let Some(w) = a.strip_prefix("--workload=") {
            opts.workload = Some(w.to_owned());
        } else if let Some(kv) = a.strip_prefix("--bench-") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
            opts.kv.insert(k.to_owned(), v.to_owned());
        } else {
            rest.push(a);
        }
    }
    (rest, opts)
}

/// Runs `run`, `certs` or `dev` like `cortex-node`, with the bench kinds and a driver.
pub(crate) fn main(args: Vec<String>) -> ExitCode {
    let (node_args, opts) = split_args(args);
    let env = cli::process_env();
    let (config, exit_with_parent) = match cli::parse(node_args, &env) {
        Ok(Invocation::Run {
            config,
            exit_with_parent,
        }) => (*config, exit_with_parent),
        Ok(other) => return cli::execute(other),
        Err(exit) => return exit.report(),
    };
    if let Err(e) = telemetry::init(config.log_format, &config.log_level) {
        eprintln!("remote_bench: error: {e}");
        return ExitCode::from(cli::EXIT_USAGE);
    }
    cortex_transport::tls::install_crypto_provider();
    if exit_with_parent {
        cli::exit_when_stdin_closes();
    }
    // `--bench-workers=N`: tokio worker threads of this node (default: one per core).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match opts.get::<usize>("workers", 0) {
        Ok(0) => {}
        Ok(n) => {
            builder.worker_threads(n);
        }
        Err(e) => {
            eprintln!("remote_bench: error: {e}");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("remote_bench: error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    match rt.block_on(serve(config, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remote_bench: error: {e}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}

async fn serve(config: cortex_node::config::NodeConfig, opts: DriverOpts) -> Result<(), String> {
    let node = crate::kinds::kinds(NodeBuilder::new(config))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    // The driver is owned here: aborted when the node stops.
    let driver = opts.workload.clone().map(|w| {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::workload::run(&w, &node, &opts).await {
                crate::emit("error", serde_json::json!({ "workload": w, "error": e }));
            }
        })
    });
    wait_for_signal().await;
    if let Some(d) = driver {
        d.abort();
    }
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
