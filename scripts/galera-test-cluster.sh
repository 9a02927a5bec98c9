#!/usr/bin/env bash
# galera-test-cluster.sh — a throwaway 3-node MariaDB Galera cluster for tests (loopback only).
#
#   scripts/galera-test-cluster.sh start DIR
#       Starts three mariadbd nodes, DIR/node1..node3 (data, sock, pid, err.log), that form one
#       Galera cluster on 127.0.0.1 with ports of their own; returns once all three are Synced
#       and the cluster has 3 members.  Writes DIR/ports: one line per node,
#       "nodeK SQL_PORT GCOMM_PORT IST_PORT SST_PORT".  Same accounts as
#       mariadb-test-server.sh: database `kuma`, user kuma/kumapw (all privileges on *.* from
#       localhost and 127.0.0.1, so tests may create databases), root without password over
#       each node's socket.
#       Exit 2 when Galera cannot run on this machine at all (no provider library, a server
#       without wsrep): the message says why, and tests skip with it.  Exit 1 on any other
#       failure, with the end of the failing node's err.log on stderr.
#   scripts/galera-test-cluster.sh stop DIR
#       Stops every node (SIGTERM, SIGKILL after 30 s).  Does not delete DIR.
#   scripts/galera-test-cluster.sh stop-node DIR K | kill-node DIR K | start-node DIR K
#       SIGTERM (clean leave) or SIGKILL (crash) one node; start-node (re)joins a stopped
#       node to the running cluster (state transfer by rsync) and waits until it is Synced.
#
# Why the details:
# - The nodes run as a non-root user (the system `mysql` user when we are root; it is created
#   when missing): the rsync state transfer (SST) that a joining node needs refuses to work
#   as root.  DIR is handed to that user, so it must not lie under a directory the user
#   cannot enter (pytest's tmp_path can't be used; mkdtemp under /tmp can).
# - The first node bootstraps the cluster from a copy of mariadb-test-server.sh's template
#   data directory; the others join it by rsync SST, one after the other (a donor serves one
#   joiner at a time).
# - Failure detection is tuned down (suspect 2 s, inactive 4 s) so that the tests that kill a
#   node see the survivors form a new primary component within seconds.
#   KG_GALERA_PROVIDER_OPTS appends provider options (later settings win).
# - innodb_flush_log_at_trx_commit=2 and small InnoDB sizes: durability is Galera's job here,
#   and the machine is shared.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
NODES=3
INNODB_OPTS=(--innodb-log-file-size=8M --innodb-buffer-pool-size=32M
             --innodb-flush-log-at-trx-commit=2)
PROVIDER=${KG_GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}

die() {
    echo "galera-test-cluster: $*" >&2
    exit 1
}

cannot_run() {
    echo "galera-test-cluster: Galera cannot run here: $*" >&2
    exit 2
}

# The user the nodes run as, created when missing (root only).
node_user() {
    if [ "$(id -u)" -ne 0 ]; then
        id -un
        return
    fi
    if ! id mysql >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            mysql >/dev/null 2>&1 || die "cannot create the system user mysql"
    fi
    echo mysql
}

as_user() { # as_user USER CMD...: CMD as USER (we may already be that user)
    local u=$1
    shift
    if [ "$(id -un)" = "$u" ]; then "$@"; else runuser -u "$u" -- "$@"; fi
}

check_prerequisites() {
    [ -r "$PROVIDER" ] || cannot_run "no Galera provider at $PROVIDER (Debian package galera-4)"
    command -v mariadbd >/dev/null || cannot_run "no mariadbd (Debian package mariadb-server)"
    mariadbd --no-defaults --verbose --help 2>/dev/null | grep -q '^wsrep-provider ' \
        || cannot_run "this mariadbd is built without wsrep (Galera) support"
    command -v rsync >/dev/null || cannot_run "no rsync for the state transfer (package rsync)"
    command -v ss >/dev/null || command -v lsof >/dev/null \
        || cannot_run "the rsync SST script needs ss or lsof (package iproute2)"
    command -v python3 >/dev/null || die "python3 is needed to pick free ports"
}

# N distinct loopback ports that were free a moment ago, in 10000-19999: below the kernel's
# ephemeral range (a node binds its SQL port only after its state transfer, tens of seconds
# after the pick, and an ephemeral port is soon handed to some outgoing connection), and below
# the 20000-31999 the test helpers' free_port hands out (tests/integration/kumasim_ctl.py): a
# node's IST and SST ports are bound only during a transfer, so free most of the time.
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
picked = []
while len(picked) < int(sys.argv[1]):
    p = random.randrange(10000, max(min(low, 20000), 10001))
    if p in picked:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        picked.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, picked)))
EOF
}

node_ports() { # node_ports DIR K: prints "SQL GCOMM IST SST"
    awk -v n="node$2" '$1 == n { print $2, $3, $4, $5 }' "$1/ports"
}

sql() { # sql DIR K QUERY: first column of the result, root over the node's socket
    mariadb --no-defaults --socket="$1/node$2/sock" -uroot --connect-timeout=2 -N -B -e "$3" \
        2>/dev/null
}

wsrep_status() { # wsrep_status DIR K NAME
    sql "$1" "$2" "SHOW GLOBAL STATUS LIKE '$3'" | awk '{ print $2 }'
}

node_pid() {
    cat "$1/node$2/pid" 2>/dev/null
}

node_alive() {
    local pid
    pid=$(node_pid "$1" "$2")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

launch_node() { # launch_node DIR K [--wsrep-new-cluster]
    local dir=$1 k=$2 extra=${3:-} user
    user=$(node_user)
    local ports sqlp gport iport sport addr=""
    ports=$(node_ports "$dir" "$k")
    read -r sqlp gport iport sport <<<"$ports"
    for j in $(seq "$NODES"); do
        local p
        p=$(node_ports "$dir" "$j")
        addr="${addr:+$addr,}127.0.0.1:$(echo "$p" | awk '{ print $2 }')"
    done
    local nd="$dir/node$k"
    rm -f "$nd/pid" "$nd/sock"
    chown -R "$user": "$nd"
    local opts="gmcast.listen_addr=tcp://127.0.0.1:$gport; ist.recv_addr=127.0.0.1:$iport;"
    opts+=" gcache.size=32M; pc.recovery=false; evs.keepalive_period=PT0.5S;"
    opts+=" evs.inactive_check_period=PT0.5S; evs.suspect_timeout=PT2S;"
    opts+=" evs.inactive_timeout=PT4S; evs.install_timeout=PT4S"
    [ -n "${KG_GALERA_PROVIDER_OPTS:-}" ] && opts+="; $KG_GALERA_PROVIDER_OPTS"
    # shellcheck disable=SC2086 # $extra is one optional flag
    (cd "$nd" && exec mariadbd --no-defaults --user="$user" --datadir="$nd/data" \
        --socket="$nd/sock" --port="$sqlp" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$nd/pid" --log-error="$nd/err.log" "${INNODB_OPTS[@]}" \
        --binlog-format=ROW --default-storage-engine=InnoDB --innodb-autoinc-lock-mode=2 \
        --wsrep-on=ON --wsrep-provider="$PROVIDER" --wsrep-cluster-name=kumaguard-test \
        --wsrep-cluster-address="gcomm://$addr" --wsrep-node-name="node$k" \
        --wsrep-node-address="127.0.0.1:$gport" --wsrep-node-incoming-address="127.0.0.1:$sqlp" \
        --wsrep-sst-method=rsync --wsrep-sst-receive-address="127.0.0.1:$sport" \
        --wsrep-provider-options="$opts" $extra) </dev/null >/dev/null 2>&1 &
}

# Waits until node K answers, is Synced and sees `size` members (bounded: 90 s).
wait_synced() {
    local dir=$1 k=$2 size=$3 deadline=$((SECONDS + 90)) dead=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(wsrep_status "$dir" "$k" wsrep_local_state_comment)" = Synced ] \
            && [ "$(wsrep_status "$dir" "$k" wsrep_cluster_size)" = "$size" ]; then
            return 0
        fi
        # Gone only when seen gone twice: mariadbd creates its pid file empty and then writes
        # the pid, so a read in between found no pid and gave up on a node that was starting.
        if ! node_alive "$dir" "$k" && [ -f "$dir/node$k/pid" ]; then
            dead=$((dead + 1))
            [ "$dead" -ge 2 ] && break
        else
            dead=0
        fi
        sleep 0.1
    done
    tail -n 30 "$dir/node$k/err.log" >&2 2>/dev/null
    return 1
}

cluster_size_now() { # the size seen by any live node
    for j in $(seq "$NODES"); do
        if node_alive "$1" "$j"; then
            local s
            s=$(wsrep_status "$1" "$j" wsrep_cluster_size)
            [ -n "$s" ] && { echo "$s"; return; }
        fi
    done
    echo 0
}

# One attempt at starting the cluster on fresh ports; returns 1 (nodes stopped) on failure.
start_attempt() {
    local dir=$1 template=$2 k
    local p=($(free_ports $((NODES * 4))))
    : >"$dir/ports"
    for k in $(seq "$NODES"); do
        local i=$(((k - 1) * 4))
        echo "node$k ${p[i]} ${p[i + 1]} ${p[i + 2]} ${p[i + 3]}" >>"$dir/ports"
        [ -f "$dir/node$k/err.log" ] && mv "$dir/node$k/err.log" "$dir/node$k.failed-start.log"
        rm -rf "$dir/node$k"
        mkdir -p "$dir/node$k"
        cp -a "$template/data" "$dir/node$k/data" || die "cannot copy the template"
    done
    launch_node "$dir" 1 --wsrep-new-cluster
    if ! wait_synced "$dir" 1 1; then
        echo "galera-test-cluster: node1 did not bootstrap the cluster" >&2
        cmd_stop "$dir"
        return 1
    fi
    # Tests create a database each (as the MariaDB fixture allows); replicated to joiners.
    sql "$dir" 1 "GRANT ALL ON *.* TO 'kuma'@'localhost'; GRANT ALL ON *.* TO 'kuma'@'127.0.0.1'" \
        >/dev/null || true
    # The joiners start together; the donor serves their state transfers one after the other.
    for k in $(seq 2 "$NODES"); do
        launch_node "$dir" "$k"
    done
    for k in $(seq 2 "$NODES"); do
        if ! wait_synced "$dir" "$k" "$NODES"; then
            echo "galera-test-cluster: node$k did not join" >&2
            cmd_stop "$dir"
            return 1
        fi
    done
}

cmd_start() {
    local dir=$1 attempt
    check_prerequisites
    mkdir -p "$dir" || die "cannot create $dir"
    dir=$(cd "$dir" && pwd) || die "cannot enter $dir"
    local user
    user=$(node_user)
    chmod 755 "$dir"
    as_user "$user" test -x "$dir" || die "user $user cannot enter $dir (a parent directory" \
        "is private): use a directory under /tmp"
    for k in $(seq "$NODES"); do
        node_alive "$dir" "$k" && die "a node already runs in $dir/node$k"
    done
    local template
    template=$("$ROOT/scripts/mariadb-test-server.sh" template) || die "no template datadir"
    # A port that was free when picked can be taken before a node binds it (other tests pick
    # ports too): up to three attempts, each on fresh ports.
    for attempt in 1 2 3; do
        start_attempt "$dir" "$template" && return 0
        echo "galera-test-cluster: attempt $attempt failed" >&2
    done
    die "the cluster did not start (see above)"
}

stop_one() { # stop_one DIR K SIGNAL
    local dir=$1 k=$2 sig=$3 pid
    pid=$(node_pid "$dir" "$k")
    [ -n "$pid" ] || return 0
    if ! kill -"$sig" "$pid" 2>/dev/null; then
        rm -f "$dir/node$k/pid"
        return 0
    fi
    kill -CONT "$pid" 2>/dev/null # a paused node cannot act on SIGTERM
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/node$k/pid"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$dir/node$k/pid"
    echo "galera-test-cluster: node$k ($pid) did not stop within 30 s; killed" >&2
}

cmd_stop() {
    local dir=$1 k
    for k in $(seq "$NODES" -1 1); do
        [ -f "$dir/node$k/pid" ] && stop_one "$dir" "$k" TERM
    done
    return 0
}

cmd_start_node() {
    local dir=$1 k=$2
    node_alive "$dir" "$k" && die "node$k already runs"
    local size
    size=$(cluster_size_now "$dir")
    [ "$size" -gt 0 ] || die "no running node to join"
    launch_node "$dir" "$k"
    wait_synced "$dir" "$k" $((size + 1)) || die "node$k did not rejoin"
}

check_node_arg() {
    case "$1" in [1-9]) [ "$1" -le "$NODES" ] && return 0 ;; esac
    die "node number must be 1..$NODES, got '$1'"
}

case "${1:-}" in
start)
    [ $# -eq 2 ] || die "usage: $0 start DIR"
    cmd_start "$2"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: $0 stop DIR"
    cmd_stop "$2"
    ;;
stop-node | kill-node | start-node)
    [ $# -eq 3 ] || die "usage: $0 $1 DIR K"
    check_node_arg "$3"
    case "$1" in
    stop-node) stop_one "$2" "$3" TERM ;;
    kill-node) stop_one "$2" "$3" KILL ;;
    start-node) cmd_start_node "$2" "$3" ;;
    esac
    ;;
*)
    die "usage: $0 start DIR | stop DIR | stop-node|kill-node|start-node DIR K"
    ;;
esac
