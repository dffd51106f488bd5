#!/usr/bin/env bash
# deps 6/6: statsd_exporter (pinned in requirements/go/statsd_exporter.txt) into var/bin.
#
# Airflow speaks StatsD; Debian packages no statsd_exporter, so it is built from the Go module proxy
# with the machine's Go. Without Go it says why Airflow's metrics are off and succeeds: the rest of
# the stack (and the pipeline's own metrics, pushed to the Pushgateway) does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
module=$(grep -v '^#' requirements/go/statsd_exporter.txt | grep -m1 '@')
if ! command -v go >/dev/null 2>&1; then
    echo "statsd_exporter: no Go toolchain on PATH; Airflow's own metrics stay off (install Go and rerun make deps)"
    exit 0
fi
mkdir -p var/bin var/go
# A private module cache under var/ (writable, removed by make clean), not the user's GOPATH.
GOPATH="$PWD/var/go" GOBIN="$PWD/var/bin" GOFLAGS=-modcacherw GOTOOLCHAIN=local go install "$module" 2> >(grep -v "^go: downloading" >&2)
echo "statsd_exporter: $module in var/bin/statsd_exporter"
