#!/usr/bin/env bash
# Installs what the tests need and is missing. Safe to run again and again: each tool is
# checked first, and nothing is downloaded when everything is present.
#   iproute2, iptables  chaos harness (network namespaces, partitions, loss, NFQUEUE delay)
#   prometheus          promtool checks /metrics; a real Prometheus scrapes a test cluster
#   chromium            the dashboard test renders the page headless
#   kubernetes-validate offline manifest validation (PyPI), see scripts/k8s-validate.sh
set -euo pipefail

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need_apt+=(chromium)
command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_apt[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "warning: missing ${need_apt[*]} and cannot apt-get install (not root?); tests that need them will fail and say so" >&2
  fi
fi

if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  echo "installing: kubernetes-validate (pip)" >&2
  python3 -m pip install -q kubernetes-validate >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages kubernetes-validate >/dev/null
fi
