#!/usr/bin/env bash
# Validates the Kubernetes manifests without a cluster, kubectl or kustomize:
#   1. renders k8s/base and every overlay with k8s/tools/render.py (the kustomize subset the
#      manifests use),
#   2. validates every rendered document and the Secret template against the Kubernetes
#      OpenAPI schemas with `kubernetes-validate --strict` (installed from PyPI if missing),
#   3. cross-checks the manifests against the node (k8s/tools/check.py): probe paths and
#      ports, Service ports, seed name, grace period vs. leave timeout, config keys, Dockerfile.
# Fails (non-zero) when a tool is missing or cannot be installed; it never skips a step.
#
# Usage: scripts/k8s-validate.sh [K8S_DIR]      (default: k8s/ of this repository)
# Env:   K8S_VALIDATE_VERSION  Kubernetes version to validate against (default 1.34.0)
#        K8S_RENDER_DIR        keep the rendered YAML there instead of a temporary directory
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
repo="$(cd "$(dirname "$0")/.." && pwd)"
k8s_dir="$(cd "${1:-$repo/k8s}" && pwd)"
k8s_version="${K8S_VALIDATE_VERSION:-1.34.0}"

# Replicas each kustomization must render; a new overlay must be added here.
declare -A expect_replicas=([.]=3 [base]=3 [overlays/scale-5]=5 [overlays/rolling-update]=5)
declare -A extra_expect=([overlays/rolling-update]=",image_differs_from=base")

die() { echo "k8s-validate: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install python3)"

have_validator() { python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; }
if ! have_validator; then
  python3 -m pip --version >/dev/null 2>&1 \
    || die "kubernetes-validate is missing and pip is not available to install it (apt-get install python3-pip)"
  # Concurrent runs (parallel tests) must not install over each other.
  lock="${TMPDIR:-/tmp}/cortex-k8s-validate.pip.lock"
  (
    flock -w 600 9 || die "timed out waiting for another kubernetes-validate install ($lock)"
    if ! have_validator; then
      echo "k8s-validate: installing kubernetes-validate from PyPI" >&2
      python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'kubernetes-validate>=1.34,<2' >&2 \
        || die "pip install kubernetes-validate failed"
    fi
  ) 9>"$lock"
  have_validator || die "kubernetes-validate is still not importable after pip install"
fi

if [ -n "${K8S_RENDER_DIR:-}" ]; then
  out="$K8S_RENDER_DIR"
  mkdir -p "$out"
else
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi

targets=()
files=()
render() {
  local name="$1"
  local file="$out/${name//\//_}.yaml"
  [ "$name" = . ] && file="$out/k8s-root.yaml"
  [ -n "${expect_replicas[$name]:-}" ] \
    || die "no expected replica count for $name: add it to expect_replicas in scripts/k8s-validate.sh"
  python3 "$k8s_dir/tools/render.py" "$k8s_dir/$name" >"$file" || die "rendering $name failed"
  targets+=(--target "name=$name,replicas=${expect_replicas[$name]},file=$file${extra_expect[$name]:-}")
  files+=("$file")
  echo "k8s-validate: rendered $name -> $file" >&2
}

render .
render base
found_overlay=0
for dir in "$k8s_dir"/overlays/*/; do
  [ -f "$dir/kustomization.yaml" ] || continue
  render "overlays/$(basename "$dir")"
  found_overlay=1
done
[ "$found_overlay" = 1 ] || die "no overlays found under $k8s_dir/overlays"

python3 -m kubernetes_validate --strict --quiet -k "$k8s_version" \
  "${files[@]}" "$k8s_dir/base/secret.example.yaml" \
  || die "schema validation against Kubernetes $k8s_version failed (above)"
echo "k8s-validate: ${#files[@]} renderings and the Secret template match the Kubernetes $k8s_version schemas (strict)" >&2

python3 "$k8s_dir/tools/check.py" --repo "$repo" --k8s "$k8s_dir" "${targets[@]}" \
  || die "cross-checks failed (above)"
echo "k8s-validate: OK"
