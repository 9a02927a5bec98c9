#!/usr/bin/env bash
# mariadb-test-server.sh — a throwaway MariaDB server for tests and benchmarks (loopback only).
#
#   scripts/mariadb-test-server.sh start DIR PORT
#       Starts mariadbd with its data in DIR/data, listening on DIR/sock and 127.0.0.1:PORT.
#       Prints nothing on success (exit 0) and returns once the server answers a ping.  The
#       server has database `kuma` and user `kuma` / password `kumapw` with all privileges on
#       kuma.* from localhost (the socket) and 127.0.0.1; root has no password over the socket.
#       Leaves DIR/sock, DIR/pid (the server's pid) and DIR/err.log (its error log).
#       DIR is created when missing.  If DIR/data already exists (a server stopped with `stop`),
#       it is reused, so `stop` + `start` is a restart that keeps the data.
#       On failure: exit 1 with the reason and the end of DIR/err.log on stderr.
#   scripts/mariadb-test-server.sh stop DIR
#       SIGTERM to the server in DIR/pid, then waits (at most 30 s, then SIGKILL) until the pid
#       file is gone.  Does nothing when no server runs there.  Does NOT delete DIR: the caller
#       removes it (rm -rf DIR) when done.
#   scripts/mariadb-test-server.sh template
#       Builds the template data directory if needed and prints its path (the Galera test
#       cluster copies it too).
#
# KG_MARIADB_OPTS adds server options at start (benchmarks use it for production-like InnoDB
# sizes, e.g. "--innodb-log-file-size=256M --innodb-buffer-pool-size=512M").
#
# The first start builds a template data directory (mariadb-install-db, about 1 s) under
# ${TMPDIR:-/tmp}/kumaguard-mariadb-template and later starts copy it (about 0.2 s).  The
# template is rebuilt when the mariadbd version changes.
#
# Facts this relies on (shared/NOTES.md): --no-defaults so no system my.cnf leaks in,
# --user=root because we run as root, small InnoDB sizes, the init file must begin with
# FLUSH PRIVILEGES, wait for the pid file to vanish on stop (kill -0 lingers on a reparented
# process), and background the server itself so $! / the pid file name the right process.
set -u

INNODB_OPTS=(--innodb-log-file-size=8M --innodb-buffer-pool-size=32M)
TEMPLATE="${TMPDIR:-/tmp}/kumaguard-mariadb-template"

die() {
    echo "mariadb-test-server: $*" >&2
    exit 1
}

server_version() {
    mariadbd --no-defaults --version 2>/dev/null | head -n 1
}

# Builds the template data directory once; concurrent first runs each build a private copy
# and only one rename wins, so a half-built template is never visible.
ensure_template() {
    local version
    version=$(server_version)
    if [ -f "$TEMPLATE/version" ] && [ "$(cat "$TEMPLATE/version")" = "$version" ] \
        && [ -d "$TEMPLATE/data/kuma" ]; then
        return 0
    fi
    local tmp
    tmp=$(mktemp -d "${TEMPLATE}.build.XXXXXX") || die "cannot create a temporary directory"
    cat >"$tmp/init.sql" <<'EOF'
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS kuma CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'kuma'@'localhost' IDENTIFIED BY 'kumapw';
CREATE USER 'kuma'@'127.0.0.1' IDENTIFIED BY 'kumapw';
GRANT ALL PRIVILEGES ON kuma.* TO 'kuma'@'localhost';
GRANT ALL PRIVILEGES ON kuma.* TO 'kuma'@'127.0.0.1';
EOF
    if ! mariadb-install-db --no-defaults --user=root --datadir="$tmp/data" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        --extra-file="$tmp/init.sql" "${INNODB_OPTS[@]}" >"$tmp/install.log" 2>&1; then
        tail -n 20 "$tmp/install.log" >&2
        rm -rf "$tmp"
        die "mariadb-install-db failed"
    fi
    echo "$version" >"$tmp/version"
    if [ -d "$TEMPLATE" ]; then
        # Stale (other version) or a concurrent builder won: replace only a stale one.
        if [ "$(cat "$TEMPLATE/version" 2>/dev/null)" = "$version" ] && [ -d "$TEMPLATE/data/kuma" ]; then
            rm -rf "$tmp"
            return 0
        fi
        rm -rf "$TEMPLATE.old.$$"
        mv "$TEMPLATE" "$TEMPLATE.old.$$" 2>/dev/null && rm -rf "$TEMPLATE.old.$$"
    fi
    if ! mv -T "$tmp" "$TEMPLATE" 2>/dev/null; then
        rm -rf "$tmp" # someone else's identical template got there first
    fi
    [ -d "$TEMPLATE/data/kuma" ] || die "template $TEMPLATE is incomplete"
}

ping_server() {
    mariadb-admin --no-defaults --socket="$1/sock" -uroot --connect-timeout=1 ping >/dev/null 2>&1
}

cmd_start() {
    local dir=$1 port=$2
    case "$port" in '' | *[!0-9]*) die "PORT must be a number, got '$port'" ;; esac
    mkdir -p "$dir" || die "cannot create $dir"
    dir=$(cd "$dir" && pwd) || die "cannot enter $dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        die "a server already runs in $dir (pid $(cat "$dir/pid"))"
    fi
    if [ ! -d "$dir/data" ]; then
        ensure_template
        cp -a "$TEMPLATE/data" "$dir/data" || die "cannot copy the template into $dir"
    fi
    rm -f "$dir/pid" "$dir/sock"
    (cd "$dir" && exec mariadbd --no-defaults --user=root --datadir="$dir/data" \
        --socket="$dir/sock" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$dir/pid" --log-error="$dir/err.log" "${INNODB_OPTS[@]}" \
        ${KG_MARIADB_OPTS:-}) \
        </dev/null >/dev/null 2>&1 &
    local server=$!
    # Bounded wait: 300 polls of 0.1 s.
    for _ in $(seq 300); do
        if ping_server "$dir"; then
            return 0
        fi
        if ! kill -0 "$server" 2>/dev/null; then
            tail -n 20 "$dir/err.log" >&2 2>/dev/null
            die "mariadbd exited during start-up (port $port busy?)"
        fi
        sleep 0.1
    done
    kill -TERM "$server" 2>/dev/null
    tail -n 20 "$dir/err.log" >&2 2>/dev/null
    die "mariadbd did not answer within 30 s"
}

cmd_stop() {
    local dir=$1
    [ -f "$dir/pid" ] || return 0
    local pid
    pid=$(cat "$dir/pid" 2>/dev/null)
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
    for _ in $(seq 300); do
        [ -f "$dir/pid" ] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$dir/pid"
    echo "mariadb-test-server: server $pid did not stop within 30 s; killed" >&2
    return 0
}

case "${1:-}" in
start)
    [ $# -eq 3 ] || die "usage: $0 start DIR PORT"
    cmd_start "$2" "$3"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: $0 stop DIR"
    cmd_stop "$2"
    ;;
template)
    ensure_template
    echo "$TEMPLATE"
    ;;
*)
    die "usage: $0 start DIR PORT | stop DIR | template"
    ;;
esac
