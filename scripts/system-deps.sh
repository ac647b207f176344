#!/usr/bin/env bash
# Installs the system programs the tests and the demo use, when missing:
# npm (buf, the Node client), redis-server, prometheus/promtool, nginx, cmake and g++;
# Go with Debian's gRPC and protobuf packages and protoc plugins (the Go stubs and the Go client example).
# Uses Debian's apt-get (as root, or through sudo); otherwise says what to install.
set -euo pipefail

declare -A needs=([npm]=npm [redis-server]=redis-server [prometheus]=prometheus [nginx]=nginx-light
                  [cmake]=cmake [g++]=g++ [go]=golang-go [protoc-gen-go]=protoc-gen-go
                  [protoc-gen-go-grpc]=protoc-gen-go-grpc)
# Go libraries, found by the Go client example in GOPATH mode under /usr/share/gocode.
libraries=(golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev)
missing=()
for command in "${!needs[@]}"; do
  command -v "$command" >/dev/null || missing+=("${needs[$command]}")
done
for library in "${libraries[@]}"; do
  dpkg-query -W -f='${Status}' "$library" 2>/dev/null | grep -q "ok installed" || missing+=("$library")
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
