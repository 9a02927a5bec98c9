"""Issue 14, field compatibility: the Lua version's request list replayed against the real
kumaguard (three kumasim nodes, embedded store).  Every path answers, and every key the Lua
version returned is there with the JSON type a script expects (next to kumaguard's own keys),
under /lb/ and, where the path has one, under its /api/ spelling.  docs/API.md marks each of
these keys as a compatibility key.

The meaning of each key against a known snapshot is tested in tests/unit/test_api_compat.c;
here the values are checked against the running cluster where that is cheap (counts, limits,
the ping word, the time)."""

import json
import os
import re
import time

from kg_harness import ROOT, Kumaguard, SqliteCluster, effective_counts, seed_monitors, wait_until
from kumasim_ctl import Kumasim

NUM = (int, float)
OPT_STR = (str, type(None))
LIMIT = 777  # distinctive, to see it come back as limit_per_node

# (method, path, body, {top-level key: type}, {per-node key: type} or None)
LUA_REQUESTS = [
    ("GET", "/lb/health", None,
     {"timestamp": int, "status": str, "nodes": list},
     {"node_id": str, "status": str, "last_seen": OPT_STR, "monitor_count": int}),
    ("GET", "/lb/capacity", None,
     {"limit_per_node": int, "nodes": list},
     {"node_id": str, "current_count": int, "limit_per_node": int, "usage_percent": NUM}),
    ("GET", "/lb/health-status", None,
     {"check_count": int, "success_count": int, "fail_count": int, "status": str}, None),
    ("GET", "/lb/system-status", None,
     {"timestamp": int, "health": dict, "nodes": list, "load_balancer": dict,
      "fault_detection": dict, "rebalancing": dict}, {"node_id": str, "status": str}),
    ("GET", "/lb/node-status", None,
     {"timestamp": int, "nodes": list},
     {"node_id": str, "node_name": str, "status": str, "last_seen": OPT_STR}),
    ("GET", "/lb/load-balancer-status", None,
     {"timestamp": int, "load_balancer": str, "algorithm": str, "capacity": dict,
      "cluster": dict, "nodes": list}, None),
    ("GET", "/lb/rebalancing-status", None,
     {"timestamp": int, "status": str, "message": str}, None),
    ("GET", "/lb/fixed-node-status", None,
     {"has_fixed_node": bool, "is_valid": bool, "cluster_status": dict}, None),
    ("GET", "/lb/ping", None, {"status": str, "timestamp": int, "service": str}, None),
    ("POST", "/lb/set-fixed-node", {"node": "node2"},
     {"success": bool, "node": str, "message": str}, None),
    ("GET", "/lb/setup-status", None,
     {"setup_complete": bool, "routing_mode": str, "primary_node": OPT_STR, "message": str},
     None),
    # the rest of the Lua version's /lb/ paths: they answer, with the keys they always had
    ("GET", "/lb/available-nodes", None,
     {"available_nodes": list, "total_count": int, "clear_url": str}, None),
    ("GET", "/lb/fault-detection-status", None, {"panic": bool}, None),
    ("GET", "/lb/health-check-status", None, {"nodes": list}, None),
    ("GET", "/lb/clear-fixed-node", None, {"success": bool}, None),
    ("POST", "/lb/clear-fixed-node", {}, {"success": bool}, None),
]

# /lb/ paths that are the Lua version's spelling of an /api/ path answer there too
API_SPELLINGS = ["/api/health-status", "/api/system-status", "/api/node-status",
                 "/api/load-balancer-status", "/api/rebalancing-status", "/api/setup-status"]


def typename(t):
    return "/".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def check_keys(where, doc, spec):
    for key, t in spec.items():
        assert key in doc, "%s: missing %r (has %s)" % (where, key, sorted(doc))
        v = doc[key]
        # JSON has no int/bool confusion to allow: a bool is not a count
        ok = isinstance(v, t) and not (isinstance(v, bool) and t in (int, NUM))
        assert ok, "%s: %r is %r, expected %s" % (where, key, v, typename(t))


def start(tmp_path, procs):
    nodes = [Kumasim("node%d" % i) for i in (1, 2, 3)]
    procs.extend(nodes)
    store = SqliteCluster(str(tmp_path / "cluster.db"))
    kg = Kumaguard(tmp_path, store, nodes=nodes, extra=[
        "--health-interval", "200ms", "--health-fast-interval", "100ms",
        "--monitor-limit", str(LIMIT)])
    procs.append(kg)
    def probed():
        nodes = kg.get_json("/lb/health")["nodes"]
        return len(nodes) == 3 and all(n["status"] == "online" and n["last_seen"] for n in nodes)
    wait_until(probed, what="three nodes online and probed")
    seed_monitors(store, ["node1"] * 5 + ["node2"] * 3 + ["node3"] * 2)
    assert kg.post("/api/update-loads")[0] == 200
    return kg, store


def test_lua_request_list_answers_with_every_key(tmp_path, procs):
    kg, store = start(tmp_path, procs)
    for method, path, body, top, per_node in LUA_REQUESTS:
        if method == "GET":
            status, headers, raw = kg.request("GET", path)
        else:
            status, headers, raw = kg.request("POST", path, body)
        assert status == 200, "%s %s -> %s %r" % (method, path, status, raw[:300])
        assert headers.get("Content-Type", "").startswith("application/json"), path
        doc = json.loads(raw)
        check_keys("%s %s" % (method, path), doc, top)
        if per_node:
            assert doc["nodes"], path
            for n in doc["nodes"]:
                check_keys("%s %s nodes[%s]" % (method, path, n.get("node_id")), n, per_node)
    for path in API_SPELLINGS:
        lb = next(r for r in LUA_REQUESTS if r[1] == "/lb/" + path[5:])
        doc = kg.get_json(path)
        check_keys(path, doc, lb[3])


def test_counts_after_update_loads_are_the_ones_just_read(tmp_path, procs):
    """update-loads answers once the monitors are read: the counts a script reads right after
    it must include what it had just added, every time."""
    kg, store = start(tmp_path, procs)
    stale = []
    for i in range(20):
        seed_monitors(store, ["node1"], start_id=1000 + i)
        assert kg.post("/api/update-loads")[0] == 200
        counts = {n["node_id"]: n["current_count"] for n in kg.get_json("/lb/capacity")["nodes"]}
        if counts.get("node1") != 6 + i:
            stale.append((i, counts.get("node1")))
    assert not stale, "counts read right after update-loads were stale: %s" % stale
    kg.stop()


def test_values_mean_what_they_meant(tmp_path, procs):
    kg, store = start(tmp_path, procs)
    now = time.time()

    ping = kg.get_json("/lb/ping")
    assert ping["status"] == "healthy", "a script waiting for healthy must not wait forever"
    assert abs(ping["timestamp"] - now) < 60, "Unix seconds"

    health = kg.get_json("/lb/health")
    assert abs(health["timestamp"] - now) < 60
    assert all(n["last_seen"] for n in health["nodes"]), "probed nodes were seen"

    cap = kg.get_json("/lb/capacity")
    assert cap["limit_per_node"] == LIMIT
    want = effective_counts(store)
    for n in cap["nodes"]:
        assert n["limit_per_node"] == LIMIT
        assert n["current_count"] == want.get(n["node_id"], 0), (n, want)

    hs = kg.get_json("/lb/health-status")
    assert hs["check_count"] == hs["success_count"] + hs["fail_count"] and hs["check_count"] > 0

    nodes = kg.get_json("/lb/node-status")["nodes"]
    assert {n["node_name"] for n in nodes} == {"node1", "node2", "node3"}
    assert all(n["status"] == n["state"] == "online" for n in nodes)

    lb = kg.get_json("/lb/load-balancer-status")
    assert lb["capacity"]["limit_per_node"] == LIMIT
    assert lb["cluster"]["nodes_online"] == 3

    reb = kg.get_json("/lb/rebalancing-status")
    assert reb["status"] == "idle" and reb["message"]

    fixed = kg.request("GET", "/lb/fixed-node-status", headers={"Cookie": "KUMA_FIXED_NODE=node3"})
    doc = json.loads(fixed[2])
    assert doc["current_node"] == "node3" and doc["is_valid"]
    assert len(doc["cluster_status"]["nodes"]) == 3

    setup = kg.get_json("/lb/setup-status")
    assert setup["setup_complete"] is True and setup["routing_mode"] == "cluster"
    assert setup["primary_node"] == "node1", "no is_primary row: node1, as the nodes themselves"

    status, headers, raw = kg.request("POST", "/lb/set-fixed-node", {"node": "node2"})
    assert status == 200 and "node2" in json.loads(raw)["message"]
    assert "KUMA_FIXED_NODE=node2" in headers.get("Set-Cookie", "")


def test_api_reference_marks_every_compat_key(tmp_path):
    """docs/API.md's table of the Lua version's keys lists each path and key tested above."""
    with open(os.path.join(ROOT, "docs", "API.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Keys of the Lua version\s*$(.*?)^## ", text, re.M | re.S)
    assert m, "docs/API.md has no '## Keys of the Lua version' section"
    section = m.group(1)
    compat = {
        "/lb/health": ["timestamp", "last_seen"],
        "/lb/capacity": ["limit_per_node", "current_count"],
        "/lb/health-status": ["check_count", "success_count", "fail_count"],
        "/lb/system-status": ["timestamp", "health"],
        "/lb/node-status": ["timestamp", "node_name", "status"],
        "/lb/load-balancer-status": ["timestamp", "load_balancer", "algorithm", "capacity",
                                     "cluster"],
        "/lb/rebalancing-status": ["timestamp", "status", "message"],
        "/lb/fixed-node-status": ["cluster_status"],
        "/lb/ping": ["status", "timestamp", "service"],
        "/lb/set-fixed-node": ["message"],
        "/lb/setup-status": ["setup_complete", "routing_mode", "primary_node", "message"],
    }
    for path, keys in compat.items():
        rows = [ln for ln in section.splitlines() if ln.startswith("|") and "`%s`" % path in ln]
        assert rows, "no row for %s" % path
        for key in keys:
            assert any("`%s`" % key in r for r in rows), "%s: %s not documented" % (path, key)
