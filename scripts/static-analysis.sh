#!/usr/bin/env bash
# static-analysis.sh — clang's static analyzer (through clang-tidy's clang-analyzer-* checks,
# Debian package clang-tidy) over every C file of server/: path-sensitive checks for NULL
# dereferences, use of uninitialised values, leaks, dead stores, API misuse.  Exit status
# non-zero on any finding; each file's output is kept in $KG_SCAN_DIR (default build-scan/).
#
#   scripts/static-analysis.sh            every file
#   scripts/static-analysis.sh FILE...    only these (paths relative to server/)
#
# Left out, as scan-build leaves them out by default: the opt-in checks (optin.*: struct
# padding and the like) and security.insecureAPI.DeprecatedOrUnsafeBufferHandling, which
# flags every memcpy and snprintf as "insecure" (it wants Annex K's *_s functions, which glibc
# lacks).  Files in EXCLUDE are skipped, each with the reason and what would fix it; the list
# is meant to shrink to nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${KG_SCAN_DIR:-$root/build-scan}
command -v clang-tidy >/dev/null || { echo "static-analysis: clang-tidy not found (apt-get install clang-tidy)"; exit 2; }

# Nothing is excluded; add a file here only with the reason and what would fix it.
EXCLUDE=()

checks='-*,clang-analyzer-*,-clang-analyzer-optin.*,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling'
pkgs="libmicrohttpd libcurl json-c libmariadb sqlite3"
# shellcheck disable=SC2086
flags="-std=c11 -D_GNU_SOURCE -DKG_DEFAULT_WEB_DIR=\"$root/web\" -I$root/server $(pkg-config --cflags $pkgs)"

files=()
if (($#)); then
  files=("$@")
else
  for f in server/*.c; do
    f=${f#server/}
    skip=0
    for e in "${EXCLUDE[@]}"; do [[ $f == "$e" ]] && skip=1; done
    ((skip)) || files+=("$f")
  done
fi
rm -rf "$out" && mkdir -p "$out"
export out checks flags root
# shellcheck disable=SC2016
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -I{} sh -c \
  'clang-tidy -quiet -checks="$checks" "$root/server/{}" -- $flags >"$out/{}.log" 2>&1; echo $? >"$out/{}.rc"'

findings=0 broken=0
for f in "${files[@]}"; do
  n=$(grep -cE "(warning|error): " "$out/$f.log" || true)
  if [[ $(cat "$out/$f.rc") != 0 && $n == 0 ]]; then
    broken=$((broken + 1)); echo "static-analysis: clang-tidy failed on $f:"; tail -n 5 "$out/$f.log"
  fi
  if ((n > 0)); then
    findings=$((findings + n)); grep -E "(warning|error): " "$out/$f.log"
  fi
done
echo "static-analysis: ${#files[@]} files, $findings findings${EXCLUDE:+, skipped: ${EXCLUDE[*]}}"
((findings == 0 && broken == 0))
