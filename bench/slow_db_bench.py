#!/usr/bin/env python3
"""Does a database that does not answer delay what has nothing to do with it?

A node dies; how long until /api/node-status says `offline`, and until the nginx include no
longer routes to it — with a healthy MariaDB, and with MariaDB paused (SIGSTOP) from just
before the kill until the measurement ends.  The controller decides and the database work
runs on its own thread, so both figures should not move; the ratio paused / healthy is
printed (goal: about 1).  Run it against an older build (--kg-bin) to see the difference.

    KG_BUILD_DIR=$PWD/build /usr/bin/python3 bench/slow_db_bench.py [--runs 5]
        [--kg-bin PATH]   kumaguard binary to measure (default $KG_BUILD_DIR/kumaguard)

Loopback only; starts and stops its own MariaDB, kumasims and kumaguard; bounded in time."""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from kumasim_ctl import Kumasim, free_port  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")
KEY = "bench-key"


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def state_of(kg_url, node):
    for n in get(kg_url + "/api/node-status")["nodes"]:
        if n["node_id"] == node:
            return n["state"]
    return None


def in_cluster(include, address):
    try:
        text = open(include).read()
    except OSError:
        return True
    block = text.split("upstream kuma_cluster", 1)[1].split("}", 1)[0] if \
        "upstream kuma_cluster" in text else ""
    return address in block


def wait(fn, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if fn():
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise SystemExit("timed out waiting for " + what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kg-bin", default=os.path.join(os.environ.get(
        "KG_BUILD_DIR", os.path.join(ROOT, "build")), "kumaguard"))
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="kg-slowdb-")
    port = free_port()
    subprocess.run([SCRIPT, "start", d, str(port)], check=True, capture_output=True)
    sock = os.path.join(d, "sock")
    subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-uroot", "-e",
                    "GRANT ALL ON *.* TO 'kuma'@'localhost'; FLUSH PRIVILEGES; "
                    "CREATE DATABASE kg"], check=True)
    mpid = int(open(os.path.join(d, "pid")).read())
    nodes = [Kumasim("node%d" % i, instant=True, api_key=KEY) for i in (1, 2, 3)]
    kport = free_port()
    include = os.path.join(d, "upstream.conf")
    argv = [args.kg_bin, "--listen", "127.0.0.1:%d" % kport, "--state-dir",
            os.path.join(d, "state"), "--db-host", sock, "--db-user", "kuma", "--db-password",
            "kumapw", "--db-name", "kg", "--init-schema", "--db-timeout", "5s",
            "--health-interval", "1s", "--health-fast-interval", "250ms",
            "--health-timeout", "500ms", "--fall", "3", "--rise", "2",
            "--recovery-hold-down", "1s", "--nginx-include", include,
            "--nginx-test-cmd", "true", "--nginx-reload-cmd", "true",
            "--nginx-reload-min-gap", "0", "--kuma-api-key", KEY]
    for n in nodes:
        argv += ["--node", "%s=127.0.0.1:%d" % (n.node_id, n.port)]
    log = open(os.path.join(d, "kg.log"), "wb")
    kg = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % kport
    results = {"healthy": {"api": [], "nginx": []}, "paused": {"api": [], "nginx": []}}
    try:
        wait(lambda: get(url + "/health")["leader"], 30, "leadership")
        victim = nodes[1]
        addr = "127.0.0.1:%d" % victim.port
        for r in range(args.runs):
            for mode in ("healthy", "paused"):
                wait(lambda: state_of(url, "node2") == "online" and in_cluster(include, addr),
                     60, "node2 back")
                wait(lambda: get(url + "/health")["db"] == "ok", 60, "database ok")
                time.sleep(1.0 + (r % 4) * 0.23)  # vary the probe phase
                if mode == "paused":
                    os.kill(mpid, signal.SIGSTOP)
                t0 = time.monotonic()
                victim.kill()
                t_api = t_ngx = None
                end = t0 + 30
                try:
                    while (t_api is None or t_ngx is None) and time.monotonic() < end:
                        now = time.monotonic()
                        if t_api is None:
                            try:
                                if state_of(url, "node2") == "offline":
                                    t_api = now - t0
                            except Exception:
                                pass
                        if t_ngx is None and not in_cluster(include, addr):
                            t_ngx = now - t0
                        time.sleep(0.01)
                finally:
                    if mode == "paused":
                        os.kill(mpid, signal.SIGCONT)
                results[mode]["api"].append(t_api if t_api is not None else float("nan"))
                results[mode]["nginx"].append(t_ngx if t_ngx is not None else float("nan"))
                print("run %d %-7s kill -> API offline %6.3f s, -> out of nginx %6.3f s"
                      % (r + 1, mode, results[mode]["api"][-1], results[mode]["nginx"][-1]),
                      flush=True)
                victim.restart()
    finally:
        kg.send_signal(signal.SIGTERM)
        try:
            kg.wait(30)
        except subprocess.TimeoutExpired:
            kg.kill()
        for n in nodes:
            n.stop()
        os.kill(mpid, signal.SIGCONT)
        subprocess.run([SCRIPT, "stop", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)

    print()
    print("%-28s %10s %10s %10s" % ("kill ->", "healthy", "paused", "ratio"))
    for what, label in (("api", "/api/node-status offline"), ("nginx", "out of the include")):
        h = statistics.median(results["healthy"][what])
        p = statistics.median(results["paused"][what])
        print("%-28s %9.3fs %9.3fs %10.2f   (median of %d; max %.3f / %.3f)"
              % (label, h, p, p / h if h else float("nan"), args.runs,
                 max(results["healthy"][what]), max(results["paused"][what])))


if __name__ == "__main__":
    main()
