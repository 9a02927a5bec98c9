#!/usr/bin/env bash
# install-deps.sh — installs the Debian packages kumaguard needs, and only those missing.
#   scripts/install-deps.sh          build + run (the daemon and its simulated nodes)
#   scripts/install-deps.sh --test   also everything the test suite drives for real
#                                    (MariaDB + Galera, nginx, Chromium, clang/libFuzzer,
#                                    clang-tidy,
#                                    pytest + pytest-xdist, wrk)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev
      libmariadb-dev libjson-c-dev libssl-dev zlib1g-dev libcriterion-dev sqlite3 curl)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(mariadb-server mariadb-client nginx wrk python3 python3-pytest python3-pytest-xdist
         python3-pymysql python3-yaml
         chromium clang libclang-rt-14-dev clang-tidy docker-compose
         galera-4 rsync iproute2 procps)  # the Galera test cluster (rsync state transfer)
  command -v node >/dev/null 2>&1 || pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Playwright (driver only; the browser is Debian's /usr/bin/chromium) for the dashboard test.
if [[ "${1:-}" == "--test" && -f tests/dashboard/package.json ]]; then
  if [[ ! -d tests/dashboard/node_modules/playwright-core ]]; then
    (cd tests/dashboard && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
