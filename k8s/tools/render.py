#!/usr/bin/env python3
"""Renders a kustomization directory to one multi-document YAML stream, without kustomize.

It exists so that scripts/k8s-validate.sh can check exactly what `kubectl apply -k DIR`
would send, on a machine with neither kubectl nor kustomize. It implements only the subset
of kustomize that Cortex's manifests use, and refuses anything else loudly instead of
rendering something kustomize would not:

  resources   files (one or more YAML documents each) and directories holding a
              kustomization.yaml (rendered recursively, so overlays can stack)
  namespace   sets metadata.namespace on every resource
  patches     strategic-merge patches given as `path:` or inline `patch:`, matched to a
              resource by kind and metadata.name. Maps merge key by key; lists whose items
              are all maps with a `name` merge item by item on `name`; other lists are
              replaced; a null value deletes the key. `$patch` directives, JSON 6902
              patches and `target:` selectors are refused.
  images      name + newName / newTag / digest, applied to containers and initContainers
  replicas    name + count, applied to Deployments, StatefulSets and ReplicaSets

Usage: render.py KUSTOMIZATION_DIR > rendered.yaml
"""

import copy
import os
import sys

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "patches", "images", "replicas"}
WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet"}


class RenderError(Exception):
    """A kustomization this renderer cannot render faithfully."""


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            raise RenderError(f"{path}: not valid YAML: {e}") from e
    for d in docs:
        if not isinstance(d, dict):
            raise RenderError(f"{path}: every document must be a mapping")
    return docs


def key_of(doc, where):
    try:
        return doc["kind"], doc["metadata"]["name"]
    except (KeyError, TypeError) as e:
        raise RenderError(f"{where}: a resource needs kind and metadata.name") from e


def merge(base, patch, where):
    """Strategic merge of `patch` into `base` (both already copies); returns the result."""
    if isinstance(patch, dict):
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        for k, v in patch.items():
            if isinstance(k, str) and k.startswith("$"):
                raise RenderError(f"{where}: directive {k} is not supported by this renderer")
            if v is None:
                base.pop(k, None)
            elif k in base:
                base[k] = merge(base[k], v, f"{where}.{k}")
            else:
                base[k] = copy.deepcopy(v)
        return base
    if isinstance(patch, list) and isinstance(base, list):
        named = lambda items: all(isinstance(i, dict) and "name" in i for i in items)  # noqa: E731
        if patch and base and named(patch) and named(base):
            out = list(base)
            for item in patch:
                idx = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
                if idx is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[idx] = merge(out[idx], item, f"{where}[{item['name']}]")
            return out
    return copy.deepcopy(patch)


def split_image(image):
    """`name[:tag][@digest]` -> (name, tag, digest); a port in the registry is not a tag."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1 :]
    return image, tag, digest


def apply_images(docs, images, where):
    for rule in images:
        unknown = set(rule) - {"name", "newName", "newTag", "digest"}
        if unknown or "name" not in rule:
            raise RenderError(f"{where}: images entries take name, newName, newTag, digest only")
        for doc in docs:
            if doc.get("kind") not in WORKLOADS:
                continue
            spec = doc.get("spec", {})
            pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                name, tag, digest = split_image(c.get("image", ""))
                if name != rule["name"]:
                    continue
                name = rule.get("newName", name)
                if "digest" in rule:
                    c["image"] = f"{name}@{rule['digest']}"
                elif "newTag" in rule:
                    c["image"] = f"{name}:{rule['newTag']}"
                else:
                    c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def apply_replicas(docs, replicas, where):
    for rule in replicas:
        if set(rule) != {"name", "count"} or not isinstance(rule["count"], int):
            raise RenderError(f"{where}: replicas entries take name and an integer count")
        hits = [d for d in docs if d.get("kind") in SCALABLE and d["metadata"]["name"] == rule["name"]]
        if not hits:
            raise RenderError(f"{where}: replicas: no workload named {rule['name']}")
        for d in hits:
            d.setdefault("spec", {})["replicas"] = rule["count"]


def apply_patches(docs, patches, directory, where):
    for p in patches:
        if not isinstance(p, dict) or set(p) - {"path", "patch"} or len(p) != 1:
            raise RenderError(
                f"{where}: patches entries take exactly one of path or patch (no target, no options)"
            )
        if "path" in p:
            ppath = os.path.join(directory, p["path"])
            pdocs = load_docs(ppath)
            pwhere = ppath
        else:
            try:
                pdocs = [d for d in yaml.safe_load_all(p["patch"]) if d is not None]
            except yaml.YAMLError as e:
                raise RenderError(f"{where}: inline patch is not valid YAML: {e}") from e
            pwhere = f"{where} (inline patch)"
        for pd in pdocs:
            if not isinstance(pd, dict):
                raise RenderError(f"{pwhere}: JSON 6902 patches are not supported; use a strategic merge patch")
            kind, name = key_of(pd, pwhere)
            hits = [i for i, d in enumerate(docs) if key_of(d, where) == (kind, name)]
            if not hits:
                raise RenderError(f"{pwhere}: patch target {kind}/{name} is not among the resources")
            for i in hits:
                docs[i] = merge(docs[i], copy.deepcopy(pd), f"{kind}/{name}")


def render(directory, seen=()):
    directory = os.path.abspath(directory)
    if directory in seen:
        raise RenderError(f"{directory}: kustomization cycle")
    kpath = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(kpath):
        raise RenderError(f"{directory}: no kustomization.yaml")
    docs = load_docs(kpath)
    if len(docs) != 1:
        raise RenderError(f"{kpath}: expected one document")
    k = docs[0]
    unknown = set(k) - SUPPORTED
    if unknown:
        raise RenderError(
            f"{kpath}: fields {sorted(unknown)} are not supported by k8s/tools/render.py; "
            "use the supported subset or extend the renderer"
        )
    out = []
    for res in k.get("resources", []):
        rpath = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(rpath):
            out.extend(render(rpath, seen + (directory,)))
        elif os.path.isfile(rpath):
            out.extend(load_docs(rpath))
        else:
            raise RenderError(f"{kpath}: resource {res} does not exist (remote resources are not supported)")
    ids = [key_of(d, kpath) for d in out]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RenderError(f"{kpath}: duplicate resources {sorted(dup)}")
    apply_patches(out, k.get("patches", []), directory, kpath)
    apply_images(out, k.get("images", []), kpath)
    apply_replicas(out, k.get("replicas", []), kpath)
    if "namespace" in k:
        for d in out:
            d["metadata"]["namespace"] = k["namespace"]
    return out


def main(argv):
    if len(argv) != 2:
        print("usage: render.py KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    try:
        docs = render(argv[1])
    except RenderError as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
