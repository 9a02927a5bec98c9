#!/usr/bin/env bash
# store_moves.sh — set-based failover of N monitors through the MariaDB store vs. the floor
# (one bare UPDATE of the same rows) and the Lua version's per-row UPDATE loop, on a throwaway
# MariaDB (scripts/mariadb-test-server.sh).
#
#   bench/store_moves.sh [BUILD_DIR] [N] [SAMPLE] [ROUNDS]
#       BUILD_DIR holds bench_store_moves (default: build); N monitors (default 100000);
#       SAMPLE rows for the per-row loop (default 2000), extrapolated to N; ROUNDS of
#       apply-vs-floor (default 5), reported with their medians and the server's CPU time.
#
# Compare the figures of one run, not figures across runs: the machine is shared.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
n=${2:-100000}
sample=${3:-2000}
rounds=${4:-5}
case "$build" in /*) ;; *) build="$src/$build" ;; esac
bin="$build/bench_store_moves"
[ -x "$bin" ] || { echo "store_moves.sh: $bin not built (cmake --build $build --target bench_store_moves)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/kg-bench-mariadb.XXXXXX")
port=$((20000 + $$ % 20000))
cleanup() {
    "$src/scripts/mariadb-test-server.sh" stop "$dir"
    rm -rf "$dir"
}
trap cleanup EXIT
"$src/scripts/mariadb-test-server.sh" start "$dir" "$port"
"$bin" "$dir/sock" "$n" "$sample" "$rounds" "$(cat "$dir/pid")"
