#!/usr/bin/env bash
# Installs the system programs the tests and the demo use, when missing:
# npm (buf, the Node client), redis-server, prometheus/promtool, nginx, cmake and g++.
# Uses Debian's apt-get (as root, or through sudo); otherwise says what to install.
set -euo pipefail

declare -A needs=([npm]=npm [redis-server]=redis-server [prometheus]=prometheus [nginx]=nginx-light
                  [cmake]=cmake [g++]=g++)
missing=()
for command in "${!needs[@]}"; do
  command -v "$command" >/dev/null || missing+=("${needs[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! command -v sudo >/dev/null; }; then
  echo "missing: ${missing[*]} — install them with your package manager" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
