#!/usr/bin/env bash
# fuzz-short.sh — builds every libFuzzer target tests/fuzz/fuzz_*.c with clang
# (-fsanitize=fuzzer,address,undefined, no CMake) and runs each for a bounded time, all
# targets at once.
#
# Each target names the server files it links in a comment line
#     fuzz-sources: api_route.c snapshot.c types.c
# (default: every server/*.c but main.c).  Before fuzzing, every saved input in
# tests/fuzz/regressions/<name>/ is replayed (a crash once found stays a test); the seeds in
# tests/fuzz/corpus/<name>/ start the run, which works on a copy so the tree stays clean.
# A crash leaves its input in $KG_FUZZ_DIR/artifacts/ — copy it to regressions/ with the fix.
#
#   scripts/fuzz-short.sh                 all targets, KG_FUZZ_SECONDS (default 30) each
#   scripts/fuzz-short.sh fuzz_api_router only that target
#   KG_FUZZ_DIR=build-fuzz                where objects, binaries and artifacts go
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${KG_FUZZ_SECONDS:-30}
out=${KG_FUZZ_DIR:-$root/build-fuzz}
cc=${KG_FUZZ_CC:-clang}
command -v "$cc" >/dev/null || { echo "fuzz-short: $cc not found (apt-get install clang)"; exit 2; }
mkdir -p "$out/artifacts"

pkgs="libmicrohttpd libcurl json-c libmariadb sqlite3 libcrypto zlib"
# shellcheck disable=SC2086
cflags="-std=c11 -D_GNU_SOURCE -DKG_DEFAULT_WEB_DIR=\"$root/web\" -g -O1 -fno-omit-frame-pointer
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -Wall -Wextra -Werror -Wno-unused-parameter -I$root/server $(pkg-config --cflags $pkgs)"
# shellcheck disable=SC2086
libs="$(pkg-config --libs $pkgs) -lpthread -lm"

targets=()
if (($#)); then
  for t in "$@"; do targets+=("$root/tests/fuzz/${t%.c}.c"); done
else
  for f in "$root"/tests/fuzz/fuzz_*.c; do [[ -e $f ]] && targets+=("$f"); done
fi
((${#targets[@]})) || { echo "fuzz-short: no targets"; exit 0; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# One target: build, replay its regression inputs, fuzz.  Targets run at the same time (each
# one process; the machine's cores are shared between them), each writing its report to
# $out/<name>.summary, printed in order at the end.
fuzz_one() {
  local src=$1 name short sources files regress work failed=0
  name=$(basename "$src" .c)
  short=${name#fuzz_}
  sources=$(sed -n 's/^.*fuzz-sources:[[:space:]]*//p' "$src" | head -n1 | sed 's/\*\/.*//')
  files=()
  if [[ -n $sources ]]; then
    for s in $sources; do files+=("$root/server/$s"); done
  else
    for s in "$root"/server/*.c; do [[ $(basename "$s") == main.c ]] || files+=("$s"); done
  fi
  echo "fuzz-short: building $name (${#files[@]} server files)"
  # shellcheck disable=SC2086
  $cc $cflags -o "$out/$name" "$src" "${files[@]}" $libs || return 1

  regress="$root/tests/fuzz/regressions/$short"
  if compgen -G "$regress/*" >/dev/null; then
    echo "fuzz-short: $name: replaying $(ls "$regress" | wc -l) regression inputs"
    if ! "$out/$name" -runs=0 "$regress"/* >"$out/$name.regress.log" 2>&1; then
      echo "fuzz-short: $name FAILED on a regression input"; tail -n 40 "$out/$name.regress.log"
      return 1
    fi
  fi

  work=$(mktemp -d "$out/corpus-$short.XXXXXX")
  [[ -d $root/tests/fuzz/corpus/$short ]] && cp "$root/tests/fuzz/corpus/$short"/* "$work"/ 2>/dev/null || true
  echo "fuzz-short: $name: fuzzing for ${seconds}s"
  if "$out/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=4096 \
       -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" "$work" \
       >"$out/$name.log" 2>&1; then
    echo "fuzz-short: $name ok: $(grep -E '^stat::number_of_executed_units' "$out/$name.log" \
      | awk '{print $2}') runs, $(ls "$work" | wc -l) corpus entries"
  else
    echo "fuzz-short: $name FAILED (artifacts in $out/artifacts/)"; tail -n 60 "$out/$name.log"
    failed=1
  fi
  rm -rf "$work"
  return $failed
}

pids=() names=()
for src in "${targets[@]}"; do
  name=$(basename "$src" .c)
  fuzz_one "$src" >"$out/$name.summary" 2>&1 &
  pids+=($!) names+=("$name")
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "$out/${names[$i]}.summary"
done
exit $status
