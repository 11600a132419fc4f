//! Cross-process benchmarks and the node-hosted load driver of the cluster tests.
//!
//! ```sh
//! cargo run --release -p cortex-node --example remote_bench -- bench
//! ```
//! runs every measurement as separate processes of this executable on 127.0.0.1 and prints
//! a markdown table, each Cortex figure beside a raw quinn baseline measured in the same
//! run: remote tell throughput between two node processes (64-byte payloads, many actors),
//! remote ask round trips (closed-loop, and open-loop at 10k asks/s), and an ask forwarded
//! by a node that does not own the actor. See BENCHMARKS.md, "Cluster routing".
//!
//! Subcommands:
//! - `run ...`: a node with the full `cortex-node run` command line, hosting the bank
//!   example's kinds plus `sink`; `--workload=placement|pair` and `--bench-KEY=VALUE`
//!   add a driver that loads the cluster from inside this member and prints `BENCH {json}`
//!   lines on stdout (cluster-tests/tests/placement_kill.rs uses `placement`);
//! - `certs ...`, `dev ...`: as `cortex-node`;
//! - `bench`, `raw-server`, `raw-client`, `forward-client`: the benchmark and its parts.
// A command line tool: results go to stdout, progress to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "shared/actors.rs"]
mod actors;
#[path = "remote_bench/forward.rs"]
mod forward;
#[path = "remote_bench/host.rs"]
mod host;
#[path = "remote_bench/kinds.rs"]
mod kinds;
#[path = "shared/messages.rs"]
mod messages;
#[path = "remote_bench/openloop.rs"]
mod openloop;
#[path = "remote_bench/orchestrate.rs"]
mod orchestrate;
#[path = "remote_bench/pacer.rs"]
mod pacer;
#[path = "remote_bench/placement.rs"]
mod placement;
#[path = "remote_bench/raw_quinn.rs"]
mod raw_quinn;
#[path = "remote_bench/report.rs"]
mod report;
#[path = "remote_bench/stats.rs"]
mod stats;
#[path = "remote_bench/workload.rs"]
mod workload;

use std::process::ExitCode;

pub(crate) use stats::emit;

const USAGE: &str = "usage: remote_bench (run|certs|dev) ... | bench [--bench-only=raw,pair,forward] \
[--bench-tells=N] [--bench-rate=N] [--bench-secs=N] | raw-server ... | raw-client ... | forward-client ...";

// The same allocator as the `cortex-node` binary (raw quinn baselines included).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let sub = args.get(1).cloned().unwrap_or_default();
    let rest = || host::split_args(args[2..].to_vec()).1;
    let r = match sub.as_str() {
        "run" | "certs" | "dev" | "--help" | "--version" => return host::main(args),
        "bench" => {
            cortex_transport::tls::install_crypto_provider();
            orchestrate::run(&rest())
        }
        "raw-server" | "raw-client" | "forward-client" => {
            cortex_transport::tls::install_crypto_provider();
            let o = rest();
            let r = match sub.as_str() {
                "raw-server" => raw_quinn::server_main(&o),
                "raw-client" => raw_quinn::client_main(&o),
                _ => forward::main(&o),
            };
            r.inspect_err(|e| emit("error", serde_json::json!({ "error": e })))
        }
        _ => Err(USAGE.to_owned()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remote_bench: error: {e}");
            ExitCode::from(2)
        }
    }
}
