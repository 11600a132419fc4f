//! `cortex-node`: run a cluster node, a local dev cluster, or make certificates.
//!
//! Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure.

// glibc malloc serialises frees made on another thread than the allocating one (arena locks)
// and consolidates its fast bins after every large free: 15-20% of a node's samples in
// profiles of remote tells. mimalloc's per-thread heaps free remotely without a lock. Alone,
// the switch measured within noise (BENCHMARKS.md, Cluster routing); it is kept for the tail.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // The stock binary hosts system actors only; user binaries register their kinds with
    // `cortex_node::main_with(|b| b.kind(...))` (see node/examples/bank.rs).
    cortex_node::main_with(|builder| builder)
}
