"""Issue 14, per-monitor operations, end to end on both stores: the real kumaguard with a token,
three kumasim nodes, a real SQLite file or MariaDB.

GET /api/monitors pages and filters what the database holds (checked against direct SQL);
move / pin / unpin (single and batch) change exactly what they say, are recorded as events
with the actor, and nudge the nodes; invalid input answers 4xx with the monitor table byte for
byte unchanged; an operator's pin survives a failover of its node and the revert after it,
while kumaguard's own overrides come and go around it."""

import json
from concurrent.futures import ThreadPoolExecutor

from kg_harness import INSTANT_NODE_COSTS, Kumaguard, monitors, node_status, seed_monitors, wait_until
from kumasim_ctl import Kumasim

API_KEY = "test-cluster-key"
TOKEN = "monitor-ops-token-123"
AUTH = {"Authorization": "Bearer " + TOKEN}
FAST = ["--health-interval", "200ms", "--health-fast-interval", "100ms", "--health-timeout",
        "300ms", "--fall", "3", "--rise", "3", "--recovery-hold-down", "1s",
        "--recovery-batch-interval", "100ms", "--api-token", TOKEN] + INSTANT_NODE_COSTS


def start(tmp_path, cluster, procs):
    nodes = [Kumasim("node%d" % i, instant=True, api_key=API_KEY) for i in (1, 2, 3)]
    procs.extend(nodes)
    kg = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, extra=FAST)
    procs.append(kg)
    wait_until(cluster.schema_ready, what="schema")
    wait_until(lambda: node_status(cluster) == {n.node_id: "online" for n in nodes},
               what="nodes online")
    return nodes, kg


def post(kg, path, body=None, headers=AUTH):
    return kg.post(path, body if body is not None else {}, headers)


def listing(kg, query=""):
    return kg.get_json("/api/monitors" + query)


def ids_of(doc):
    return [m["id"] for m in doc["monitors"]]


def test_listing_filters_and_pages(tmp_path, cluster, procs):
    nodes, kg = start(tmp_path, cluster, procs)
    homes = ["node%d" % (1 + i % 3) for i in range(120)]
    seed_monitors(cluster, homes)
    seed_monitors(cluster, ["node2"] * 5, start_id=500, active=0)
    cluster.execute("UPDATE monitor SET name = %s WHERE id = 7", ("Shop checkout 100%",))
    cluster.execute("UPDATE monitor SET assigned_node = 'node3' WHERE id IN (1, 2)")  # pins
    assert post(kg, "/api/update-loads")[0] == 200

    everything = []
    after = None
    while True:
        doc = listing(kg, "?limit=50" + ("&after=%d" % after if after else ""))
        assert doc["total"] == 125 and doc["count"] == len(doc["monitors"]) <= 50
        everything += ids_of(doc)
        after = doc["next_after"]
        if after is None:
            break
    assert everything == sorted(r[0] for r in cluster.query("SELECT id FROM monitor"))

    truth = monitors(cluster)
    on2 = listing(kg, "?node=node2&limit=500")
    assert set(ids_of(on2)) == {i for i, (a, h, o) in truth.items() if (o or h) == "node2"}
    assert all(m["effective"] == "node2" and m["effective_state"] == "online"
               for m in on2["monitors"])
    assert ids_of(listing(kg, "?pinned=true")) == [1, 2]
    pin = listing(kg, "?pinned=true")["monitors"][0]
    assert pin["override_kind"] == "pin" and pin["pinned"] and "operator" in pin["why"]
    assert ids_of(listing(kg, "?state=inactive&limit=500")) == list(range(500, 505))
    assert ids_of(listing(kg, "?q=checkout%20100%25")) == [7], "search is literal"
    assert ids_of(listing(kg, "?q=SHOP")) == [7], "and case-insensitive"
    assert listing(kg, "?state=stranded")["total"] == 0

    nodes[2].kill()  # node3: its pins strand, the rest fails over
    wait_until(lambda: node_status(cluster)["node3"] == "offline", what="node3 offline")
    wait_until(lambda: listing(kg, "?override=ours")["total"] > 0, what="failover overrides")
    # only the pins to the dead node run nowhere (liveness is the published picture, a
    # moment behind the database writes)
    stranded = wait_until(lambda: (lambda d: ids_of(d) == [1, 2] and d)(
        listing(kg, "?state=stranded")), what="the pins to node3 stranded")
    assert all(not m["effective_live"] and "offline" in m["why"] for m in stranded["monitors"])
    ours = listing(kg, "?override=ours&limit=1")["monitors"][0]
    assert ours["override_kind"] == "kumaguard" and ours["override_since"]
    assert ours["home"] == "node3" and "goes back to its home node3" in ours["why"]
    assert "node3 is offline now" in ours["why"]

    for bad in ("?limit=0", "?limit=501", "?state=dead", "?node=a%20b", "?after=x",
                "?pinned=true&override=ours"):
        status, _, raw = kg.request("GET", "/api/monitors" + bad)
        assert status == 400 and json.loads(raw)["error"] == "bad_request", bad

    # a burst (many dashboard tabs, a script) waits its turn instead of being refused busy;
    # 24 at once: more than the 4 workers, fewer than the per-client connection limit (32)
    def one(_):
        status, _, raw = kg.request("GET", "/api/monitors?limit=500", timeout=30)
        return status, json.loads(raw).get("total")
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(one, range(24)))
    assert answers == [(200, 125)] * 24, answers
    kg.stop()


def test_operations_and_refusals(tmp_path, cluster, procs):
    nodes, kg = start(tmp_path, cluster, procs)
    seed_monitors(cluster, ["node1", "node1", "node2", "node3", None])
    seed_monitors(cluster, ["node1"], start_id=9, active=0)
    wait_until(lambda: monitors(cluster)[5][1] is not None, what="5 adopted")
    assert post(kg, "/api/nodes/node3/maintenance")[0] == 200
    wait_until(lambda: node_status(cluster)["node3"] == "maintenance", what="node3 maintenance")
    wait_until(lambda: monitors(cluster)[4][2] is not None, what="4 failed over from node3")
    assert post(kg, "/api/update-loads")[0] == 200
    for n in nodes:
        n.reset_stats()

    before = monitors(cluster)
    refusals = [
        ("/api/monitors/1/move", {"node": "node2"}, {}, 401, "unauthorized"),
        ("/api/monitors/1/move", {"node": "node2"}, {"Authorization": "Bearer wrong-token"},
         403, "forbidden"),
        ("/api/monitors/99/move", {"node": "node2"}, AUTH, 404, "unknown_monitor"),
        ("/api/monitors/move", {"ids": [1, 99], "node": "node2"}, AUTH, 404, "unknown_monitor"),
        ("/api/monitors/1/move", {"node": "node7"}, AUTH, 404, "unknown_node"),
        ("/api/monitors/1/pin", {"node": "node3"}, AUTH, 409, "node_not_online"),
        ("/api/monitors/9/move", {"node": "node2"}, AUTH, 409, "monitor_inactive"),
        ("/api/monitors/1/unpin", {}, AUTH, 409, "not_pinned"),
        ("/api/monitors/1/move", {"node": "node2", "revert": "yes"}, AUTH, 400, "bad_request"),
        ("/api/monitors/move", {"node": "node2"}, AUTH, 400, "bad_request"),
        ("/api/monitors/1/move", "{not json", AUTH, 400, "bad_request"),
    ]
    for path, body, headers, status, error in refusals:
        got, doc = post(kg, path, body, headers)
        assert (got, doc["error"]) == (status, error), (path, body, got, doc)
        assert monitors(cluster) == before, "%s %r changed something" % (path, body)
    assert kg.request("GET", "/api/monitors/1/move")[0] == 405

    # kept move: a new home
    status, doc = post(kg, "/api/monitors/1/move", {"node": "node2"})
    assert status == 200 and doc["changed"] == 1 and doc["revert"] is False, doc
    assert monitors(cluster)[1] == (1, "node2", None)
    # pin and unpin, single and batch
    status, doc = post(kg, "/lb/monitors/pin", {"ids": [2, 3], "node": "node1"})
    assert status == 200 and doc["changed"] == 2 and doc["monitors"] == [2, 3], doc
    rows = monitors(cluster)
    assert rows[2][2] == "node1" and rows[3][2] == "node1"
    assert listing(kg, "?pinned=true")["total"] == 2
    status, doc = post(kg, "/api/monitors/3/unpin")
    assert status == 200 and monitors(cluster)[3] == (1, "node2", None)
    # a pin is refused by move until unpinned
    status, doc = post(kg, "/api/monitors/2/move", {"node": "node2"})
    assert status == 409 and doc["error"] == "monitor_pinned"
    # repeating is harmless
    status, doc = post(kg, "/api/monitors/1/move", {"node": "node2"})
    assert status == 200 and doc["changed"] == 0

    # nudges: the nodes whose sets changed were told to reconcile
    wait_until(lambda: nodes[0].stats()["reconcile_calls"] >= 1 and
               nodes[1].stats()["reconcile_calls"] >= 1, timeout=5, what="nudges")
    events = kg.get_json("/api/failover-history?kind=monitor")["events"]
    reasons = [e["reason"] for e in events]
    assert len(events) == 3, reasons
    assert all(r.startswith("127.0.0.1 ") for r in reasons), "the actor is in every event"
    assert any("pinned 2 monitors (2, 3) to node1" in r for r in reasons), reasons
    kg.stop()


def test_pins_survive_failover_and_revert(tmp_path, cluster, procs):
    nodes, kg = start(tmp_path, cluster, procs)
    node1, node2, node3 = nodes
    homes = ["node%d" % (1 + i % 3) for i in range(30)]  # id k is homed on node((k-1)%3+1)
    seed_monitors(cluster, homes)
    assert post(kg, "/api/update-loads")[0] == 200
    # x: home node2, pinned to node1; y: home node1, pinned to node2 (the node that will die)
    x, y, kept, rev = 2, 1, 3, 4   # kept: home node3 -> node2 (kept); rev: home node1 -> node3
    assert post(kg, "/api/monitors/%d/pin" % x, {"node": "node1"})[0] == 200
    assert post(kg, "/api/monitors/%d/pin" % y, {"node": "node2"})[0] == 200
    assert post(kg, "/api/monitors/%d/move" % kept, {"node": "node2"})[0] == 200
    status, doc = post(kg, "/api/monitors/%d/move" % rev, {"node": "node3", "revert": True})
    assert status == 200 and doc["changed"] == 1
    # "reverted like a failover": node1 is online past the hold-down, so it goes home
    wait_until(lambda: monitors(cluster)[rev] == (1, "node1", None), timeout=10,
               what="the reverting move reverted")

    node2.kill()
    wait_until(lambda: node_status(cluster)["node2"] == "offline", what="node2 offline")

    def failed_over():
        r = monitors(cluster)
        return all((r[i][2] or r[i][1]) != "node2" for i in r if i not in (y,)) and r
    rows = wait_until(failed_over, timeout=10, what="node2's monitors moved")
    assert rows[x] == (1, "node2", "node1"), "the pin away from node2 is untouched"
    assert rows[y] == (1, "node1", "node2"), "the pin onto the dead node stays (stranded)"
    assert rows[kept][1] == "node2" and rows[kept][2] in ("node1", "node3"), \
        "the kept move made node2 its home: it fails over like any monitor homed there"
    # liveness is the published picture, a moment behind the database writes
    wait_until(lambda: [m for m in listing(kg, "?state=stranded")["monitors"]
                        if m["id"] == y and not m["effective_live"]], what="y shown stranded")

    node2.restart()
    wait_until(lambda: node_status(cluster)["node2"] == "online", what="node2 back")
    wait_until(lambda: monitors(cluster)[kept] == (1, "node2", None), timeout=15,
               what="kumaguard's override reverted")
    rows = monitors(cluster)
    assert rows[x] == (1, "node2", "node1") and rows[y] == (1, "node1", "node2"), \
        "pins survive the revert"
    assert cluster.query("SELECT COUNT(*) FROM kumaguard_override")[0][0] == 0
    kg.stop()
