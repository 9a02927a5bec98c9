#!/usr/bin/env bash
# run.sh — the first README command: install what is missing, build, and run kumaguard on its
# embedded default store (SQLite) with simulated Kuma nodes and seeded monitors.
#
#   scripts/run.sh [--simulate N] [--monitors M] [--listen HOST:PORT] [--state-dir DIR]
#                  [-- extra kumaguard flags...]
#
# --simulate 0 runs kumaguard alone (nodes come from KUMAGUARD_NODES / the node table).
# Ctrl-C stops kumaguard and the simulated nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

sim=3 monitors=300 listen=${KUMAGUARD_LISTEN:-127.0.0.1:8080} state=${KUMAGUARD_STATE_DIR:-$root/kumaguard-state}
extra=()
while (($#)); do
  case "$1" in
    --simulate) sim=$2; shift 2 ;;
    --monitors) monitors=$2; shift 2 ;;
    --listen) listen=$2; shift 2 ;;
    --state-dir) state=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
scripts/build.sh build
mkdir -p "$state"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# Realistic simulated nodes (tests/kumasim): they share kumaguard's cluster file as real nodes
# share MariaDB, register themselves, start and stop monitors with a real node's delays, and
# re-read their assignments at :00 of every minute.  --setup-done: the first user exists, so
# kumaguard's reconcile calls are accepted (a real node checks no key value, only that the
# value does not start with "Bearer ").
api_key=demo-cluster-key
node_flags=()
for ((i = 1; i <= sim; i++)); do
  port=$((3000 + i))
  build/kumasim --listen "127.0.0.1:$port" --node-id "node$i" --node-host "127.0.0.1:$port" \
    --sqlite-path "$state/cluster.db" --setup-done >"$state/kumasim-node$i.log" 2>&1 &
  pids+=($!)
  node_flags+=(--node "node$i=127.0.0.1:$port")
done

# Faster than the production defaults so the demo reacts within seconds.  The key goes in
# through the environment: a flag would be readable by every local user in `ps`.
KUMA_API_KEY="$api_key" build/kumaguard --listen "$listen" --state-dir "$state" \
  --health-interval 2s --health-fast-interval 500ms --recovery-hold-down 10s \
  "${node_flags[@]}" "${extra[@]}" &
kg=$!
pids+=($kg)

for _ in $(seq 1 100); do
  curl -fsS "http://$listen/health" >/dev/null 2>&1 && break
  kill -0 "$kg" 2>/dev/null || { echo "kumaguard exited; see the messages above" >&2; exit 1; }
  sleep 0.1
done

# Seed demo monitors once, spread over the simulated nodes (the embedded store has Kuma's schema).
if ((sim > 0 && monitors > 0)); then
  existing=$(sqlite3 "$state/cluster.db" "SELECT COUNT(*) FROM monitor" 2>/dev/null || echo 0)
  if [[ "$existing" == 0 ]]; then
    sqlite3 "$state/cluster.db" "PRAGMA busy_timeout=5000;
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $monitors)
      INSERT INTO monitor(name, active, user_id, node_id)
      SELECT 'demo monitor ' || x, 1, 1, 'node' || ((x % $sim) + 1) FROM c;" >/dev/null
  fi
  curl -fsS -X POST "http://$listen/api/update-loads" >/dev/null || true
fi

cat <<EOT

kumaguard is running: dashboard and API at http://$listen/
  curl http://$listen/api/node-status
  curl http://$listen/lb/capacity
Simulated nodes: $(for ((i = 1; i <= sim; i++)); do printf 'node%d=127.0.0.1:%d ' "$i" $((3000 + i)); done)
  kill one:    curl -X POST http://127.0.0.1:3002/_sim/exit      (or /_sim/mode with body 503)
  what a node runs (copies per monitor, leaks):  curl http://127.0.0.1:3001/_sim/monitors
State and logs: $state      Stop: Ctrl-C
EOT
wait "$kg"
