#!/bin/sh
# healthcheck.sh — the image's HEALTHCHECK: GET kumaguard's own /health on the address it
# listens on (KUMAGUARD_LISTEN), a wildcard address reached on loopback.  Exit 0 = healthy.
# /health answers 503 only while kumaguard is starting (no snapshot yet).
listen=${KUMAGUARD_LISTEN:-127.0.0.1:8081}
host=${listen%:*}
port=${listen##*:}
case "$host" in
'' | 0.0.0.0 | '*') host=127.0.0.1 ;;
'[::]') host='[::1]' ;;
esac
exec curl -fsS --max-time 4 -o /dev/null "http://$host:$port/health"
