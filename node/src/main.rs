//! `cortex-node`: run a cluster node, a local dev cluster, or make certificates.
//!
//! Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure.

fn main() -> std::process::ExitCode {
    // The stock binary hosts system actors only; user binaries register their kinds with
    // `cortex_node::main_with(|b| b.kind(...))` (see node/examples/bank.rs).
    cortex_node::main_with(|builder| builder)
}
