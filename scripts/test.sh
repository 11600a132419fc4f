#!/usr/bin/env bash
# The whole test suite, from a fresh machine. Idempotent: installs only what is missing.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# A fresh debug build of the workspace and its tests takes about 4 GB under target/ (more with
# incremental caches). A full disk shows up late and obscurely (the linker dies with a bus
# error), so say so up front.
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
free_kb=$(df -Pk "$target" | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((5 * 1024 * 1024)) ]; then
    echo "scripts/test.sh: warning: only $((free_kb / 1024)) MB free for $target;" \
        "a fresh build needs about 4 GB (free space, or run cargo clean)" >&2
fi

# Cluster tests and the chaos harness drive the real binaries from outside, so build them
# (and the example hosts, such as node/examples/bank.rs) first; they find them under
# target/debug (or $CORTEX_BIN_DIR).
cargo build --workspace --bins --examples --locked
cargo test --workspace --locked "$@"
