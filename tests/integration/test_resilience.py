"""Bad days: the database goes away mid-operation, hostile rows in the node table, and two
controllers on one MariaDB (only the leader moves monitors; the other takes over when the
leader dies).  Real kumaguard, real MariaDB, real simulated nodes."""

import os
import subprocess

import pytest

from kg_harness import (INSTANT_NODE_COSTS, ROOT, Kumaguard, MariaCluster, effective_counts,
                        monitors, node_status, seed_monitors, wait_until)
from kumasim_ctl import Kumasim

API_KEY = "test-cluster-key"
FAST = ["--health-interval", "200ms", "--health-fast-interval", "100ms", "--health-timeout",
        "300ms", "--fall", "3", "--rise", "3", "--recovery-hold-down", "1s",
        "--db-timeout", "1s", "--lease-ttl", "1s"] + INSTANT_NODE_COSTS
SCRIPT = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")


def mariadb_cluster(server, name):
    subprocess.run(["mariadb", "--no-defaults", "-S", server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    return MariaCluster(server, name)


def test_database_outage_keeps_serving_and_recovers(tmp_path, mariadb_server, procs):
    cluster = mariadb_cluster(mariadb_server, "kg_outage_%d" % os.getpid())
    nodes = [Kumasim("node%d" % i, instant=True, api_key=API_KEY) for i in (1, 2, 3)]
    procs.extend(nodes)
    kg = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, extra=FAST)
    procs.append(kg)
    wait_until(cluster.schema_ready, what="schema")
    ids = seed_monitors(cluster, ["node1", "node2", "node3"] * 20)
    assert kg.post("/api/update-loads")[0] == 200

    subprocess.run([SCRIPT, "stop", mariadb_server["dir"]], check=True)
    try:
        def db_down():
            return kg.get_json("/api/system-status")["database"]["ok"] is False
        wait_until(db_down, timeout=15, what="kumaguard notices the database is gone")
        # reads keep working from the snapshot; actions that need the database say 503
        status = kg.get_json("/api/node-status")
        assert len(status["nodes"]) == 3
        code, body = kg.post("/api/update-loads")
        assert code == 503 and body["error"], body
        # a node dies while the database is away: routing state follows, nothing crashes
        nodes[1].kill()
        wait_until(lambda: [n for n in kg.get_json("/api/node-status")["nodes"]
                            if n["node_id"] == "node2"][0]["state"] == "offline",
                   timeout=10, what="node2 offline while the database is down")
    finally:
        subprocess.run([SCRIPT, "start", mariadb_server["dir"], str(mariadb_server["port"])],
                       check=True)
    # back: the state decided meanwhile is written, and the failover happens
    wait_until(lambda: node_status(cluster).get("node2") == "offline", timeout=20,
               what="node2 offline written after the database returned")
    wait_until(lambda: "node2" not in effective_counts(cluster), timeout=20,
               what="node2's monitors moved after the database returned")
    assert sorted(monitors(cluster)) == sorted(ids)
    assert kg.get_json("/api/system-status")["database"]["ok"] is True
    kg.stop()


@pytest.mark.parametrize("store", ["sqlite", "mariadb"])
def test_hostile_node_rows_are_not_probed_or_routed(tmp_path, request, procs, store):
    if store == "sqlite":
        from kg_harness import SqliteCluster
        cluster = SqliteCluster(str(tmp_path / "cluster.db"))
    else:
        cluster = mariadb_cluster(request.getfixturevalue("mariadb_server"),
                                  "kg_hostile_%d" % os.getpid())
    good = Kumasim("node1", instant=True, api_key=API_KEY)
    procs.append(good)
    include = tmp_path / "upstream.conf"
    kg = Kumaguard(tmp_path, cluster, nodes=[good], api_key=API_KEY, extra=FAST + [
        "--nginx-include", str(include), "--nginx-test-cmd", "true", "--nginx-reload-cmd",
        "true", "--nginx-reload-min-gap", "0"])
    procs.append(kg)
    wait_until(cluster.schema_ready, what="schema")
    hostile = [("evil1", "e1", "127.0.0.1:1;}\nserver { listen 81; }"),
               ("evil2", "e2", "host with spaces:80"),
               ("evil3", "e3", "127.0.0.1:99999"),
               ("bad;id{", "e4", "127.0.0.1:3001"),
               ("evil5", "e5", "")]
    for nid, name, host in hostile:
        cluster.execute("INSERT INTO node (node_id, node_name, host, status) VALUES "
                        "(%s, %s, %s, 'online')", (nid, name, host))
    seed_monitors(cluster, ["evil1"] * 5 + ["node1"] * 5)

    def seen():
        ids = {n["node_id"] for n in kg.get_json("/api/node-status")["nodes"]}
        return {"evil1", "evil2", "evil3", "bad;id{", "evil5"} <= ids
    wait_until(seen, timeout=10, what="hostile rows loaded")
    # their monitors cannot run there: they move to the one valid node
    wait_until(lambda: effective_counts(cluster) == {"node1": 10}, timeout=10,
               what="monitors off invalid nodes")
    text = wait_until(lambda: include.exists() and include.read_text(), timeout=10,
                      what="include rendered")
    for bad in ("listen 81", "with spaces", "99999", "bad;id", "{ listen"):
        assert bad not in text, "hostile value reached the nginx include:\n" + text
    assert "127.0.0.1:%d" % good.port in text
    kg.stop()


def test_two_controllers_one_leader_and_takeover(tmp_path, mariadb_server, procs):
    cluster = mariadb_cluster(mariadb_server, "kg_leader_%d" % os.getpid())
    nodes = [Kumasim("node%d" % i, instant=True, api_key=API_KEY) for i in (1, 2, 3)]
    procs.extend(nodes)
    a = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, name="a",
                  extra=FAST + ["--instance-id", "ctl-a"])
    procs.append(a)
    wait_until(cluster.schema_ready, what="schema")
    b = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, name="b",
                  extra=FAST + ["--instance-id", "ctl-b"])
    procs.append(b)

    def roles():
        return (a.get_json("/api/system-status")["controller"]["is_leader"],
                b.get_json("/api/system-status")["controller"]["is_leader"])
    wait_until(lambda: roles() == (True, False), timeout=10, what="a leads, b follows")
    # the follower refuses actions that change assignments
    code, body = b.post("/api/trigger-rebalancing")
    assert code == 409 and body["error"] == "not_leader", body

    ids = seed_monitors(cluster, ["node1", "node2", "node3"] * 10)
    a.stop()
    wait_until(lambda: b.get_json("/api/system-status")["controller"]["is_leader"], timeout=15,
               what="b takes over the lease")
    nodes[2].kill()
    wait_until(lambda: "node3" not in effective_counts(cluster), timeout=15,
               what="the new leader fails node3 over")
    assert sorted(monitors(cluster)) == sorted(ids)
    gens = cluster.query("SELECT generation FROM kumaguard_leader")
    assert gens and gens[0][0] >= 2, gens
    b.stop()


def test_two_controllers_on_one_sqlite_file_one_leader(tmp_path, procs):
    """The embedded store has no GET_LOCK: an flock beside the file makes sure two kumaguards
    pointed at the same file do not both act."""
    from kg_harness import SqliteCluster
    cluster = SqliteCluster(str(tmp_path / "cluster.db"))
    nodes = [Kumasim("node%d" % i, instant=True, api_key=API_KEY) for i in (1, 2)]
    procs.extend(nodes)
    a = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, name="a", extra=FAST)
    procs.append(a)
    b = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, name="b", extra=FAST)
    procs.append(b)

    def roles():
        return (a.get_json("/api/system-status")["controller"]["is_leader"],
                b.get_json("/api/system-status")["controller"]["is_leader"])
    wait_until(lambda: roles() == (True, False), timeout=10, what="a leads, b follows")
    a.stop()
    wait_until(lambda: b.get_json("/api/system-status")["controller"]["is_leader"], timeout=15,
               what="b takes over when a stops")
    b.stop()


def test_slow_nginx_validation_does_not_delay_failover(tmp_path, procs):
    """The nginx feed runs on its own thread: a `nginx -t` that takes seconds (a slowly
    resolving upstream host name) must not hold up probing or the failover."""
    from kg_harness import SqliteCluster
    import time
    cluster = SqliteCluster(str(tmp_path / "cluster.db"))
    nodes = [Kumasim("node%d" % i, instant=True, api_key=API_KEY) for i in (1, 2, 3)]
    procs.extend(nodes)
    kg = Kumaguard(tmp_path, cluster, nodes=nodes, api_key=API_KEY, extra=FAST + [
        "--nginx-include", str(tmp_path / "upstream.conf"), "--nginx-test-cmd", "sleep 8",
        "--nginx-reload-cmd", "true", "--nginx-reload-min-gap", "0"])
    procs.append(kg)
    wait_until(cluster.schema_ready, what="schema")
    # timed from proven nodes: a failover needs proven survivors, and under TSan on a busy
    # machine proving them took seconds of its own
    kg.wait_leader()
    kg.wait_proven()
    seed_monitors(cluster, ["node1", "node2", "node3"] * 10)
    assert kg.post("/api/update-loads")[0] == 200
    t0 = time.monotonic()
    nodes[1].kill()
    wait_until(lambda: "node2" not in effective_counts(cluster), timeout=15,
               what="failover while nginx -t is slow")
    took = time.monotonic() - t0
    # detection takes about a second; waiting for a `nginx -t` would take up to 8 s
    assert took < 5.0, "failover waited for nginx validation (%.1f s)" % took
    kg.stop()
