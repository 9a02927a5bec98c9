#!/usr/bin/env python3
"""Failover latency benchmark (issue 2).

Three simulated Kuma nodes, 3,000 monitors on a throwaway MariaDB, interval 1 s, fast interval
250 ms, timeout 500 ms, fall 3.  Kills one node and reports
  (a) time from the kill, and
  (b) time from the first failed probe
until every monitor it ran is moved and the target nodes were told to reconcile, and (b)
divided by the detection floor (fall - 1) x fast interval = 0.5 s (goal <= 1.2).

  /usr/bin/python3 bench/failover_bench.py [--runs N]     (KG_BUILD_DIR defaults to ./build)
"""
import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("KG_BUILD_DIR", os.path.join(HERE, "..", "build"))

from kg_harness import ROOT, Kumaguard, MariaCluster, monitors, wait_until  # noqa: E402
from kumasim_ctl import Kumasim, free_port  # noqa: E402

KEY = "bench-key"


def one_run(tmp, server, run):
    name = "kg_bench_%d" % run
    subprocess.run(["mariadb", "--no-defaults", "-S", server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    cluster = MariaCluster(server, name)
    nodes = [Kumasim("node%d" % i, store=cluster) for i in (1, 2, 3)]
    kg = Kumaguard(tmp, cluster, nodes=nodes, api_key=KEY, name="kg%d" % run, extra=[
        "--health-interval", "1s", "--health-fast-interval", "250ms", "--health-timeout",
        "500ms", "--fall", "3", "--log-level", "info"])
    try:
        wait_until(cluster.schema_ready, what="schema")
        rows = [(i, "m%d" % i, 1, 1, "node%d" % ((i % 3) + 1)) for i in range(1, 3001)]
        cluster.executemany("INSERT INTO monitor (id, name, active, user_id, node_id) VALUES "
                            "(%s,%s,%s,%s,%s)", rows)
        assert kg.post("/api/update-loads")[0] == 200
        wait_until(lambda: all(n["state"] == "online" for n in kg.get_json("/api/node-status")["nodes"]),
                   what="online")
        victim = nodes[1]
        on_victim = [r[0] for r in rows if r[4] == "node2"]
        for n in nodes:
            n.reset_stats()
        time.sleep(0.3)
        t_kill = time.time()
        victim.kill()

        def moved():
            m = monitors(cluster)
            return all((m[i][2] or m[i][1]) != "node2" for i in on_victim)
        wait_until(moved, timeout=15, interval=0.01, what="moved")
        wait_until(lambda: nodes[0].stats()["reconcile_calls"] and nodes[2].stats()["reconcile_calls"],
                   timeout=5, interval=0.01, what="nudged")
        t_nudged = max(nodes[0].stats()["last_reconcile_ms"], nodes[2].stats()["last_reconcile_ms"]) / 1000.0
        events = kg.get_json("/api/failover-history?limit=100")["events"]
        suspect = [e for e in events if e["kind"] == "state_change" and e.get("node") == "node2"
                   and e.get("to") == "suspect"]
        t_first_fail = min(datetime.datetime.fromisoformat(e["time"]).timestamp() for e in suspect)
        if os.environ.get("KG_BENCH_VERBOSE"):
            for e in reversed(events):
                t = datetime.datetime.fromisoformat(e["time"]).timestamp()
                print("   %+.3f s  %s %s->%s count=%s" % (t - t_first_fail, e["kind"], e["from"], e["to"], e["count"]))
            print("   %+.3f s  nudged" % (t_nudged - t_first_fail))
        return t_nudged - t_kill, t_nudged - t_first_fail
    finally:
        kg.stop(check=False)
        for n in nodes:
            n.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="kg-bench-")
    port = free_port()
    script = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")
    subprocess.run([script, "start", d, str(port)], check=True)
    subprocess.run(["mariadb", "--no-defaults", "-S", os.path.join(d, "sock"), "-uroot", "-e",
                    "GRANT ALL ON *.* TO 'kuma'@'localhost'"], check=True)
    server = {"socket": os.path.join(d, "sock"), "port": port}
    try:
        res = [one_run(d, server, r) for r in range(a.runs)]
    finally:
        subprocess.run([script, "stop", d])
    floor = (3 - 1) * 0.25
    for i, (ta, tb) in enumerate(res):
        print("run %d: (a) from kill %.3f s   (b) from first failed probe %.3f s   (b)/floor %.2f"
              % (i + 1, ta, tb, tb / floor))
    med_b = statistics.median(r[1] for r in res)
    print("median: (a) %.3f s  (b) %.3f s  ratio (b)/0.5 s = %.2f (goal <= 1.2)"
          % (statistics.median(r[0] for r in res), med_b, med_b / floor))


if __name__ == "__main__":
    main()
