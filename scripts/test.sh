#!/usr/bin/env bash
# test.sh — the second README command (and what .ci/run calls): installs what is missing,
# builds kumaguard twice (plain, and with AddressSanitizer + UBSan), and runs the whole suite
# against real components: Criterion unit tests (the MariaDB store tests start a throwaway
# MariaDB), pytest integration tests (real kumaguard, real simulated Kuma nodes, real MariaDB
# and nginx), a bounded libFuzzer run, the headless-Chromium dashboard test and the compose
# file check.  Exit status is non-zero when any stage fails.
#
#   scripts/test.sh            everything
#   KG_FUZZ_SECONDS=N          length of the fuzz stage (default 30)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export KG_SOURCE_DIR=$root

passed=0 failed=0 failures=()
stage() { # stage NAME COMMAND...
  local name=$1; shift
  echo; echo "=== $name"
  local t0=$SECONDS
  if "$@"; then passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"; fi
}

scripts/install-deps.sh --test || { echo "installing dependencies failed"; exit 1; }

# LeakSanitizer needs ptrace-like access that some containers refuse; leaks are still checked
# where it works, and ASan's other checks always are.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stage "build (plain)" scripts/build.sh build
stage "build (ASan+UBSan)" scripts/build.sh build-asan -DKG_SANITIZE=ON
stage "unit tests (Criterion, ASan+UBSan)" ctest --test-dir build-asan --output-on-failure
stage "integration tests (pytest, ASan+UBSan daemon)" \
  env KG_BUILD_DIR="$root/build-asan" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration
# Two kumaguards on different nodes of a real 3-node Galera cluster (skipped, with the reason,
# only where Galera cannot run); prints takeover/overlap/churn figures at the end.
stage "HA on Galera (pytest, ASan+UBSan daemon)" \
  env KG_BUILD_DIR="$root/build-asan" /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/ha
if [[ -x scripts/fuzz-short.sh ]]; then
  stage "fuzz (libFuzzer, ${KG_FUZZ_SECONDS:-30} s per target)" scripts/fuzz-short.sh
fi
if [[ -f tests/dashboard/dashboard.test.mjs ]]; then
  stage "dashboard (headless Chromium)" env KG_BUILD_DIR="$root/build" node --test tests/dashboard/
fi
stage "compose file" docker-compose -f docker-compose-cluster.yaml config -q

echo
((failed)) && printf 'failed stages: %s\n' "${failures[*]}"
echo "stages: $passed passed, $failed failed"
((failed == 0))
