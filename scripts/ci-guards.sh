#!/usr/bin/env bash
# Structural guards: the dependency directions DESIGN.md promises, and no aws-lc.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# 1. cortex-protocol does no I/O and knows nothing of tokio.
if cargo tree -p cortex-protocol -e normal --prefix none --locked 2>/dev/null | grep -E '^(tokio|mio|socket2|quinn|async-std|futures-io) ' ; then
  echo "guard: cortex-protocol depends on an async runtime or I/O crate (above); keep it I/O-free" >&2
  fail=1
fi
if grep -rnE 'std::(fs|net::(TcpStream|TcpListener|UdpSocket))|std::io::std(in|out|err)|File::(open|create)' protocol/src; then
  echo "guard: cortex-protocol/src performs I/O (above); move it to transport or node" >&2
  fail=1
fi

# 2. Nothing builds on cortex-node (cluster-tests and chaos drive its binary from outside).
#    A dev-dependency is allowed: the client benchmark runs its member-to-member baseline from
#    an in-process node (cluster-tests/tests/client_bench.rs), which no library or binary ships.
deps=$(cargo metadata --format-version 1 --locked --no-deps | python3 -c '
import json, sys
m = json.load(sys.stdin)
for p in m["packages"]:
    for d in p["dependencies"]:
        if d["name"] == "cortex-node" and p["name"] != "cortex-node" and d.get("kind") != "dev":
            print(p["name"])
')
if [ -n "$deps" ]; then
  echo "guard: these crates depend on cortex-node: $deps" >&2
  fail=1
fi

# 3. No aws-lc-sys (a second rustls crypto provider panics at runtime and costs a minute of build).
if cargo tree --workspace -i aws-lc-sys --locked >/dev/null 2>&1; then
  echo "guard: aws-lc-sys entered the dependency tree (cargo tree -i aws-lc-sys): keep rustls on ring only" >&2
  fail=1
fi

exit $fail
