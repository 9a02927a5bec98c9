"""Why a reconcile call failed, said plainly (issue 10): against realistic simulated nodes
(they answer 429 over their API_RATE_LIMIT, 401 for a "Bearer" key, answer only when the whole
reconcile is done, and register themselves with the host a real node writes by default).

Each cause shows as a `reconcile_failed` event naming the fix, in /api/node-status per node, and
in /metrics; a refused call is left to the node's cron (not retried), and a call that timed out
is not repeated while it may still run.  Bounded in time; loopback only."""

import time

from kg_harness import Kumaguard, SqliteCluster, seed_monitors, wait_until
from kumasim_ctl import Kumasim

FAST = ["--health-interval", "300ms", "--health-fast-interval", "100ms", "--health-timeout",
        "300ms", "--fall", "3", "--rise", "2", "--recovery-hold-down", "1s"]


def quiet_minute(need_s):
    """Waits until `need_s` seconds fit before the nodes' :00 cron (kumaguard leaves calls that
    could run into it to the cron, which would make these tests wait a minute)."""
    while True:
        s = time.time() % 60
        if 4 <= s <= 56 - need_s:
            return
        time.sleep(0.5)




def failed_events(kg):
    return kg.get_json("/api/failover-history?kind=reconcile_failed")["events"]


def start(tmp_path, procs, key, sims=None, extra=()):
    cluster = SqliteCluster(str(tmp_path / "cluster.db"))
    sims = sims or [Kumasim("node%d" % i, sqlite_path=str(tmp_path / "cluster.db"),
                            node_host="listen") for i in (1, 2)]
    procs.extend(sims)
    env = {"KUMA_API_KEY": key}
    kg = Kumaguard(tmp_path, cluster, extra=FAST + ["--init-schema"] + list(extra), env=env)
    procs.append(kg)
    wait_until(lambda: len(kg.get_json("/api/node-status")["nodes"]) == len(sims),
               timeout=15, what="nodes registered")
    kg.wait_leader()
    kg.wait_proven()
    return cluster, sims, kg


def test_a_rate_limited_node_is_left_to_its_cron_and_the_fix_is_named(tmp_path, procs):
    cluster, sims, kg = start(tmp_path, procs, "kuma-key")
    seed_monitors(cluster, ["node1"] * 6)
    assert kg.post("/api/update-loads")[0] == 200
    sims[1].set_rate_limit(limit=1)  # node2: one call per window, then 429
    quiet_minute(20)
    assert kg.post("/api/nodes/node1/drain")[0] == 200   # 6 starts on node2: call 1 (allowed)
    wait_until(lambda: kg.node("node2")["reconcile"]["calls"] >= 1 and
               not kg.node("node2")["reconcile"]["in_flight"], timeout=20, what="first call")
    assert kg.post("/api/nodes/node1/enable")[0] == 200  # back home: 6 stops on node2: call 2
    r = wait_until(lambda: kg.node("node2")["reconcile"]["rate_limited"] >= 1 and
                   kg.node("node2")["reconcile"], timeout=20, what="a 429")
    assert r["last_result"] == "rate_limited" and r["last_http_status"] == 429, r
    ev = wait_until(lambda: failed_events(kg), timeout=5, what="the event")
    assert any("API_RATE_LIMIT" in e["reason"] and e["node"] == "node2" for e in ev), ev
    # left to the node's cron: not retried (retrying spends the node's budget)
    time.sleep(3)
    assert sims[1].stats()["reconcile_rate_limited"] == 1, sims[1].stats()
    r = kg.node("node2")["reconcile"]
    assert r["waiting"] in ("left to the node's cron after a refused call", None), r
    metrics = kg.request("GET", "/metrics")[2].decode()
    assert 'kumaguard_node_reconcile_failures_total{node="node2",cause="rate_limited"} 1' \
        in metrics
    kg.stop()


def test_a_bearer_key_is_refused_and_the_cause_is_named(tmp_path, procs):
    cluster, sims, kg = start(tmp_path, procs, "Bearer kuma-key")
    assert "KUMA_API_KEY starts with 'Bearer '" in kg.read_log(), "warned at start"
    seed_monitors(cluster, ["node1"] * 3)
    assert kg.post("/api/update-loads")[0] == 200
    quiet_minute(15)
    assert kg.post("/api/nodes/node1/drain")[0] == 200
    r = wait_until(lambda: kg.node("node2")["reconcile"]["unauthorized"] >= 1 and
                   kg.node("node2")["reconcile"], timeout=20, what="a 401")
    assert r["last_result"] == "unauthorized" and r["last_http_status"] == 401, r
    ev = wait_until(lambda: failed_events(kg), timeout=5, what="the event")
    assert any("Bearer" in e["reason"] for e in ev), ev
    time.sleep(2)
    assert sims[1].stats()["reconcile_unauthorized"] == 1, "refused calls are not retried"
    kg.stop()


def test_a_call_past_its_deadline_is_not_repeated_while_it_may_run(tmp_path, procs):
    db = str(tmp_path / "cluster.db")
    # node2 reconciles 6 times slower than a real node: kumaguard's deadline (from the real
    # costs) passes while the node still works
    sims = [Kumasim("node1", sqlite_path=db, node_host="listen"),
            Kumasim("node2", sqlite_path=db, node_host="listen", delay_scale=6)]
    cluster, sims, kg = start(tmp_path, procs, "kuma-key", sims=sims)
    seed_monitors(cluster, ["node1"] * 8)
    assert kg.post("/api/update-loads")[0] == 200
    quiet_minute(30)
    assert kg.post("/api/nodes/node1/drain")[0] == 200
    r = wait_until(lambda: kg.node("node2")["reconcile"]["timeouts"] >= 1 and
                   kg.node("node2")["reconcile"], timeout=30, what="a timeout")
    assert r["last_result"] == "timeout", r
    ev = wait_until(lambda: failed_events(kg), timeout=5, what="the event")
    assert any("may still be running" in e["reason"] for e in ev), ev
    # the node keeps working on it; kumaguard sends nothing meanwhile
    time.sleep(4)
    st = sims[1].stats()
    assert st["max_calls_in_flight"] <= 1 and st["calls_while_running"] == 0, st
    kg.stop()


def test_a_host_without_a_port_says_so_and_how_to_fix_it(tmp_path, procs):
    db = str(tmp_path / "cluster.db")
    # a real node with UPTIME_KUMA_NODE_HOST unset registers "127.0.0.1", no port
    sims = [Kumasim("node1", sqlite_path=db, node_host="listen"), Kumasim("node2", sqlite_path=db)]
    cluster = SqliteCluster(db)
    procs.extend(sims)
    kg = Kumaguard(tmp_path, cluster, extra=FAST + ["--init-schema"])
    procs.append(kg)
    n2 = wait_until(lambda: [n for n in kg.get_json("/api/node-status")["nodes"]
                             if n["node_id"] == "node2"], timeout=15, what="node2 listed")[0]
    assert n2["host"] == "127.0.0.1" and n2["host_valid"] is False, n2
    assert "no port" in n2["host_problem"] and "UPTIME_KUMA_NODE_HOST=host:port" in \
        n2["host_problem"], n2
    assert not n2["routable"]
    kg.stop()
