#!/usr/bin/env bash
# Installs what leafmesh needs on a Debian machine, and says exactly what is
# missing when it cannot: the npm packages (with Node 24 from the node@24
# package), and the Debian packages listed in scripts/packages.d/*.txt
# (nats-server, iproute2, iptables, nftables, dnsutils, ...).
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'leafmesh install: %s\n' "$*" >&2; }

if ! command -v npm >/dev/null 2>&1; then
  say "npm is missing: install Node.js (any version >= 18 with npm; Debian: apt-get install -y nodejs npm). npm then brings Node 24 itself."
  exit 1
fi

wanted=()
for list in scripts/packages.d/*.txt; do
  while read -r package _; do
    [[ -z "$package" || "$package" == \#* ]] && continue
    wanted+=("$package")
  done <"$list"
done
missing=()
for package in $(printf '%s\n' "${wanted[@]}" | sort -u); do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]}"
    say "install them as root: apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

# npm install when the lockfile changed since the last install (or nothing is installed). npm's own
# record of node_modules (node_modules/.package-lock.json) is the stamp: writing anything else into
# node_modules after the install makes npm take that record for stale, and every later `npx leafmesh`
# then rebuilds the tree and prints npm's EBADENGINE warnings (the machine's npm runs on its older Node).
record=node_modules/.package-lock.json
if [[ ! -f "$record" || package-lock.json -nt "$record" || package.json -nt "$record" ]]; then
  say "installing npm packages"
  npm install --no-audit --no-fund --loglevel=error
fi
node_version=$(node_modules/.bin/node --version)
say "ready: Node ${node_version} (from the node@24 package), $(nats-server --version)"
