"""Issue 3 through the daemon, on both stores: minimal-movement rebalancing, force rebalance
all (with its confirmation), the automatic rebalance, and cancelling a batched rebalance while
its progress is visible.  Pins never move and no monitor is lost or doubled."""

import collections

from kg_harness import (INSTANT_NODE_COSTS, Kumaguard, effective_counts, monitors,
                        node_status, seed_monitors, wait_until)
from kumasim_ctl import Kumasim

KEY = "test-cluster-key"
FAST = ["--health-interval", "200ms", "--health-fast-interval", "100ms", "--health-timeout",
        "300ms", "--fall", "3", "--rise", "3"] + INSTANT_NODE_COSTS


def start(tmp_path, cluster, procs, extra=()):
    nodes = [Kumasim("node%d" % i, instant=True, api_key=KEY) for i in (1, 2, 3)]
    procs.extend(nodes)
    kg = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=KEY, extra=FAST + list(extra))
    procs.append(kg)
    wait_until(cluster.schema_ready, what="schema")
    wait_until(lambda: set(node_status(cluster).values()) == {"online"}, what="online")
    kg.wait_leader()
    kg.wait_proven()
    return nodes, kg


def skewed(cluster):
    """200 monitors on node1, 100 on node2, none on node3; monitor 1 pinned to node1."""
    ids = seed_monitors(cluster, ["node1"] * 200 + ["node2"] * 100)
    cluster.execute("UPDATE monitor SET assigned_node='node1' WHERE id=1")
    return ids


def finished(kg):
    r = kg.get_json("/api/rebalancing-status")
    return (not r["running"] and r["phase"] in ("done", "cancelled", "failed")) and r


def test_trigger_rebalancing_moves_the_minimum(tmp_path, cluster, procs):
    _, kg = start(tmp_path, cluster, procs)
    ids = skewed(cluster)
    assert kg.post("/api/update-loads")[0] == 200
    before = monitors(cluster)
    code, body = kg.post("/api/trigger-rebalancing")
    assert code in (200, 202), body
    r = wait_until(lambda: finished(kg), timeout=20, what="rebalance finished")
    assert r["phase"] == "done", r
    after = monitors(cluster)
    assert sorted(after) == sorted(ids)
    eff = effective_counts(cluster)
    assert all(90 <= eff[n] <= 110 for n in ("node1", "node2", "node3")), eff
    changed = [i for i in ids if after[i] != before[i]]
    # the minimum: node1 must shed 90 to reach the 110 upper bound, node3 gain 90
    assert len(changed) == 90, len(changed)
    assert all(after[i][1] == "node3" for i in changed)
    assert after[1] == before[1], "pinned monitor moved"
    assert r["moved"] == 90 and r["total"] == 90, r
    # a balanced cluster is left alone
    code, body = kg.post("/api/trigger-rebalancing")
    assert code == 200 and "nothing to move" in body["detail"], body
    assert monitors(cluster) == after
    kg.stop()


def test_force_rebalance_all_needs_confirmation_and_is_deterministic(tmp_path, cluster, procs):
    _, kg = start(tmp_path, cluster, procs)
    ids = skewed(cluster)
    assert kg.post("/api/update-loads")[0] == 200
    code, body = kg.post("/api/force-rebalance-all", {})
    assert code == 400, (code, body)
    code, body = kg.post("/api/force-rebalance-all", {"confirm": "yes"})
    assert code == 400, (code, body)
    assert kg.post("/api/force-rebalance-all", {"confirm": "force-rebalance-all"})[0] in (200, 202)
    assert wait_until(lambda: finished(kg), timeout=20, what="force finished")["phase"] == "done"
    first = monitors(cluster)
    assert sorted(first) == sorted(ids)
    assert first[1][2] == "node1", "pin overwritten"
    eff = effective_counts(cluster)
    assert max(eff.values()) <= 111 and min(eff.values()) >= 89, eff
    # from scratch again: the same homes (deterministic), so nothing moves
    code, body = kg.post("/api/force-rebalance-all", {"confirm": "force-rebalance-all"})
    assert code in (200, 202)
    wait_until(lambda: finished(kg), timeout=20, what="second force finished")
    assert monitors(cluster) == first
    kinds = collections.Counter(e["kind"] for e in kg.get_json("/api/failover-history")["events"])
    assert kinds["force_rebalance"] >= 1, kinds
    kg.stop()


def test_automatic_rebalance_when_the_spread_is_too_wide(tmp_path, cluster, procs):
    _, kg = start(tmp_path, cluster, procs, extra=["--rebalance-auto-spread", "0.5"])
    ids = skewed(cluster)
    wait_until(lambda: max(effective_counts(cluster).values()) <= 110, timeout=30,
               what="automatic rebalance")
    assert sorted(monitors(cluster)) == sorted(ids)
    events = kg.get_json("/api/failover-history?kind=rebalance")["events"]
    assert any("auto" in (e["reason"] or "") for e in events), events
    kg.stop()


def test_cancel_a_batched_rebalance(tmp_path, cluster, procs):
    _, kg = start(tmp_path, cluster, procs, extra=["--move-batch-size", "5",
                                                   "--rebalance-batch-interval", "300ms"])
    ids = skewed(cluster)
    assert kg.post("/api/update-loads")[0] == 200
    assert kg.post("/api/trigger-rebalancing")[0] == 202

    def progressing():
        r = kg.get_json("/api/rebalancing-status")
        return r["running"] and 0 < r["moved"] < r["total"] and r["eta"] and r
    r = wait_until(progressing, timeout=10, what="rebalance in progress")
    assert r["total"] == 90 and r["phase"] == "applying"
    code, body = kg.post("/api/cancel-rebalancing")
    assert code == 200, body
    r = wait_until(lambda: finished(kg), timeout=10, what="cancelled")
    assert r["phase"] == "cancelled" and r["moved"] < 90, r
    assert sorted(monitors(cluster)) == sorted(ids)
    code, body = kg.post("/api/cancel-rebalancing")
    assert code == 409, body
    kg.stop()
