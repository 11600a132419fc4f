"""Checks k8s/Dockerfile against the workspace, without a Docker engine.

No Docker engine runs on the development machines, so the image is never built there. What
can be checked is checked: the builder's toolchain is the workspace's, it builds the node
package with the committed lock file, the runtime base has the same Debian release (glibc)
as the builder, the entrypoint is the node binary's `run`, the user is non-root, and the
build-context filter keeps everything `cargo build --locked` needs.
"""

import fnmatch
import os
import re
import shlex
import json


def _instructions(text):
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def check_docker(k8s_dir, repo, ws, facts, errors):
    """Appends problems to `errors`; returns what the manifests must agree with."""
    path = os.path.join(k8s_dir, "Dockerfile")
    found = {"env": {}, "ports": set(), "volume": [], "uid": None}

    def fail(msg):
        errors.append(f"[Dockerfile] {msg}")

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        fail(f"cannot read {path}: {e}")
        return found
    ins = _instructions(text)
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) < 2:
        fail("expected a multi-stage build: a rust builder stage and a slim runtime stage")
        return found
    builder, runtime = froms[0].split()[0], froms[-1].split()[0]
    m = re.fullmatch(r"rust:(\d+\.\d+)(?:\.\d+)?-(\w+)", builder)
    if not m:
        fail(f"builder image {builder} should be rust:<rust-version>-<debian release> (a pinned release, "
             "so the binary's glibc matches the runtime image)")
    else:
        if m.group(1) != ws["rust_version"]:
            fail(f"builder toolchain {m.group(1)} is not the workspace rust-version {ws['rust_version']}")
        if runtime != f"debian:{m.group(2)}-slim":
            fail(f"runtime image {runtime} should be debian:{m.group(2)}-slim, the builder's Debian release")
    runs = " ".join(a for i, a in ins if i == "RUN")
    pkg = ws["node_package"]
    want = f"cargo build --release -p {pkg} --locked"
    if want not in runs:
        fail(f"the builder should run `{want}`")
    if pkg not in ws["node_bins"]:
        fail(f"node/Cargo.toml has no [[bin]] named {pkg}")
    for i, a in ins:
        if i == "ENV":
            for kv in shlex.split(a):
                k, _, v = kv.partition("=")
                found["env"][k] = v
        elif i == "EXPOSE":
            for p in a.split():
                num, _, proto = p.partition("/")
                found["ports"].add((int(num), (proto or "tcp").lower()))
        elif i == "VOLUME":
            found["volume"] = json.loads(a) if a.startswith("[") else a.split()
        elif i == "USER":
            uid = a.split(":")[0]
            found["uid"] = int(uid) if uid.isdigit() else None
            if found["uid"] is None or found["uid"] == 0:
                fail(f"USER {a}: use a numeric non-root uid so that runAsNonRoot can verify it")
        elif i == "ENTRYPOINT":
            try:
                ep = json.loads(a)
            except ValueError:
                ep = None
            if ep != [pkg, "run"]:
                fail(f'ENTRYPOINT should be ["{pkg}", "run"] (exec form, so the node is PID 1 and gets SIGTERM)')
    defaults = {(facts["ports"]["quic"], "udp"), (facts["ports"]["gossip"], "udp"), (facts["ports"]["http"], "tcp")}
    if found["ports"] != defaults:
        fail(f"EXPOSE {sorted(found['ports'])} should be the node's default ports {sorted(defaults)}")
    data = found["env"].get("CORTEX_DATA_DIR")
    if data is None or data not in found["volume"]:
        fail("set ENV CORTEX_DATA_DIR to the VOLUME that holds the node's state")

    _check_ignore(os.path.join(k8s_dir, "Dockerfile.dockerignore"), repo, ws, fail)
    return found


def _check_ignore(path, repo, ws, fail):
    """No pattern of the context filter may drop a file the workspace build needs."""
    try:
        patterns = [p.strip() for p in open(path, encoding="utf-8").read().splitlines()
                    if p.strip() and not p.strip().startswith("#")]
    except OSError as e:
        fail(f"cannot read {path}: {e}")
        return
    needed = ["Cargo.toml", "Cargo.lock"]
    for member in ws["members"]:
        needed.append(f"{member}/Cargo.toml")
        needed.append(f"{member}/src")
    for n in needed:
        for p in patterns:
            if p.startswith("!"):
                continue
            pat = p.rstrip("/").replace("**/", "*/") if p.startswith("**/") else p.rstrip("/")
            parts = n.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(x, pat) or fnmatch.fnmatch(x, p.rstrip("/")) for x in prefixes):
                fail(f"{path}: pattern {p!r} drops {n}, which `cargo build --locked` needs")
    if not os.path.isfile(os.path.join(repo, "Cargo.lock")):
        fail("Cargo.lock is missing from the repository: --locked builds need it")
