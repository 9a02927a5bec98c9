#!/usr/bin/env python3
"""Exactly-once benchmark (issue 10): how long a moved monitor runs twice, or nowhere.

On realistic simulated nodes (tests/kumasim: default delays, the :00 cron, the overlap leak) on
a throwaway MariaDB, with kumaguard at its default reconcile costs and pacing and a
KUMA_API_KEY, for N nodes (default 3 and 10) and M monitors (default 1,000) spread evenly:

  failover  kill -9 one node; wait until every monitor it ran runs on a survivor;
  revert    start it again; wait until its monitors have come back (after the hold-down).

Per moved monitor, from the nodes' own records (/_sim/timeline: when each copy began and
stopped checking, real clock):
  overlap   seconds two copies ran at once (on two nodes, or a leaked one),
  gap       seconds no copy ran (failover: counted from the kill, so it includes detection),
as median / p99 / max; leaked copies (must be 0); and from the nodes' counters kumaguard's
rules: max calls in flight per node (must be <= 1), calls that arrived during a cron run or
any other run (0), overlapping runs (0).

The floor is a node's own reconcile time for that many monitors, measured in the same run: a
node alone (own database, no cron) with K monitors moved to it by SQL, one reconcile call,
timed.  K = the most monitors one node had to start in that phase (failover: the largest
share a survivor took; revert: all the returning node's).  Printed: p99 / floor for overlap
and gap (goal <= 1.5), and for failover also the gap counted from kumaguard's failover
decision (kill -> decision is detection: probe interval 1 s, fast 250 ms, fall 3 here).

The moment matters: kumaguard gives a node only what it can start before its next :00 cron,
so each scenario runs with the kill early and late in the minute (--early, --late: the second
of the minute), and the revert likewise.  The revert's first batch comes RECOVERY_HOLD_DOWN
after the returning node is released (told to drop what moved away).  With 10 nodes that is
about a second after it answers again, so the restart is timed and the hold-down stays at its
default (30 s).  With 3 nodes its tell call (333 pending stops: 54 s worst case) never fits
between two crons, so kumaguard releases it only when its cron's worst case is over, at about
:56 whenever it came back; the bench then sets the hold-down to put the first batch at the
target second (8 s for :05, 48 s for :45).

  KG_BUILD_DIR=build /usr/bin/python3 bench/exactly_once_bench.py
      [--nodes 3,10] [--monitors 1000] [--moments early,late] [--early 5] [--late 45]
      [--phase-timeout 420] [--json FILE] [--log-dir DIR] [--verbose]
      [--delay-scale F] [--kumaguard-args '...']   (control runs, below)

Loopback only; every process and the database are removed at the end; each phase is bounded
by --phase-timeout.  Takes about 17 minutes with the defaults (the cron pacing is minutes).
Exit status 1 when a node's counters show a rule broken (a leak, two calls in flight, a call
during a run or the cron).  A control run that must show broken rules (so the bench can fail):
  --nodes 3 --monitors 300 --moments late --late 52 --kumaguard-args \
      "--kuma-reconcile-base 10ms --kuma-reconcile-start-cost 1ms --kuma-cron-skew 0"
(calls far longer than kumaguard thinks overlap the :00 cron: overlapping runs, leaked copies).
"""
import argparse
import datetime
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("KG_BUILD_DIR", os.path.join(HERE, "..", "build"))

from kg_harness import ROOT, Kumaguard, MariaCluster, wait_until  # noqa: E402
from kumasim_ctl import Kumasim, free_port  # noqa: E402

KEY = "bench-key"
# Detection only; the reconcile costs, cron skew, budget and pacing stay at their defaults.
PROBES = ["--health-interval", "1s", "--health-fast-interval", "250ms", "--health-timeout",
          "500ms", "--fall", "3", "--log-level", "info"]
HOLD_DOWN_S = 30      # RECOVERY_HOLD_DOWN, the default
RISE_S = 1.5          # restart -> proven and told, roughly (used only to aim the revert moment)
# kumaguard's default reconcile costs and cron skew (README "Exactly once"), to aim the revert
BASE_S, STOP_S, SKEW_S = 1.0, 0.16, 2.0
TIMELINE_CAP = 200000


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def coverage(intervals, w0, w1):
    """(ms with no copy running, ms with two or more) inside [w0, w1], for intervals
    [(start or None = before, stop or None = still running)]."""
    pts = []
    for s, e in intervals:
        s = w0 if s is None else max(s, w0)
        e = w1 if e is None else min(e, w1)
        if e > s:
            pts += [(s, 1), (e, -1)]
    pts.sort()
    zero = multi = 0
    t, k = w0, 0
    for p, d in pts:
        if k == 0:
            zero += p - t
        elif k >= 2:
            multi += p - t
        t, k = p, k + d
    zero += (w1 - t) if k == 0 else 0
    multi += (w1 - t) if k >= 2 else 0
    return zero, multi


def pct(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    return v[max(0, math.ceil(q / 100.0 * len(v)) - 1)]


def summary(values):
    if not values:
        return {"median": 0.0, "p99": 0.0, "max": 0.0}
    return {"median": pct(values, 50), "p99": pct(values, 99), "max": max(values)}


def sec_of_minute(ms):
    return (ms / 1000.0) % 60


def iso_ms(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000


# ------------------------------------------------------------------------------------------------
# The floor: one node alone reconciling K monitors
# ------------------------------------------------------------------------------------------------

class Floors:
    def __init__(self, server, tmp, delay_scale):
        self.server, self.tmp, self.delay_scale = server, tmp, delay_scale
        self.cache = {}
        self.seq = 0

    def get(self, k):
        if k not in self.cache:
            self.cache[k] = self.measure(k)
        return self.cache[k]

    def measure(self, k):
        self.seq += 1
        cluster = new_database(self.server, "kg_floor_%d" % self.seq)
        node = Kumasim("floor", store=cluster, cron=False, seed=1000 + self.seq,
                       delay_scale=self.delay_scale if self.delay_scale != 1 else None)
        try:
            rows = [(i, "m%d" % i, 1, 1, "elsewhere") for i in range(1, k + 1)]
            cluster.executemany("INSERT INTO monitor (id, name, active, user_id, node_id) "
                                "VALUES (%s,%s,%s,%s,%s)", rows)
            cluster.execute("UPDATE monitor SET assigned_node = 'floor'")
            t0 = time.time()
            status = node.reconcile(KEY, timeout=1200)
            took = time.time() - t0
            assert status == 200, status
            assert len(node.copies()) == k
            log("floor: one node alone starts %d monitors in %.2f s" % (k, took))
            return took
        finally:
            node.stop()


# ------------------------------------------------------------------------------------------------
# One scenario: N nodes, M monitors, kill then revert, at a moment of the minute
# ------------------------------------------------------------------------------------------------

def new_database(server, name):
    subprocess.run(["mariadb", "--no-defaults", "-S", server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    return MariaCluster(server, name)


def reserve_ports(n):
    """n loopback ports below the kernel's ephemeral range (32768-60999 here), free now: a
    killed node's port must not be taken by another process's port-0 bind or outgoing
    connection before the node starts again on it (a foreign node answering there would be
    taken for the node coming back)."""
    out = []
    while len(out) < n:
        p = random.randrange(20000, 32000)
        if p in out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        out.append(p)
    return out


def wait_second(target_s, min_ahead=1.0):
    """Sleeps until the wall clock is at second target_s of a minute (at least min_ahead s
    from now); returns that time in epoch ms."""
    now = time.time()
    t = math.floor(now / 60) * 60 + target_s
    while t < now + min_ahead:
        t += 60
    time.sleep(t - now)
    return t * 1000


class Scenario:
    def __init__(self, server, tmp, n_nodes, n_monitors, moment, second, a):
        self.n, self.m, self.moment, self.second, self.a = n_nodes, n_monitors, moment, second, a
        self.tag = "%dn_%s" % (n_nodes, moment)
        self.cluster = new_database(server, "kg_eo_%s" % self.tag)
        self.tmp = os.path.join(tmp, self.tag)
        os.makedirs(self.tmp)
        self.nodes, self.kg = [], None
        self.ids = ["node%d" % i for i in range(1, n_nodes + 1)]
        self.plan_revert()

    def plan_revert(self):
        """Where the first revert batch lands: hold-down after the returning node is released
        (told to drop what moved away).  Its tell call is as long as its pending stops (one per
        monitor that moved away); when that cannot fit between two crons, kumaguard leaves it
        to the cron and releases the node only when that cron's worst case is over, at
        :00 + skew + worst, whenever it came back.  Then the hold-down is chosen to put the
        revert at the target second; otherwise the default hold-down is kept and the restart
        is timed."""
        k = -(-self.m // self.n)
        worst = BASE_S + k * STOP_S
        if worst + 2 * SKEW_S + 6 < 60:
            self.hold_down = HOLD_DOWN_S
            self.restart_at = (self.second - HOLD_DOWN_S - RISE_S) % 60
            self.forced_release = None
        else:
            self.forced_release = (SKEW_S + worst + 0.5) % 60
            self.hold_down = int(round((self.second - self.forced_release) % 60))
            if self.hold_down < 5:
                self.hold_down += 60
            self.restart_at = 30

    # -- set-up --------------------------------------------------------------------------------

    def start(self):
        c = self.cluster
        ports = reserve_ports(self.n)
        self.nodes = [Kumasim(nid, port=ports[i], store=c, node_host="listen", seed=i + 1,
                              timeline_cap=TIMELINE_CAP, primary=(i == 0),
                              delay_scale=self.a.delay_scale if self.a.delay_scale != 1 else None)
                      for i, nid in enumerate(self.ids)]
        rows = [(i, "m%d" % i, 1, 1, self.ids[(i - 1) % self.n]) for i in range(1, self.m + 1)]
        c.executemany("INSERT INTO monitor (id, name, active, user_id, node_id) VALUES "
                      "(%s,%s,%s,%s,%s)", rows)
        self.home = {r[0]: r[4] for r in rows}
        for node in self.nodes:          # a process start runs what it is assigned, at once
            node.restart_process(timeout=30)
        self.kg = Kumaguard(self.tmp, c, nodes=self.nodes, api_key=KEY, extra=PROBES + [
            "--recovery-hold-down", "%dms" % (self.hold_down * 1000)] + self.a.kumaguard_args.split())
        wait_until(self.kg.proven, timeout=60, what="nodes proven")
        wait_until(self.idle, timeout=120, what="kumaguard idle after start")

    def node_status(self):
        return {n["node_id"]: n for n in self.kg.get_json("/api/node-status")["nodes"]}

    def idle(self, nodes=None):
        """No pending reconcile work, no call in flight, no run in progress (on `nodes`)."""
        st = self.node_status()
        for node in nodes or self.nodes:
            r = st[node.node_id]["reconcile"]
            if r["pending_starts"] or r["pending_stops"] or r["in_flight"]:
                return False
            if node.stats()["runs_in_progress"]:
                return False
        return True

    def effective(self, node_id):
        return {r[0] for r in self.cluster.query(
            "SELECT id FROM monitor WHERE active = 1 AND COALESCE(assigned_node, node_id) = %s",
            (node_id,))}

    def listed(self, node):
        return set(node.monitors()["listed"])

    def events(self, kind, node_id, since_ms):
        ev = self.kg.get_json("/api/failover-history?kind=%s&node=%s&since=%d&limit=1000"
                              % (kind, node_id, int(since_ms)))["events"]
        return sorted(iso_ms(e["time"]) for e in ev)

    # -- phases --------------------------------------------------------------------------------

    def failover(self):
        victim = self.nodes[1]
        self.victim = victim
        survivors = [n for n in self.nodes if n is not victim]
        self.survivors = survivors
        moved = sorted(self.listed(victim))
        assert len(moved) == self.m // self.n or len(moved) == -(-self.m // self.n), len(moved)
        self.moved = moved
        for n in self.nodes:
            n.reset_stats()
            n.clear_timeline()
        wait_second(self.second)
        before = victim.stats()           # the old process's counters: gone with it
        leaked_before = victim.monitors()["leaked_copies"]
        t_kill = time.time() * 1000
        victim.kill()
        log("%s failover: killed %s at :%05.2f (target :%02d)"
            % (self.tag, victim.node_id, sec_of_minute(t_kill), self.second))
        moved_set = set(moved)

        seen_offline = []

        def done():
            state = self.node_status()[victim.node_id]["state"]
            if state == "offline":
                seen_offline.append(1)
            elif seen_offline:
                raise RuntimeError("%s is dead but kumaguard sees it %s: another process "
                                   "answers on its port" % (victim.node_id, state))
            if self.effective(victim.node_id):
                return False
            have = set()
            for n in survivors:
                have |= self.listed(n)
            return moved_set <= have and self.idle(survivors)
        t_end = self.wait(done, "failover converged")
        res = self.measure("failover", moved, survivors, t_kill, t_end,
                           extra={victim.node_id: [(None, t_kill)]})
        res["kill_s"] = sec_of_minute(t_kill)
        dec = self.events("failover", victim.node_id, t_kill - 1000)
        res["decisions_s"] = [round(sec_of_minute(t), 2) for t in dec]
        res["detection_s"] = (dec[0] - t_kill) / 1000.0 if dec else None
        res["victim_stats_before_kill"] = {k: before[k] for k in RULE_KEYS}
        res["leaked"] += leaked_before
        # gap counted from the failover decision (detection taken out)
        if dec:
            res["gap_after_decision"] = summary([max(0.0, g - res["detection_s"])
                                                 for g in res["_gaps"]])
        return res

    def revert(self):
        victim, survivors = self.victim, self.survivors
        for n in survivors:
            n.reset_stats()
            n.clear_timeline()
        wait_second(self.restart_at)          # aims the first revert batch (plan_revert)
        t_restart = time.time() * 1000
        victim.restart()
        log("%s revert: restarted %s at :%05.2f, hold-down %d s (revert aimed at :%02d%s)"
            % (self.tag, victim.node_id, sec_of_minute(t_restart), self.hold_down, self.second,
               "" if self.forced_release is None else
               "; released at :%02.0f at the earliest, after its cron" % self.forced_release))
        moved_set = set(self.moved)

        def done():
            if self.effective(victim.node_id) != moved_set:
                return False
            if not moved_set <= self.listed(victim):
                return False
            if any(moved_set & self.listed(n) for n in survivors):
                return False
            return self.idle()
        t_end = self.wait(done, "revert converged")
        res = self.measure("revert", self.moved, self.nodes, t_restart, t_end)
        res["restart_s"] = sec_of_minute(t_restart)
        res["hold_down_s"] = self.hold_down
        online = [e for e in self.kg.get_json(
            "/api/failover-history?kind=state_change&node=%s&since=%d&limit=100"
            % (victim.node_id, int(t_restart)))["events"] if e["to"] == "online"]
        if online:
            t_on = min(iso_ms(e["time"]) for e in online)
            res["released_after_restart_s"] = (t_on - t_restart) / 1000.0
        dec = self.events("revert", victim.node_id, t_restart)
        res["decisions_s"] = [round(sec_of_minute(t), 2) for t in dec]
        res["first_revert_after_restart_s"] = (dec[0] - t_restart) / 1000.0 if dec else None
        return res

    def wait(self, done, what):
        deadline = time.monotonic() + self.a.phase_timeout
        while time.monotonic() < deadline:
            if done():
                return time.time() * 1000
            time.sleep(0.5)
        log("%s: %s: NOT within %d s; measuring what happened so far"
            % (self.tag, what, self.a.phase_timeout))
        self.timed_out = True
        return time.time() * 1000

    def measure(self, phase, moved, nodes, w0, w1, extra=None):
        """Overlap and gap of each moved monitor in [w0, w1] from the nodes' timelines."""
        per = {m: [] for m in moved}
        starts = {}
        leaked = 0
        stats = {}
        for n in nodes:
            tl = n.timeline()
            if tl["dropped"]:
                log("WARNING: %s dropped %d timeline events" % (n.node_id, tl["dropped"]))
            k = 0
            for mon in tl["monitors"]:
                for c in mon["copies"]:
                    if c["leaked_ms"] is not None and c["running"]:
                        leaked += 1
                    if mon["id"] in per:
                        per[mon["id"]].append((c["start_ms"], c["stop_ms"]))
                        if c["start_ms"] is not None and c["start_ms"] >= w0:
                            k += 1
            starts[n.node_id] = k
            st = n.stats()
            stats[n.node_id] = {key: st[key] for key in RULE_KEYS}
            if self.a.log_dir:
                with open(os.path.join(self.a.log_dir, "%s-%s-%s-runs.json"
                                       % (self.tag, phase, n.node_id)), "w") as f:
                    json.dump(n.runs(), f)
        for iv in (extra or {}).values():     # a killed process: its copies ended at the kill
            for m in moved:
                per[m] += iv
        gaps, overlaps = [], []
        for m in moved:
            z, mu = coverage(per[m], w0, w1)
            gaps.append(z / 1000.0)
            overlaps.append(mu / 1000.0)
        ns = self.node_status()
        kg_rec = {nid: {k: ns[nid]["reconcile"][k] for k in
                        ("calls", "failures", "timeouts", "rate_limited", "unauthorized",
                         "left_to_cron")} for nid in ns}
        return {"phase": phase, "nodes": self.n, "monitors": self.m, "moment": self.moment,
                "moved": len(moved), "window_s": (w1 - w0) / 1000.0,
                "overlap": summary(overlaps), "gap": summary(gaps), "_gaps": gaps,
                "starts_per_node": starts, "max_starts_one_node": max(starts.values()),
                "leaked": leaked, "node_stats": stats, "kumaguard_reconcile": kg_rec,
                "timed_out": getattr(self, "timed_out", False)}

    def log_lines(self):
        out = self.kg.read_log()
        return [l for l in out.splitlines()
                if "reconcile call to" in l or "converge:" in l or "PANIC" in l]

    def stop(self):
        if self.kg is not None:
            self.kg.stop(check=False)
            if self.a.log_dir:
                shutil.copy(self.kg.log_path, os.path.join(self.a.log_dir, self.tag + "-kg.log"))
        for n in self.nodes:
            try:
                n.stop() if n.running else None
            except Exception:
                n.kill()


RULE_KEYS = ("max_calls_in_flight", "calls_during_cron", "calls_while_running",
             "overlapping_runs", "leaked_copies", "reconcile_calls", "runs_cron",
             "reconcile_rate_limited", "reconcile_unauthorized")


def broken_rules(res):
    """Rules kumaguard must keep, as found in the nodes' counters."""
    out = []
    stats = dict(res["node_stats"])
    if "victim_stats_before_kill" in res:
        stats["(killed process)"] = res["victim_stats_before_kill"]
    for nid, st in sorted(stats.items()):
        for key, limit in (("max_calls_in_flight", 1), ("calls_during_cron", 0),
                           ("calls_while_running", 0), ("overlapping_runs", 0),
                           ("leaked_copies", 0)):
            if st[key] > limit:
                out.append("%s: %s = %d" % (nid, key, st[key]))
    if res["leaked"]:
        out.append("leaked copies in the timelines: %d" % res["leaked"])
    return out


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def fmt3(s):
    return "%6.2f %6.2f %6.2f" % (s["median"], s["p99"], s["max"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default="3,10")
    ap.add_argument("--monitors", type=int, default=1000)
    ap.add_argument("--moments", default="early,late")
    ap.add_argument("--early", type=int, default=5, help="second of the minute (default 5)")
    ap.add_argument("--late", type=int, default=45, help="second of the minute (default 45)")
    ap.add_argument("--phase-timeout", type=int, default=420)
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--log-dir", help="keep kumaguard's log and each node's runs here")
    ap.add_argument("--delay-scale", type=float, default=1.0,
                    help="kumasim's --delay-scale: nodes slower than the measured ones (1.0)")
    ap.add_argument("--kumaguard-args", default="",
                    help="more kumaguard flags, e.g. wrong costs for a control run that must "
                         "show broken rules: '--kuma-reconcile-start-cost 1ms'")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    seconds = {"early": a.early, "late": a.late}
    if a.log_dir:
        os.makedirs(a.log_dir, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix="kg-eo-bench-")
    script = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")
    port = free_port()
    subprocess.run([script, "start", tmp + "/db", str(port)], check=True)
    server = {"socket": os.path.join(tmp, "db", "sock"), "port": port}
    subprocess.run(["mariadb", "--no-defaults", "-S", server["socket"], "-uroot", "-e",
                    "GRANT ALL ON *.* TO 'kuma'@'localhost'"], check=True)
    floors = Floors(server, tmp, a.delay_scale)
    results, findings = [], []
    t_all = time.time()
    try:
        for n in [int(x) for x in a.nodes.split(",")]:
            for moment in a.moments.split(","):
                sc = Scenario(server, tmp, n, a.monitors, moment, seconds[moment], a)
                try:
                    log("scenario %s: %d monitors over %d nodes" % (sc.tag, a.monitors, n))
                    sc.start()
                    for phase in (sc.failover, sc.revert):
                        res = phase()
                        res["floor_k"] = res["max_starts_one_node"]
                        res["floor_s"] = floors.get(res["floor_k"]) if res["floor_k"] else None
                        res["broken"] = broken_rules(res)
                        if res["broken"] or a.verbose:
                            res["kumaguard_log"] = sc.log_lines()[-60:]
                        if res["broken"]:
                            findings.append(res)
                        res.pop("_gaps")
                        results.append(res)
                        report_one(res)
                finally:
                    sc.stop()
    finally:
        subprocess.run([script, "stop", tmp + "/db"])
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("exactly-once: %d monitors, realistic kumasim nodes%s, kumaguard %s (%.0f s in all)"
          % (a.monitors, "" if a.delay_scale == 1 else " (delays x%g)" % a.delay_scale,
             "default reconcile costs" if not a.kumaguard_args else a.kumaguard_args,
             time.time() - t_all))
    print("(event :ss = second of the minute of the kill, or of the restart; 1st move :ss = of "
          "kumaguard's first failover / revert batch)")
    print("%-9s %3s %-5s %5s %5s %6s %21s %21s %7s %5s %6s %6s %6s %-5s %s" % (
        "phase", "N", "when", "event", "1st", "moved", "overlap med/p99/max", "gap med/p99/max",
        "floor", "K", "ovl/fl", "gap/fl", "leaked", "rules", "p99<=1.5 floor"))
    for r in results:
        at = r.get("kill_s", r.get("restart_s"))
        first = r["decisions_s"][0] if r["decisions_s"] else float("nan")
        fl = r["floor_s"] or float("nan")
        ro, rg = r["overlap"]["p99"] / fl, r["gap"]["p99"] / fl
        print("%-9s %3d %-5s %5.1f %5.1f %6d %21s %21s %6.1fs %5d %6.2f %6.2f %6d %-5s %s" % (
            r["phase"], r["nodes"], r["moment"], at, first, r["moved"], fmt3(r["overlap"]),
            fmt3(r["gap"]), fl, r["floor_k"], ro, rg, r["leaked"],
            "ok" if not r["broken"] else "BROKEN",
            "met" if ro <= 1.5 and rg <= 1.5 and not r["timed_out"] else "NOT met"))
    for r in results:
        if r["phase"] == "failover" and "gap_after_decision" in r:
            fl = r["floor_s"] or float("nan")
            print("failover %2d nodes %-5s: detection %.2f s; gap from the decision %s "
                  "(p99/floor %.2f)" % (r["nodes"], r["moment"], r["detection_s"],
                                        fmt3(r["gap_after_decision"]),
                                        r["gap_after_decision"]["p99"] / fl))
    for r in results:
        if r["phase"] == "revert":
            print("revert   %2d nodes %-5s: hold-down %d s; routed again %.1f s after the restart; "
                  "first revert batch %.1f s after it; whole revert %.1f s"
                  % (r["nodes"], r["moment"], r["hold_down_s"],
                     r.get("released_after_restart_s", float("nan")),
                     r["first_revert_after_restart_s"] or float("nan"), r["window_s"]))
    if findings:
        print("\nRULES BROKEN:")
        for r in findings:
            print(" %s %d nodes %s: %s" % (r["phase"], r["nodes"], r["moment"],
                                           "; ".join(r["broken"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if findings else 0


def report_one(r):
    log("%s %d nodes %s: moved %d in %.1f s window; overlap %s; gap %s; floor(K=%d) %s; "
        "leaked %d; per node starts %s; decisions at %s"
        % (r["phase"], r["nodes"], r["moment"], r["moved"], r["window_s"], fmt3(r["overlap"]),
           fmt3(r["gap"]), r["floor_k"],
           "%.2f s" % r["floor_s"] if r["floor_s"] else "-", r["leaked"],
           r["starts_per_node"], r["decisions_s"]))
    for nid, st in sorted(r["node_stats"].items()):
        log("   %s %s kumaguard %s" % (nid, st, r["kumaguard_reconcile"].get(nid)))
    for b in r["broken"]:
        log("   BROKEN: " + b)
    for line in r.get("kumaguard_log", []):
        log("   kg| " + line)


if __name__ == "__main__":
    sys.exit(main())
