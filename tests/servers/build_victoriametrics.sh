#!/usr/bin/env bash
# Builds VictoriaMetrics (our stand-in for InfluxDB's write path) from Debian's Go source packages.
# Idempotent: does nothing when the binary exists. Output: .build/bin/victoria-metrics
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/.build/bin/victoria-metrics"
[[ -x "$bin" ]] && exit 0

packages=(
    golang-go
    golang-github-victoriametrics-victoriametrics-dev
    golang-github-valyala-fastjson-dev
    golang-github-valyala-fastrand-dev
    golang-github-valyala-gozstd-dev
    golang-github-valyala-quicktemplate-dev
    golang-github-valyala-histogram-dev
    golang-github-victoriametrics-fastcache-dev
    golang-github-victoriametrics-metrics-dev
    golang-github-victoriametrics-metricsql-dev
)
src=/usr/share/gocode/src/github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics
if ! command -v go >/dev/null || [[ ! -d "$src" ]]; then
    sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${packages[@]}"
fi

mkdir -p "$root/.build/bin" "$root/.build/gobuild" "$root/.build/gocache"
export GOPATH="$root/.build/gobuild:/usr/share/gocode" GO111MODULE=off GOFLAGS="" GOCACHE="$root/.build/gocache"
tmp="$bin.tmp.$$"
go build -o "$tmp" github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics
mv "$tmp" "$bin"
echo "built $bin"
