#!/usr/bin/env bash
# entrypoint.sh — start-up and supervisor of the kumaguard container (nginx + kumaguard).
#
# Why one container for both: kumaguard validates and reloads nginx by running commands
# (NGINX_TEST_CMD, NGINX_RELOAD_CMD).  With nginx in the same container, started by this
# script as the same user, `nginx -s reload` reaches its master by the pid file — no shared
# PID namespace, no Docker socket, no privileges.  Both run as the image's non-root user:
# nginx listens on a port above 1024 (KG_PROXY_LISTEN, default 8080) and keeps its pid file,
# temp directories and config under KG_NGINX_PREFIX, which that user owns.
#
# What it does, in order:
#   1. writes KG_NGINX_PREFIX/conf/nginx.conf (pid, logs, temp paths inside the prefix) and
#      a copy of the sample site config (docker/nginx-site.conf) with its three deployment
#      names replaced: the include path (-> NGINX_INCLUDE_PATH), the kumaguard upstream
#      (-> KUMAGUARD_LISTEN) and `listen 80` (-> KG_PROXY_LISTEN);
#   2. seeds NGINX_INCLUDE_PATH, which nginx needs before kumaguard has rendered it: the last
#      file nginx accepted (kumaguard keeps it in its state directory) when it still
#      validates, otherwise a placeholder upstream;
#   3. starts nginx, waits until it has bound its port, then starts kumaguard with
#      NGINX_TEST_CMD / NGINX_RELOAD_CMD pointing at that nginx;
#   4. supervises: if either process exits, the other is stopped and the script exits
#      non-zero (so `restart: unless-stopped` restarts the container).  SIGTERM/SIGINT stop
#      kumaguard first (so it does not reload a stopping nginx), then nginx gracefully
#      (SIGQUIT, then SIGTERM after KG_STOP_TIMEOUT), and exit 0.  SIGHUP reloads nginx.
#
# Everything is a variable, so the integration test (tests/integration/test_deploy.py) runs
# this very script outside a container against a temporary prefix:
#   KG_NGINX_PREFIX       nginx prefix: conf/, tmp/, nginx.pid     (/run/kumaguard/nginx)
#   KG_NGINX_SITE_CONF    site config to install                   (/etc/kumaguard/nginx-site.conf)
#   KG_SITE_REWRITE       1 = replace the three names above; 0 = use the site file as is (1)
#   KG_PROXY_LISTEN       nginx listen address: PORT or ADDR:PORT  (8080)
#   KG_NGINX_BIN          nginx executable                          (nginx)
#   KG_KUMAGUARD_BIN      kumaguard executable                      (kumaguard)
#   KG_NGINX_ERROR_LOG    nginx error_log target                    (stderr)
#   KG_NGINX_ACCESS_LOG   nginx access_log target, or off           (/dev/stdout)
#   KG_NGINX_WORKERS      worker_processes                          (auto)
#   KG_NGINX_WORKER_SHUTDOWN_TIMEOUT  how long old workers may keep connections (WebSockets,
#                         the event stream) after a reload or stop  (60s)
#   KG_NGINX_MIME_TYPES   mime.types to include when it exists      (/etc/nginx/mime.types)
#   KG_STOP_TIMEOUT       seconds each process gets to stop         (10)
# and kumaguard's own settings pass through the environment, with these defaults set here:
#   KUMAGUARD_LISTEN      127.0.0.1:8081 (only nginx and the health check talk to it)
#   KUMAGUARD_STATE_DIR   /var/lib/kumaguard
#   NGINX_INCLUDE_PATH    KG_NGINX_PREFIX/conf/kuma-upstream.conf
#   NGINX_TEST_CMD        nginx -e stderr -q -t -p PREFIX -c PREFIX/conf/nginx.conf
#   NGINX_RELOAD_CMD      nginx -e stderr -s reload -p PREFIX -c PREFIX/conf/nginx.conf
# Arguments are passed to kumaguard as extra flags; `--help` and `--version` run kumaguard
# alone.  Set KUMAGUARD_LISTEN through the environment, not --listen, because the nginx
# site config is written from it.
set -uo pipefail

log() { printf 'kumaguard-entrypoint: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    die "bash 5.1 or newer is required (wait -n -p)"
fi

# --help / --version: nothing to supervise.
for a in "$@"; do
    case "$a" in
    --help | -h | --version) exec "${KG_KUMAGUARD_BIN:-kumaguard}" "$@" ;;
    esac
done

# ------------------------------------------------------------------------------- settings

KG_NGINX_PREFIX=${KG_NGINX_PREFIX:-/run/kumaguard/nginx}
KG_NGINX_PREFIX=${KG_NGINX_PREFIX%/}
KG_NGINX_SITE_CONF=${KG_NGINX_SITE_CONF:-/etc/kumaguard/nginx-site.conf}
KG_SITE_REWRITE=${KG_SITE_REWRITE:-1}
KG_PROXY_LISTEN=${KG_PROXY_LISTEN:-8080}
KG_NGINX_BIN=${KG_NGINX_BIN:-nginx}
KG_KUMAGUARD_BIN=${KG_KUMAGUARD_BIN:-kumaguard}
KG_NGINX_ERROR_LOG=${KG_NGINX_ERROR_LOG:-stderr}
KG_NGINX_ACCESS_LOG=${KG_NGINX_ACCESS_LOG:-/dev/stdout}
KG_NGINX_WORKERS=${KG_NGINX_WORKERS:-auto}
KG_NGINX_WORKER_SHUTDOWN_TIMEOUT=${KG_NGINX_WORKER_SHUTDOWN_TIMEOUT:-60s}
KG_NGINX_MIME_TYPES=${KG_NGINX_MIME_TYPES:-/etc/nginx/mime.types}
KG_STOP_TIMEOUT=${KG_STOP_TIMEOUT:-10}

export KUMAGUARD_LISTEN=${KUMAGUARD_LISTEN:-127.0.0.1:8081}
export KUMAGUARD_STATE_DIR=${KUMAGUARD_STATE_DIR:-/var/lib/kumaguard}
export NGINX_INCLUDE_PATH=${NGINX_INCLUDE_PATH:-$KG_NGINX_PREFIX/conf/kuma-upstream.conf}

NGINX_CONF=$KG_NGINX_PREFIX/conf/nginx.conf
SITE_CONF=$KG_NGINX_PREFIX/conf/kumaguard-site.conf
NGINX_PID_FILE=$KG_NGINX_PREFIX/nginx.pid
LAST_GOOD=$KUMAGUARD_STATE_DIR/nginx-last-good.conf # name owned by server/nginx_feed.c

# Values written into nginx configuration are checked first: a stray ';', '{', quote or
# space would change the meaning of the file (the same rule kumaguard applies to node.host).
path_re='^/[A-Za-z0-9._/+-]+$'
port_re='^[0-9]{1,5}$'
hostport_re='^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
for v in KG_NGINX_PREFIX NGINX_INCLUDE_PATH; do
    [[ ${!v} =~ $path_re ]] || die "$v='${!v}' must be an absolute path of [A-Za-z0-9._/+-]"
done
[[ $KG_PROXY_LISTEN =~ $port_re || $KG_PROXY_LISTEN =~ $hostport_re ]] ||
    die "KG_PROXY_LISTEN='$KG_PROXY_LISTEN' must be PORT or ADDRESS:PORT"
[[ $KUMAGUARD_LISTEN =~ $hostport_re ]] ||
    die "KUMAGUARD_LISTEN='$KUMAGUARD_LISTEN' must be HOST:PORT (set it here, not with --listen)"
[[ $KG_NGINX_ERROR_LOG == stderr || $KG_NGINX_ERROR_LOG =~ $path_re ]] ||
    die "KG_NGINX_ERROR_LOG must be stderr or an absolute path"
[[ $KG_NGINX_ACCESS_LOG == off || $KG_NGINX_ACCESS_LOG =~ $path_re ]] ||
    die "KG_NGINX_ACCESS_LOG must be off or an absolute path"
[[ $KG_NGINX_WORKERS == auto || $KG_NGINX_WORKERS =~ ^[0-9]{1,3}$ ]] ||
    die "KG_NGINX_WORKERS must be auto or a number"
[[ $KG_NGINX_WORKER_SHUTDOWN_TIMEOUT =~ ^[0-9]{1,6}(ms|s|m)?$ ]] ||
    die "KG_NGINX_WORKER_SHUTDOWN_TIMEOUT must be an nginx time like 60s"
[[ $KG_STOP_TIMEOUT =~ ^[0-9]{1,4}$ ]] || die "KG_STOP_TIMEOUT must be a number of seconds"
[[ -r $KG_NGINX_SITE_CONF ]] || die "site config $KG_NGINX_SITE_CONF is not readable"
command -v "$KG_NGINX_BIN" >/dev/null || die "nginx ($KG_NGINX_BIN) not found"
command -v "$KG_KUMAGUARD_BIN" >/dev/null || die "kumaguard ($KG_KUMAGUARD_BIN) not found"

# kumaguard reaches the nginx started here.  printf %q keeps paths with odd characters intact
# through kumaguard's `/bin/sh -c`.
nginx_args=(-e stderr -p "$KG_NGINX_PREFIX/" -c "$NGINX_CONF")
export NGINX_TEST_CMD=${NGINX_TEST_CMD:-$(printf '%q ' "$KG_NGINX_BIN" -e stderr -q -t \
    -p "$KG_NGINX_PREFIX/" -c "$NGINX_CONF")}
export NGINX_RELOAD_CMD=${NGINX_RELOAD_CMD:-$(printf '%q ' "$KG_NGINX_BIN" -e stderr \
    -s reload -p "$KG_NGINX_PREFIX/" -c "$NGINX_CONF")}

# An empty Kuma API key file would make kumaguard send an empty Authorization header; the
# nudge is optional, so an empty (or whitespace-only) file means "no nudge".
if [[ -n ${KUMA_API_KEY_FILE:-} && -z ${KUMA_API_KEY:-} && -r $KUMA_API_KEY_FILE &&
    -z $(tr -d '[:space:]' <"$KUMA_API_KEY_FILE") ]]; then
    log "KUMA_API_KEY_FILE $KUMA_API_KEY_FILE is empty: reconcile nudges are off"
    unset KUMA_API_KEY_FILE
fi

# ------------------------------------------------------------------------------- signals

# Recorded, then acted on by the supervisor loop: a trap only sets a flag, so no stop sequence
# runs in the middle of a start-up step.
stop_requested=0
stop_signal=""
# shellcheck disable=SC2317  # invoked by the traps below
on_stop() {
    stop_requested=1
    stop_signal=$1
}
nginx_pid=""
kg_pid=""
# shellcheck disable=SC2317
on_hup() {
    if [[ -n $nginx_pid ]] && kill -0 "$nginx_pid" 2>/dev/null; then
        log "SIGHUP: reloading nginx"
        kill -HUP "$nginx_pid" 2>/dev/null
    fi
}
trap 'on_stop TERM' TERM
trap 'on_stop INT' INT
trap 'on_hup' HUP

# ------------------------------------------------------------------------------- config files

umask 027
mkdir -p "$KG_NGINX_PREFIX/conf" "$KG_NGINX_PREFIX/tmp/client_body" "$KG_NGINX_PREFIX/tmp/proxy" \
    "$KG_NGINX_PREFIX/tmp/fastcgi" "$KG_NGINX_PREFIX/tmp/uwsgi" "$KG_NGINX_PREFIX/tmp/scgi" \
    "$(dirname "$NGINX_INCLUDE_PATH")" "$KUMAGUARD_STATE_DIR" ||
    die "cannot create the directories under $KG_NGINX_PREFIX and $KUMAGUARD_STATE_DIR"

# The address nginx uses to reach kumaguard: a wildcard listen address is reached on loopback.
controller_addr=$KUMAGUARD_LISTEN
case "${KUMAGUARD_LISTEN%:*}" in
0.0.0.0 | '*') controller_addr=127.0.0.1:${KUMAGUARD_LISTEN##*:} ;;
'[::]') controller_addr="[::1]:${KUMAGUARD_LISTEN##*:}" ;;
esac

# Replaces the three deployment names of docker/nginx-site.conf (its header lists them) and
# fails when one is not found exactly once, so a change to the sample file is noticed here
# (and by the test) instead of producing an nginx that proxies to the wrong place.
render_site() {
    local src=$1 dst=$2 v6=""
    [[ $KG_PROXY_LISTEN =~ $port_re ]] && v6="[::]:$KG_PROXY_LISTEN"
    awk -v inc="$NGINX_INCLUDE_PATH" -v ctl="$controller_addr" -v lis="$KG_PROXY_LISTEN" \
        -v v6="$v6" '
        /^[[:space:]]*include[[:space:]]+[^;]*kuma-upstream[^;]*;/ {
            sub(/include[[:space:]]+[^;]*;/, "include " inc ";"); ni++
        }
        /^[[:space:]]*server[[:space:]]+kumaguard:[0-9]+[^;]*;/ {
            sub(/kumaguard:[0-9]+/, ctl); nc++
        }
        /^[[:space:]]*listen[[:space:]]+80([[:space:]]|;)/ {
            sub(/listen[[:space:]]+80/, "listen " lis); nl++
        }
        /^[[:space:]]*listen[[:space:]]+\[::\]:80([[:space:]]|;)/ {
            if (v6 != "") sub(/\[::\]:80/, v6); else $0 = "# (IPv6 listen dropped: KG_PROXY_LISTEN names an address) " $0
        }
        { print }
        END {
            if (ni != 1 || nc != 1 || nl != 1) {
                printf "site config: expected exactly one each of \"include ...kuma-upstream...;\" (found %d), \"server kumaguard:PORT;\" (found %d) and \"listen 80\" (found %d); set KG_SITE_REWRITE=0 to use a site config as is\n", ni + 0, nc + 0, nl + 0 > "/dev/stderr"
                exit 3
            }
        }' "$src" >"$dst.tmp" && mv -f "$dst.tmp" "$dst"
}

write_nginx_conf() {
    local mime="" access="access_log $KG_NGINX_ACCESS_LOG;"
    [[ -r $KG_NGINX_MIME_TYPES ]] && mime="include $KG_NGINX_MIME_TYPES;"
    [[ $KG_NGINX_ACCESS_LOG == off ]] && access="access_log off;"
    cat >"$NGINX_CONF.tmp" <<EOF
# Written by the kumaguard container entrypoint (docker/entrypoint.sh) at every start; edit
# the entrypoint's variables or docker/nginx-site.conf, not this file.
daemon off;
master_process on;
worker_processes $KG_NGINX_WORKERS;
pid $NGINX_PID_FILE;
error_log $KG_NGINX_ERROR_LOG notice;
# Old workers keep WebSockets and the dashboard's event stream open after a reload; this bounds
# how long (clients reconnect, to the new configuration).
worker_shutdown_timeout $KG_NGINX_WORKER_SHUTDOWN_TIMEOUT;

events {
    worker_connections 4096;
}

http {
    $mime
    default_type application/octet-stream;
    $access
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;

    # Inside the prefix, which the (non-root) container user owns; the compiled-in defaults
    # point at /var/lib/nginx whatever -p says.
    client_body_temp_path $KG_NGINX_PREFIX/tmp/client_body;
    proxy_temp_path $KG_NGINX_PREFIX/tmp/proxy;
    fastcgi_temp_path $KG_NGINX_PREFIX/tmp/fastcgi;
    uwsgi_temp_path $KG_NGINX_PREFIX/tmp/uwsgi;
    scgi_temp_path $KG_NGINX_PREFIX/tmp/scgi;

    include $SITE_CONF;
}
EOF
    mv -f "$NGINX_CONF.tmp" "$NGINX_CONF"
}

write_placeholder_include() {
    cat >"$NGINX_INCLUDE_PATH.tmp" <<'EOF'
# Placeholder written by the kumaguard container entrypoint so nginx can start; kumaguard
# replaces it with the generated include as soon as it knows the nodes.  Until then requests
# for Uptime Kuma get 502.
upstream kuma_cluster {
    server 127.0.0.1:9 down;
}
map $cookie_KUMA_FIXED_NODE $kuma_upstream {
    default kuma_cluster;
}
EOF
    mv -f "$NGINX_INCLUDE_PATH.tmp" "$NGINX_INCLUDE_PATH"
}

nginx_test() { "$KG_NGINX_BIN" -q -t "${nginx_args[@]}"; }

if [[ $KG_SITE_REWRITE == 1 ]]; then
    render_site "$KG_NGINX_SITE_CONF" "$SITE_CONF" || die "cannot install $KG_NGINX_SITE_CONF"
else
    cp -f "$KG_NGINX_SITE_CONF" "$SITE_CONF" || die "cannot copy $KG_NGINX_SITE_CONF"
fi
write_nginx_conf || die "cannot write $NGINX_CONF"

# Seed the include: the last file nginx accepted keeps routing to the nodes kumaguard last saw
# across a restart, but it may name hosts that no longer resolve, so it must validate.
seeded=""
if [[ -s $LAST_GOOD ]] && cp -f "$LAST_GOOD" "$NGINX_INCLUDE_PATH" 2>/dev/null; then
    if nginx_test 2>/dev/null; then
        seeded="last good include from $LAST_GOOD"
    else
        log "the last good include ($LAST_GOOD) no longer validates; starting with a placeholder"
    fi
fi
if [[ -z $seeded ]]; then
    write_placeholder_include || die "cannot write $NGINX_INCLUDE_PATH"
    seeded="placeholder include"
fi
nginx_test || die "nginx rejects the configuration in $NGINX_CONF (see the message above)"
log "nginx configuration ok ($seeded); proxy on $KG_PROXY_LISTEN, kumaguard on $KUMAGUARD_LISTEN"

# ------------------------------------------------------------------------------- processes

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

# wait_gone PID SECONDS: bounded wait for a child to exit (bash reaps it in the background).
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    ! alive "$pid"
}

# reap VAR PID: stores the exit status of an exited child in VAR (127 when bash no longer
# knows it).  Not a command substitution: `wait` in a subshell cannot see our children.
reap() {
    local _rc=0
    wait "$2" 2>/dev/null || _rc=$?
    printf -v "$1" '%s' "$_rc"
}

kg_rc="" nginx_rc=""
stop_all() {
    if alive "$kg_pid"; then
        kill -TERM "$kg_pid" 2>/dev/null
        if ! wait_gone "$kg_pid" "$KG_STOP_TIMEOUT"; then
            log "kumaguard did not stop within ${KG_STOP_TIMEOUT}s; killing it"
            kill -KILL "$kg_pid" 2>/dev/null
            wait_gone "$kg_pid" 5
        fi
        reap kg_rc "$kg_pid"
    fi
    if alive "$nginx_pid"; then
        kill -QUIT "$nginx_pid" 2>/dev/null # graceful: finish the requests in flight
        if ! wait_gone "$nginx_pid" "$KG_STOP_TIMEOUT"; then
            log "nginx did not finish within ${KG_STOP_TIMEOUT}s; stopping it fast"
            kill -TERM "$nginx_pid" 2>/dev/null
            wait_gone "$nginx_pid" 5 || kill -KILL "$nginx_pid" 2>/dev/null
        fi
        reap nginx_rc "$nginx_pid"
    fi
}

# nginx workers outlive a master that is killed (they keep serving the old configuration on
# the port).  Inside a container the namespace dies with us; elsewhere (the test, a manual
# run) the last step of every exit is to signal our own process group, but only when we lead
# it (tini, setsid and interactive shells give us one), so a caller's group is never touched.
# shellcheck disable=SC2317  # runs from the EXIT trap
sweep_group() {
    local stat rest fields
    stat=$(<"/proc/$$/stat") 2>/dev/null || return 0
    rest=${stat##*) }
    read -r -a fields <<<"$rest" # state ppid pgrp ...
    if [[ ${fields[2]:-} == "$$" ]]; then
        trap '' TERM
        kill -TERM -- "-$$" 2>/dev/null
    fi
    return 0
}
trap sweep_group EXIT

rm -f "$NGINX_PID_FILE"
"$KG_NGINX_BIN" "${nginx_args[@]}" &
nginx_pid=$!

# nginx writes its pid file after it has bound its listening sockets.
for _ in $(seq 100); do
    [[ -s $NGINX_PID_FILE && $(cat "$NGINX_PID_FILE" 2>/dev/null) == "$nginx_pid" ]] && break
    alive "$nginx_pid" || break
    ((stop_requested)) && break
    sleep 0.1
done
if ! alive "$nginx_pid"; then
    reap nginx_rc "$nginx_pid"
    die "nginx exited during start-up (status $nginx_rc; port $KG_PROXY_LISTEN busy?)"
fi
if ((stop_requested)); then
    stop_all
    log "stopped by SIG$stop_signal during start-up"
    exit 0
fi
[[ -s $NGINX_PID_FILE ]] || {
    stop_all
    die "nginx did not write $NGINX_PID_FILE within 10 s"
}
log "nginx started (pid $nginx_pid)"

"$KG_KUMAGUARD_BIN" "$@" &
kg_pid=$!
log "kumaguard started (pid $kg_pid)"

# Supervise.  `wait -n` returns when a child exits or a trapped signal arrives.
first_exit=""
while :; do
    done_pid=""
    rc=0
    wait -n -p done_pid "$nginx_pid" "$kg_pid" || rc=$?
    ((stop_requested)) && break
    if [[ $done_pid == "$kg_pid" ]] || ! alive "$kg_pid"; then
        first_exit=kumaguard
        if [[ $done_pid == "$kg_pid" ]]; then kg_rc=$rc; else reap kg_rc "$kg_pid"; fi
        break
    fi
    if [[ $done_pid == "$nginx_pid" ]] || ! alive "$nginx_pid"; then
        first_exit=nginx
        if [[ $done_pid == "$nginx_pid" ]]; then nginx_rc=$rc; else reap nginx_rc "$nginx_pid"; fi
        break
    fi
done

if [[ -n $first_exit ]]; then
    [[ $first_exit == kumaguard ]] && code=$kg_rc || code=$nginx_rc
    log "$first_exit exited (status $code); stopping the other process"
    stop_all
    # A daemon that stops on its own is a failure for a supervisor, even with status 0.
    ((code == 0)) && code=1
    exit "$code"
fi

log "SIG$stop_signal: stopping kumaguard, then nginx"
stop_all
log "stopped (kumaguard status ${kg_rc:-?}, nginx status ${nginx_rc:-?})"
# 0 only for a clean stop of both; kumaguard exits 0 on SIGTERM, nginx 0 on SIGQUIT.
[[ ${kg_rc:-0} == 0 && ${nginx_rc:-0} == 0 ]] && exit 0
exit 1
