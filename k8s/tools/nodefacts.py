"""What the manifests must agree with, read from the node's own sources and build files.

The node's defaults and setting names live in node/src/config.rs and node/src/config/
settings.rs; reading them here (instead of copying numbers into the checker) makes a change
of a default or a renamed setting fail scripts/k8s-validate.sh until the manifests follow.
Every extraction fails loudly if the source no longer has the expected shape.
"""

import os
import re
import tomllib

# What the node's admin HTTP server serves (DESIGN.md); the probes and the scrape
# annotations must use these.
HEALTH_PATH = "/health"
READY_PATH = "/ready"
METRICS_PATH = "/metrics"


class FactError(Exception):
    """The node's sources do not have the shape this checker reads."""


def parse_duration(text):
    """Seconds in a cortex duration (`500ms`, `2s`, `1m30s`, `1h`), or None if malformed.

    Mirrors HumanDuration::from_str in node/src/config/values.rs.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)([a-z]+)", text.strip())
    if "".join(n + u for n, u in parts) != text.strip():
        return None
    total = 0.0
    for n, u in parts:
        if u not in units:
            return None
        total += int(n) * units[u]
    return total


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise FactError(f"cannot read {path}: {e}") from e


def _duration_const(text, name, path):
    m = re.search(
        rf"pub const {name}: Duration = Duration::from_(secs|millis)\((\d+)\);", text
    )
    if not m:
        raise FactError(f"{path}: no `pub const {name}: Duration = Duration::from_secs(N)`; "
                        "update k8s/tools/nodefacts.py to the new shape")
    n = int(m.group(2))
    return n if m.group(1) == "secs" else n / 1000


def node_facts(repo):
    """Defaults, setting names and env vars of cortex-node, plus its served paths."""
    cfg_path = os.path.join(repo, "node", "src", "config.rs")
    cfg = _read(cfg_path)
    ports = {}
    for what in ("QUIC", "GOSSIP", "HTTP"):
        m = re.search(rf"pub const DEFAULT_{what}_PORT: u16 = (\d+);", cfg)
        if not m:
            raise FactError(f"{cfg_path}: no `pub const DEFAULT_{what}_PORT: u16 = N;`")
        ports[what.lower()] = int(m.group(1))
    facts = {
        "ports": ports,
        "leave_timeout": _duration_const(cfg, "DEFAULT_LEAVE_TIMEOUT", cfg_path),
        "settle_time": _duration_const(cfg, "DEFAULT_SETTLE_TIME", cfg_path),
    }

    set_path = os.path.join(repo, "node", "src", "config", "settings.rs")
    src = _read(set_path)
    body = src.split("pub struct Settings", 1)
    if len(body) != 2:
        raise FactError(f"{set_path}: no `pub struct Settings`")
    body = body[1].split("\n}\n", 1)[0]
    toml_keys, env_to_key = set(), {}
    pending_env, pending_skip, pending_long = None, False, None
    for line in body.splitlines():
        line = line.strip()
        m = re.search(r'env = "(CORTEX_\w+)"', line)
        if m:
            pending_env = m.group(1)
        m = re.search(r'long = "([\w-]+)"', line)
        if m:
            pending_long = m.group(1)
        if "#[serde(skip)]" in line:
            pending_skip = True
        m = re.match(r"pub (\w+): Option<", line)
        if m:
            key = m.group(1)
            if not pending_skip:
                toml_keys.add(key)
            if pending_env:
                env_to_key[pending_env] = key
            facts.setdefault("flags", {})[pending_long or key.replace("_", "-")] = key
            pending_env, pending_skip, pending_long = None, False, None
    for needed in ("node_name", "seeds", "leave_timeout", "gossip_bind", "http_bind", "quic_bind"):
        if needed not in toml_keys:
            raise FactError(f"{set_path}: setting {needed} not found; update k8s/tools/nodefacts.py")
    facts["toml_keys"] = toml_keys
    facts["env_to_key"] = env_to_key

    # Where the admin HTTP routes are: string literals anywhere in the node's sources.
    # Test files and comments (doc examples) do not count: only code that serves a route.
    literals = set()
    for root, _, files in os.walk(os.path.join(repo, "node", "src")):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs" or f.endswith("_tests.rs"):
                continue
            code = "\n".join(
                line for line in _read(os.path.join(root, f)).splitlines()
                if not line.lstrip().startswith("//")
            )
            code = code.split("#[cfg(test)]", 1)[0]
            for p in (HEALTH_PATH, READY_PATH, METRICS_PATH):
                if f'"{p}"' in code:
                    literals.add(p)
    facts["served_paths"] = literals
    return facts


def workspace_facts(repo):
    """rust-version, member directories and the node's package and binary names."""
    root = tomllib.loads(_read(os.path.join(repo, "Cargo.toml")))
    ws = root.get("workspace", {})
    node = tomllib.loads(_read(os.path.join(repo, "node", "Cargo.toml")))
    bins = [b.get("name") for b in node.get("bin", [])]
    return {
        "rust_version": ws.get("package", {}).get("rust-version"),
        "members": ws.get("members", []),
        "node_package": node.get("package", {}).get("name"),
        "node_bins": bins,
    }
