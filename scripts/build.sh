#!/usr/bin/env bash
# build.sh [DIR] [extra cmake args...] — configures and builds kumaguard into DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}; shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
