#!/usr/bin/env bash
# package-test.sh — builds the Debian package the way a packager would (Release, no tests, no
# -Werror), installs it with dpkg, starts the installed daemon and checks that it answers and
# serves its dashboard from the installed files, then removes the package again.
#
#   scripts/package-test.sh [BUILD_DIR]      (default build-pkg; needs root for dpkg -i)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-pkg}
if [[ $(id -u) -ne 0 ]]; then
  echo "package-test: installing a .deb needs root (run as root, or sudo)"; exit 1
fi
rm -rf "$dir"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DKG_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
cmake --build "$dir" -j"$(nproc)" --target kumaguard >/dev/null
(cd "$dir" && cpack -G DEB >/dev/null 2>&1)
deb=$(ls "$dir"/kumaguard_*.deb)
echo "package: $deb"
dpkg-deb --info "$deb" | sed -n 's/^ Depends: /depends: /p'

state=$(mktemp -d)
pid=
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  dpkg --purge kumaguard >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
test -x /usr/bin/kumaguard
test -f /usr/share/kumaguard/web/templates/nginx-upstream.conf.tmpl
test -f /lib/systemd/system/kumaguard.service || test -f /usr/lib/systemd/system/kumaguard.service
grep -q '^ExecStart=/usr/bin/kumaguard$' /usr/lib/systemd/system/kumaguard.service
# the installed binary looks for its web files where the package put them
help=$(/usr/bin/kumaguard --help)
grep -q '/usr/share/kumaguard/web' <<<"$help" || {
  echo "installed binary does not default to /usr/share/kumaguard/web"; exit 1; }
getent passwd kumaguard >/dev/null || { echo "postinst did not create the kumaguard user"; exit 1; }
test -f /etc/kumaguard/kumaguard.env

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
/usr/bin/kumaguard --listen "127.0.0.1:$port" --state-dir "$state" >"$state/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
health=$(curl -fsS "http://127.0.0.1:$port/health") || { cat "$state/log"; exit 1; }
grep -q '"status"' <<<"$health" || { echo "bad /health: $health"; exit 1; }
# the dashboard comes from the installed files, not from a source tree
page=$(curl -fsS "http://127.0.0.1:$port/")
grep -qi '<html' <<<"$page" || { echo "no dashboard"; exit 1; }
curl -fsS "http://127.0.0.1:$port/static/app.js" >/dev/null
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
dpkg --purge kumaguard >/dev/null
[[ ! -e /usr/bin/kumaguard && ! -e /etc/kumaguard ]] || { echo "purge left files behind"; exit 1; }
echo "package installs, starts, answers /health and serves the dashboard; removed again"
