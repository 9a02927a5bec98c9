#!/usr/bin/env python3
"""What one kumasim process costs when it plays 1,000 Kuma nodes probed once a second (issue 15
needs 1,000 simulated nodes on this 2-core machine).

Runs, in one go and on the same machine state:
  fleet     one process serving N nodes (N ports), every node probed once a second on its own
            keep-alive connection, as kumaguard probes;
  baseline  one process serving ONE node, probed N times a second (same request rate, over
            N/100 connections): the cost of the requests themselves.
and prints for each: kumasim's CPU (% of one core, from /proc utime+stime over the window),
RSS (VmRSS after the window, VmHWM), probe answers, failures and latency (p50/p99/max), then
the ratios fleet/baseline.  Each health answer runs SELECT 1 on the node's database as a real
node does (SQLite file by default, --mariadb for a throwaway MariaDB server); with
--health-db-cache-ms the database answer is shared for that long.

  /usr/bin/python3 bench/kumasim_scale.py [--nodes 1000] [--seconds 30] [--mariadb]
                                          [--health-db-cache-ms N]   (KG_BUILD_DIR: ./build)
"""
import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("KG_BUILD_DIR", os.path.join(HERE, "..", "build"))

from kumasim_ctl import Kumasim, KumasimFleet, free_port  # noqa: E402

REQUEST = b"GET /api/v1/health HTTP/1.1\r\nHost: kumasim\r\n\r\n"


class Store:
    def __init__(self, args):
        self.args = args

    def kumasim_args(self):
        return self.args


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def memory_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


class Prober:
    """Keep-alive HTTP/1.1 connections probed in groups: each second is cut into `slices`
    slices, and slice i sends one health request on every connection of group i % len(groups)
    and reads the answers.  The fleet has 100 groups of 10 connections (each node probed once a
    second, spread like kumaguard's jittered probes); the baseline one group of 10 connections
    used 100 times a second.  Either way: 10 requests every 10 ms."""

    def __init__(self, targets, group_size=10, slices=100):
        self.sel = selectors.DefaultSelector()
        self.conns = [self._open(t) for t in targets]
        self.groups = [self.conns[i:i + group_size] for i in range(0, len(self.conns), group_size)]
        self.slices = slices
        self.latencies = []
        self.failures = 0
        self.answers = 0

    def _open(self, target):
        s = socket.create_connection(target, timeout=5)
        s.setblocking(False)
        c = {"sock": s, "target": target, "buf": b"", "sent": None}
        self.sel.register(s, selectors.EVENT_READ, c)
        return c

    def _reopen(self, c):
        self.sel.unregister(c["sock"])
        c["sock"].close()
        n = self._open(c["target"])
        self.sel.unregister(n["sock"])
        c.update(n)
        self.sel.register(c["sock"], selectors.EVENT_READ, c)

    def _read(self, c):
        try:
            data = c["sock"].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # closed by the server (keep-alive timeout) or broken
            if c["sent"] is not None:
                self.failures += 1
            c["sent"] = None
            self._reopen(c)
            return
        c["buf"] += data
        while b"\r\n\r\n" in c["buf"]:
            head, rest = c["buf"].split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) < length:
                return
            c["buf"] = rest[length:]
            if c["sent"] is not None:
                self.latencies.append(time.monotonic() - c["sent"])
                c["sent"] = None
                if int(head.split(b" ", 2)[1]) == 200:
                    self.answers += 1
                else:
                    self.failures += 1

    def _poll(self, until):
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.sel.select(left):
                self._read(key.data)

    def tick(self, start, interval):
        """One second's worth of probes, starting at `start` (monotonic)."""
        span = interval / self.slices
        for i in range(self.slices):
            for c in self.groups[i % len(self.groups)]:
                if c["sent"] is not None:
                    continue  # still waiting for the last answer: do not pile up
                try:
                    c["sock"].send(REQUEST)
                    c["sent"] = time.monotonic()
                except OSError:
                    self.failures += 1
                    self._reopen(c)
            self._poll(start + (i + 1) * span)

    def unanswered(self):
        return sum(1 for c in self.conns if c["sent"] is not None)

    def close(self):
        for c in self.conns:
            c["sock"].close()
        self.sel.close()


def measure(pid, prober, seconds, interval=1.0):
    start = time.monotonic()
    prober.tick(start, interval)  # warm-up second
    prober.latencies.clear()
    prober.answers = prober.failures = 0
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    for k in range(seconds):
        prober.tick(t0 + k * interval, interval)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    prober._poll(t1 + 1.0)  # the last answers
    lat = sorted(prober.latencies) or [float("nan")]
    mem = memory_kb(pid)
    return {
        "cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        "rss_mb": mem["VmRSS"] / 1024.0,
        "hwm_mb": mem["VmHWM"] / 1024.0,
        "answers": prober.answers,
        "failures": prober.failures + prober.unanswered(),
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "max_ms": 1000 * lat[-1],
    }


def show(name, r):
    print("%-9s cpu %5.1f %% of a core   rss %6.1f MB (peak %6.1f)   answers %6d  failures %d   "
          "latency p50 %.2f ms  p99 %.2f ms  max %.1f ms"
          % (name, r["cpu_pct"], r["rss_mb"], r["hwm_mb"], r["answers"], r["failures"],
             r["p50_ms"], r["p99_ms"], r["max_ms"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--mariadb", action="store_true")
    ap.add_argument("--health-db-cache-ms", type=int, default=None)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kumasim-scale-")
    mariadb = None
    if a.mariadb:
        port = free_port()
        script = os.path.join(HERE, "..", "scripts", "mariadb-test-server.sh")
        subprocess.run([script, "start", tmp, str(port)], check=True)
        sock = os.path.join(tmp, "sock")
        subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-uroot", "-e",
                        "CREATE DATABASE scale; GRANT ALL ON scale.* TO 'kuma'@'localhost'"],
                       check=True)
        mariadb = (script, tmp)
        store = Store(["--db-socket", sock, "--db-user", "kuma", "--db-password", "kumapw",
                       "--db-name", "scale"])
    else:
        store = Store(["--sqlite-path", os.path.join(tmp, "cluster.db")])
    extra = [] if a.health_db_cache_ms is None else ["--health-db-cache-ms",
                                                      str(a.health_db_cache_ms)]
    print("kumasim scale: %d nodes probed once a second for %d s, database %s%s"
          % (a.nodes, a.seconds, "MariaDB" if a.mariadb else "SQLite",
             "" if a.health_db_cache_ms is None else
             ", health database answer shared for %d ms" % a.health_db_cache_ms))
    try:
        with KumasimFleet(a.nodes, prefix="s", store=store, extra_args=extra) as fleet:
            idle = memory_kb(fleet.pid)
            prober = Prober([(n.host, n.port) for n in fleet.nodes], slices=a.nodes // 10)
            try:
                f = measure(fleet.pid, prober, a.seconds)
            finally:
                prober.close()
            print("fleet process at start (no connection yet): rss %.1f MB"
                  % (idle["VmRSS"] / 1024.0))
        with Kumasim("base", store=store, extra_args=extra) as one:
            # the same requests: 10 every 10 ms, here all to one node over 10 connections
            prober = Prober([(one.host, one.port)] * 10, slices=a.nodes // 10)
            try:
                b = measure(one.pid, prober, a.seconds)
            finally:
                prober.close()
    finally:
        if mariadb:
            subprocess.run([mariadb[0], "stop", mariadb[1]])
    show("fleet", f)
    show("baseline", b)
    print("ratio fleet/baseline: cpu %.2f   rss %.2f   p99 latency %.2f"
          % (f["cpu_pct"] / b["cpu_pct"] if b["cpu_pct"] else float("nan"),
             f["rss_mb"] / b["rss_mb"], f["p99_ms"] / b["p99_ms"] if b["p99_ms"] else float("nan")))
    print("per node: %.1f KB of RSS above the one-node process"
          % (1024.0 * (f["rss_mb"] - b["rss_mb"]) / max(1, a.nodes - 1)))


if __name__ == "__main__":
    main()
