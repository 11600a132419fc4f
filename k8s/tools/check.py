#!/usr/bin/env python3
"""Cross-checks rendered Cortex manifests against each other and against the node.

Schema validity is kubernetes-validate's job; this checks what a schema cannot: that the
probes hit the paths and port the node serves, that the Services reach the ports the node
binds under the ConfigMap's settings, that the seed name is the headless Service, that the
grace period outlasts the node's leave timeout, that the config file has only settings the
node knows (it refuses unknown keys at start), and that the Dockerfile builds and runs the
binary the pods expect.

Usage:
  check.py --repo ROOT --k8s DIR --target name=base,replicas=3,file=base.yaml
           [--target name=...,replicas=N,file=F[,image_differs_from=base]] ...
Exits 1 and prints every problem found if any check fails.
"""

import argparse
import os
import re
import sys
import tomllib

import yaml

import nodefacts
from dockercheck import check_docker
from nodefacts import FactError, parse_duration

# The pod needs this long after the leave timeout to flush and exit before SIGKILL.
GRACE_MARGIN_SECONDS = 5


class Checker:
    def __init__(self, target, facts):
        self.target = target
        self.facts = facts
        self.errors = []

    def fail(self, msg):
        self.errors.append(f"[{self.target}] {msg}")

    def expect(self, cond, msg):
        if not cond:
            self.fail(msg)
        return cond


def one(docs, kind, pred=lambda d: True):
    return [d for d in docs if d.get("kind") == kind and pred(d)]


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def effective_settings(c, container, configmaps, dockerfile_env):
    """The settings the node would run with: defaults < TOML < image ENV < pod env < args.

    Returns (values by setting key, where each came from, the TOML text's path or None).
    """
    facts = c.facts
    values, origin = {}, {}
    env = dict(dockerfile_env)
    dynamic = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "valueFrom" in e:
            ref = e["valueFrom"].get("fieldRef", {}).get("fieldPath")
            dynamic[e["name"]] = ref or "valueFrom"
            env.pop(e["name"], None)
    for name in list(env) + list(dynamic):
        if name.startswith("CORTEX_") and name not in facts["env_to_key"]:
            c.fail(f"env {name} is not a cortex-node setting (known: CORTEX_NODE_NAME, CORTEX_SEEDS, ...); "
                   "the node would ignore it")
    config_path = env.get("CORTEX_CONFIG")
    toml_values = {}
    if config_path:
        text = read_mounted_file(c, container, configmaps, config_path)
        if text is not None:
            try:
                toml_values = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                c.fail(f"the node config {config_path} is not valid TOML: {e}")
            unknown = set(toml_values) - facts["toml_keys"]
            c.expect(not unknown, f"the node config has keys cortex-node refuses at start: {sorted(unknown)}")
    else:
        c.fail("CORTEX_CONFIG is not set in the container env: the ConfigMap's settings would be ignored")
    for k, v in toml_values.items():
        values[k], origin[k] = v, f"config file {config_path}"
        check_toml_type(c, k, v)
    for name, v in env.items():
        key = facts["env_to_key"].get(name)
        if key and key != "config":
            values[key], origin[key] = v, f"env {name}"
    for name, ref in dynamic.items():
        key = facts["env_to_key"].get(name)
        if key:
            values[key], origin[key] = ("downward", ref), f"env {name} from {ref}"
    args = list(container.get("args", []))
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            flag, _, val = a[2:].partition("=")
            if not _ and i + 1 < len(args):
                val, i = args[i + 1], i + 1
            key = facts["flags"].get(flag)
            if key is None:
                c.fail(f"container arg --{flag} is not a cortex-node setting")
            else:
                values[key], origin[key] = val, f"arg --{flag}"
        i += 1
    return values, origin


LIST_KEYS = {"seeds", "roles", "client_tokens"}
DURATION_KEYS = {"seed_resolve_interval", "settle_time", "leave_timeout", "idempotency_window"}


def check_toml_type(c, key, value):
    """The value shapes the node's TOML parser takes (node/src/config/settings.rs)."""
    if key in LIST_KEYS:
        c.expect(isinstance(value, list) and all(isinstance(x, str) for x in value),
                 f"config {key} must be a list of strings")
    elif key in DURATION_KEYS:
        c.expect(parse_duration(value) is not None, f"config {key} = {value!r} is not a duration like 500ms, 15s, 1m")
    elif key.endswith("_bind") or key.endswith("_advertise"):
        c.expect(isinstance(value, str) and port_of(c, value, f"config {key}") is not None,
                 f"config {key} must be a string ADDR:PORT")
    elif key in ("vnodes", "worker_threads"):
        c.expect(isinstance(value, int) and not isinstance(value, bool), f"config {key} must be an integer")
    elif key == "log_format":
        c.expect(value in ("human", "json"), f"config log_format {value!r} must be \"human\" or \"json\"")
    elif key != "max_frame_size":
        c.expect(isinstance(value, str), f"config {key} must be a string")


def read_mounted_file(c, container, configmaps, path):
    """The text of `path` inside the container if a ConfigMap volume provides it."""
    pod = c.pod
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        vol = vols.get(m["name"], {})
        if "configMap" not in vol:
            continue
        if m.get("subPath"):
            key = m["subPath"] if path == mp else None
        elif path.startswith(mp + "/"):
            key = path[len(mp) + 1:]
        else:
            key = None
        if key is None:
            continue
        cm_name = vol["configMap"]["name"]
        cm = configmaps.get(cm_name)
        if not c.expect(cm is not None, f"volume {m['name']} names ConfigMap {cm_name}, which is not rendered"):
            return None
        if not c.expect(key in cm.get("data", {}), f"ConfigMap {cm_name} has no key {key} for {path}"):
            return None
        return cm["data"][key]
    c.fail(f"no ConfigMap volume mount provides {path} (CORTEX_CONFIG)")
    return None


def port_of(c, value, what):
    """The port number in a bind address like 0.0.0.0:7400 or [::]:7400."""
    m = re.fullmatch(r"(?:\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)", str(value))
    if not c.expect(m is not None, f"{what} = {value!r} is not ADDR:PORT"):
        return None
    return int(m.group(1))


def named_port(container, ref):
    if isinstance(ref, int):
        return ref
    for p in container.get("ports", []):
        if p.get("name") == ref:
            return p["containerPort"]
    return None


def check_target(name, docs, expect, facts, docker, secret_names):
    c = Checker(name, facts)
    stss = one(docs, "StatefulSet")
    if not c.expect(len(stss) == 1, f"expected one StatefulSet, found {len(stss)}"):
        return c.errors, None
    sts = stss[0]
    spec = sts["spec"]
    tmpl = spec["template"]
    c.pod = pod = tmpl["spec"]
    pod_labels = tmpl.get("metadata", {}).get("labels", {})
    configmaps = {d["metadata"]["name"]: d for d in one(docs, "ConfigMap")}
    containers = pod.get("containers", [])
    if not c.expect(len(containers) == 1, "the pod should have exactly one container (the node)"):
        return c.errors, None
    ctr = containers[0]

    c.expect(spec.get("replicas") == expect["replicas"],
             f"replicas is {spec.get('replicas')}, expected {expect['replicas']}")
    c.expect(spec.get("podManagementPolicy") == "Parallel", "podManagementPolicy must be Parallel: a node becomes ready only after joining a peer, "
             "so OrderedReady would leave cortex-0 waiting for a cortex-1 that is never created")
    c.expect(labels_match(spec["selector"].get("matchLabels"), pod_labels),
             "StatefulSet selector does not match its pod labels")
    c.expect(spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate",
             "updateStrategy.type should be RollingUpdate")

    # The node's effective settings.
    vals, origin = effective_settings(c, ctr, configmaps, docker.get("env", {}))
    c.expect(vals.get("node_name") == ("downward", "metadata.name"),
             "the node name must come from the pod name: env CORTEX_NODE_NAME valueFrom fieldRef metadata.name")
    c.expect(vals.get("advertise_host") == ("downward", "status.podIP"),
             "the node must publish its pod IP: env CORTEX_ADVERTISE_HOST valueFrom fieldRef status.podIP")
    ports = {}
    for kind in ("quic", "gossip", "http"):
        key = f"{kind}_bind"
        ports[kind] = port_of(c, vals[key], f"{key} ({origin[key]})") if key in vals else facts["ports"][kind]
        if ports[kind] == 0:
            c.fail(f"{key} port 0 (OS-picked) cannot be published by a Service")
    for key in ("leave_timeout", "settle_time", "seed_resolve_interval"):
        if key in vals and not origin[key].startswith("config file"):
            c.expect(parse_duration(vals[key]) is not None,
                     f"{key} = {vals[key]!r} ({origin[key]}) is not a duration like 500ms, 15s, 1m")
    leave = parse_duration(vals["leave_timeout"]) if "leave_timeout" in vals else facts["leave_timeout"]

    # Container ports: named, with the node's numbers and protocols.
    want = {"quic": (ports["quic"], "UDP"), "gossip": (ports["gossip"], "UDP"), "http": (ports["http"], "TCP")}
    have = {p.get("name"): (p.get("containerPort"), p.get("protocol", "TCP")) for p in ctr.get("ports", [])}
    for pname, w in want.items():
        c.expect(have.get(pname) == w,
                 f"container port {pname} is {have.get(pname)}, but the node binds {w[0]}/{w[1]} under its settings")

    # Probes.
    for probe, path in (("livenessProbe", nodefacts.HEALTH_PATH), ("readinessProbe", nodefacts.READY_PATH),
                        ("startupProbe", None)):
        p = ctr.get(probe)
        if p is None:
            c.expect(probe == "startupProbe", f"{probe} is missing")
            continue
        get = p.get("httpGet")
        if not c.expect(get is not None, f"{probe} should be an httpGet on the node's admin HTTP port"):
            continue
        paths = (path,) if path else (nodefacts.HEALTH_PATH, nodefacts.READY_PATH)
        c.expect(get.get("path") in paths, f"{probe} path is {get.get('path')}, the node serves {' or '.join(paths)}")
        port = named_port(ctr, get.get("port"))
        c.expect(port == ports["http"],
                 f"{probe} port {get.get('port')} resolves to {port}, but the node serves HTTP on {ports['http']}")
        c.expect(get.get("scheme", "HTTP") == "HTTP", f"{probe} scheme must be HTTP (the admin server is plain HTTP)")

    # Prometheus scrape annotations.
    ann = tmpl.get("metadata", {}).get("annotations", {})
    c.expect(ann.get("prometheus.io/scrape") == "true", "annotation prometheus.io/scrape should be \"true\"")
    c.expect(ann.get("prometheus.io/port") == str(ports["http"]),
             f"annotation prometheus.io/port is {ann.get('prometheus.io/port')}, the node serves metrics on {ports['http']}")
    c.expect(ann.get("prometheus.io/path") == nodefacts.METRICS_PATH,
             f"annotation prometheus.io/path should be {nodefacts.METRICS_PATH}")

    # Services.
    svcs = one(docs, "Service")
    headless = [s for s in svcs if s["spec"].get("clusterIP") == "None"]
    clients = [s for s in svcs if s["spec"].get("clusterIP") != "None"]
    if c.expect(len(headless) == 1, f"expected one headless Service (clusterIP: None), found {len(headless)}"):
        h = headless[0]
        hname = h["metadata"]["name"]
        c.expect(spec.get("serviceName") == hname, f"StatefulSet serviceName {spec.get('serviceName')} is not the headless Service {hname}")
        c.expect(h["spec"].get("publishNotReadyAddresses") is True,
                 "the headless Service needs publishNotReadyAddresses: true (pods are ready only after joining through it)")
        c.expect(labels_match(h["spec"].get("selector"), pod_labels), f"Service {hname} selector does not match the pods")
        check_service_ports(c, h, ctr, {"quic": want["quic"], "gossip": want["gossip"]})
        check_seeds(c, vals.get("seeds"), origin.get("seeds"), hname, ports["gossip"])
    if c.expect(len(clients) == 1, f"expected one client Service, found {len(clients)}"):
        s = clients[0]
        c.expect(labels_match(s["spec"].get("selector"), pod_labels),
                 f"Service {s['metadata']['name']} selector does not match the pods")
        check_service_ports(c, s, ctr, {"http": want["http"], "quic": want["quic"]})

    # Graceful leave fits in the grace period.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = prestop_seconds(c, ctr)
    if leave is not None and pre is not None:
        c.expect(grace >= leave + pre + GRACE_MARGIN_SECONDS,
                 f"terminationGracePeriodSeconds {grace} must exceed the node's leave timeout {leave:g}s "
                 f"(+ preStop {pre:g}s + {GRACE_MARGIN_SECONDS}s margin), or SIGKILL cuts the graceful leave short")

    check_volumes(c, spec, ctr, vals, secret_names)
    check_scheduling(c, ctr, pod, pod_labels, docker)

    pdbs = one(docs, "PodDisruptionBudget")
    if c.expect(len(pdbs) == 1, f"expected one PodDisruptionBudget, found {len(pdbs)}"):
        p = pdbs[0]["spec"]
        c.expect(p.get("maxUnavailable") == 1, "the PodDisruptionBudget should allow maxUnavailable: 1")
        c.expect(labels_match(p.get("selector", {}).get("matchLabels"), pod_labels),
                 "the PodDisruptionBudget selector does not match the pods")
    return c.errors, {"image": ctr.get("image"), "http": ports["http"], "ports": ports, "settings": vals}


def check_service_ports(c, svc, ctr, want):
    name = svc["metadata"]["name"]
    got = {}
    for p in svc["spec"].get("ports", []):
        target = named_port(ctr, p.get("targetPort", p.get("port")))
        got[p.get("name")] = (target, p.get("protocol", "TCP"), p.get("port"))
    for pname, (port, proto) in want.items():
        g = got.get(pname)
        if c.expect(g is not None, f"Service {name} has no port named {pname}"):
            c.expect(g[:2] == (port, proto),
                     f"Service {name} port {pname} targets {g[0]}/{g[1]}, but the node binds {port}/{proto}")
            c.expect(g[2] == port, f"Service {name} port {pname} is {g[2]}; publish it on the node's port {port}")


def check_seeds(c, seeds, origin, hname, gossip_port):
    """Every seed names the headless Service (short or FQDN) at the node's gossip port."""
    if not c.expect(isinstance(seeds, (list, str)) and seeds,
                    f"no seeds set: set seeds = [\"{hname}:{gossip_port}\"] in the node config"):
        return
    if isinstance(seeds, str):
        seeds = seeds.split(",")
    for seed in seeds:
        host, _, port = seed.strip().rpartition(":")
        if not host:
            # A seed without a port means the default gossip port.
            host, port = port, str(c.facts["ports"]["gossip"])
        c.expect(host.split(".")[0] == hname,
                 f"seed {seed!r} ({origin}) is not the headless Service {hname} (write {hname}:{gossip_port} or its FQDN)")
        c.expect(port == str(gossip_port), f"seed {seed!r} port is not the node's gossip port {gossip_port}")


def prestop_seconds(c, ctr):
    hook = ctr.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    if "sleep" in hook:
        return hook["sleep"].get("seconds", 0)
    cmd = " ".join(hook.get("exec", {}).get("command", []))
    m = re.search(r"\bsleep\s+(\d+)", cmd)
    if m:
        return int(m.group(1))
    c.fail("cannot tell how long the preStop hook takes (use a sleep action or none): the grace period check needs it")
    return None


def check_volumes(c, spec, ctr, vals, secret_names):
    pod = c.pod
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"].rstrip("/"): m for m in ctr.get("volumeMounts", [])}
    data = vals.get("data_dir")
    if c.expect(isinstance(data, str), "set data_dir (the node's state) to the volume's mount path"):
        m = mounts.get(data.rstrip("/"))
        c.expect(m is not None and m["name"] in claims,
                 f"data_dir {data} is not a mount of a volumeClaimTemplate (the incarnation counter must survive restarts)")
    tls = vals.get("tls_dir")
    if c.expect(isinstance(tls, str), "set tls_dir to the mount path of the TLS Secret"):
        m = mounts.get(tls.rstrip("/"))
        vol = vols.get(m["name"]) if m else None
        if c.expect(vol is not None and "secret" in vol, f"tls_dir {tls} is not a Secret volume mount"):
            c.expect(m.get("readOnly") is True, f"mount the TLS Secret at {tls} readOnly")
            c.expect(vol["secret"].get("secretName") in secret_names,
                     f"TLS volume uses Secret {vol['secret'].get('secretName')}, but the documented Secret is {sorted(secret_names)}")


def check_scheduling(c, ctr, pod, pod_labels, docker):
    terms = (pod.get("affinity", {}).get("podAntiAffinity", {})
             .get("preferredDuringSchedulingIgnoredDuringExecution", []))
    c.expect(any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
                 and labels_match(t["podAffinityTerm"].get("labelSelector", {}).get("matchLabels"), pod_labels)
                 for t in terms),
             "add a preferred pod anti-affinity on kubernetes.io/hostname matching the pods")
    res = ctr.get("resources", {})
    for part in ("requests", "limits"):
        c.expect("memory" in res.get(part, {}) and "cpu" in res.get(part, {}), f"resources.{part} needs cpu and memory")
    sc = pod.get("securityContext", {})
    c.expect(sc.get("runAsNonRoot") is True, "set securityContext.runAsNonRoot: true")
    if docker.get("uid") is not None:
        c.expect(sc.get("runAsUser") == docker["uid"],
                 f"securityContext.runAsUser {sc.get('runAsUser')} differs from the image's USER {docker['uid']}")
    c.expect(pod.get("enableServiceLinks") is False,
             "set enableServiceLinks: false: the Service `cortex` would inject CORTEX_* variables into the node's settings namespace")
    if "command" in ctr:
        c.fail("do not set command: it replaces the image's ENTRYPOINT `cortex-node run`")


def secret_template(c_errors, path, base_replicas):
    docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
    names = set()
    for d in docs:
        if d.get("kind") != "Secret":
            continue
        names.add(d["metadata"]["name"])
        keys = set(d.get("stringData", {})) | set(d.get("data", {}))
        for k in ["ca.crt", "cluster.secret"] + [f"cortex-{i}.{e}" for i in range(base_replicas) for e in ("crt", "key")]:
            if k not in keys:
                c_errors.append(f"[secret template] {path} lacks key {k}")
        if "ca.key" in keys:
            c_errors.append(f"[secret template] {path} must not carry ca.key (the CA's signing key stays offline)")
    if not names:
        c_errors.append(f"[secret template] {path} has no Secret")
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--k8s", required=True)
    ap.add_argument("--target", action="append", required=True)
    a = ap.parse_args()
    errors = []
    try:
        facts = nodefacts.node_facts(a.repo)
        ws = nodefacts.workspace_facts(a.repo)
    except FactError as e:
        print(f"k8s check: {e}", file=sys.stderr)
        return 1
    missing = {nodefacts.HEALTH_PATH, nodefacts.READY_PATH, nodefacts.METRICS_PATH} - facts["served_paths"]
    if missing:
        errors.append(f"[node] node/src serves no route {sorted(missing)}: the probes and the Prometheus "
                      "annotations would hit paths the node does not serve")
    docker = check_docker(a.k8s, a.repo, ws, facts, errors)
    targets, results = [], {}
    for spec in a.target:
        t = dict(kv.split("=", 1) for kv in spec.split(","))
        t["replicas"] = int(t["replicas"])
        targets.append(t)
    secret_names = secret_template(errors, os.path.join(a.k8s, "base", "secret.example.yaml"),
                                   next((t["replicas"] for t in targets if t["name"] == "base"), 3))
    for t in targets:
        docs = [d for d in yaml.safe_load_all(open(t["file"], encoding="utf-8")) if d]
        try:
            errs, info = check_target(t["name"], docs, t, facts, docker, secret_names)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            errs, info = [f"[{t['name']}] a manifest lacks a field the checks need or has the wrong type "
                          f"({type(e).__name__}: {e}); compare it with k8s/base"], None
        errors.extend(errs)
        results[t["name"]] = info
        if info and docker.get("ports") and set(docker["ports"]) != {
                (info["ports"]["quic"], "udp"), (info["ports"]["gossip"], "udp"), (info["ports"]["http"], "tcp")}:
            errors.append(f"[{t['name']}] Dockerfile EXPOSE {sorted(docker['ports'])} differs from the node's ports {info['ports']}")
        if info and docker.get("volume") and info["settings"].get("data_dir") not in docker["volume"]:
            errors.append(f"[{t['name']}] data_dir {info['settings'].get('data_dir')} is not the image's VOLUME {docker['volume']}")
    for t in targets:
        other = t.get("image_differs_from")
        if other and results.get(t["name"]) and results.get(other):
            if results[t["name"]]["image"] == results[other]["image"]:
                errors.append(f"[{t['name']}] the image {results[other]['image']} is the same as in {other}: nothing to roll out")
    for e in errors:
        print(f"k8s check: {e}", file=sys.stderr)
    if not errors:
        print(f"k8s check: {len(targets)} targets consistent with the node "
              f"(ports {facts['ports']}, leave timeout default {facts['leave_timeout']}s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
