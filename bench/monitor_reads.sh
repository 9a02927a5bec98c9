#!/usr/bin/env bash
# monitor_reads.sh — kumaguard's steady-state reads of the monitor table on a throwaway
# MariaDB with N monitors: the full read it used to make twice per refresh against the change
# probe (bench_monitor_reads.c), as rows read and server CPU per minute.
#
#   bench/monitor_reads.sh [BUILD_DIR] [N]
#       BUILD_DIR holds bench_monitor_reads (default: build); N monitors (default 1000000).
#
# The server gets a buffer pool that holds the table (as a production server would), unless
# KG_MARIADB_OPTS says otherwise.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
n=${2:-1000000}
case "$build" in /*) ;; *) build="$src/$build" ;; esac
bin="$build/bench_monitor_reads"
[ -x "$bin" ] || { echo "monitor_reads.sh: $bin not built (cmake --build $build --target bench_monitor_reads)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/kg-bench-reads.XXXXXX")
port=$((20000 + $$ % 20000))
cleanup() {
    "$src/scripts/mariadb-test-server.sh" stop "$dir"
    rm -rf "$dir"
}
trap cleanup EXIT
KG_MARIADB_OPTS=${KG_MARIADB_OPTS:---innodb-buffer-pool-size=512M --innodb-log-file-size=128M} \
    "$src/scripts/mariadb-test-server.sh" start "$dir" "$port"
"$bin" "$dir/sock" "$n" "$(cat "$dir/pid")"
