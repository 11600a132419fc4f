#!/usr/bin/env bash
# The whole test suite, from a fresh machine. Idempotent: installs only what is missing.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# Cluster tests and the chaos harness drive the real binaries from outside, so build them
# (and the example hosts, such as node/examples/bank.rs) first; they find them under
# target/debug (or $CORTEX_BIN_DIR).
cargo build --workspace --bins --examples --locked
cargo test --workspace --locked "$@"
