#!/usr/bin/env bash
# Installs the system packages the tests start for real, when they are missing:
# etcd (Debian's etcd-server) for the balancer's etcd map store tests, and the openssl CLI that
# the TLS tests make their throwaway CA and certificates with, and Chromium (Debian's chromium) that
# the balancer's dashboard tests drive headless through puppeteer-core (no browser download), and
# redis-tools (redis-cli, redis-benchmark) that the RESP front door tests run against the balancer,
# and redis-server, the reference whose answers those tests compare dstore's with.
# Part of the README's test command, so a fresh machine and CI get the same thing.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "install-test-deps: ${missing[*]} missing and installing needs root (apt-get install ${missing[*]})" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  echo "install-test-deps: installing ${missing[*]} from Debian's packages"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-test-deps: $(etcd --version | head -n 1); $(openssl version); $(chromium --version 2>/dev/null || echo 'chromium: no version'); $(redis-cli --version); $(redis-server --version | cut -d ' ' -f 1-3)"
