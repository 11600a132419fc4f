//! `cortex-node`: run a cluster node, a local dev cluster, or make certificates.
//!
//! Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure.

// glibc malloc serialises the frees a message's buffers get on another thread than the one
// that allocated them (arena locks, fastbin consolidation after every large free): about a
// fifth of a remote tell's CPU went there. mimalloc's per-thread heaps free remotely without
// a lock. BENCHMARKS.md "Cluster routing" has the before/after.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // The stock binary hosts system actors only; user binaries register their kinds with
    // `cortex_node::main_with(|b| b.kind(...))` (see node/examples/bank.rs).
    cortex_node::main_with(|builder| builder)
}
