"""Issue 14, first-run setup routing: a real nginx (the shipped docker/nginx-site.conf) fed by
kumaguard, three kumasim nodes, a real MariaDB whose `user` table is empty.

While no user exists only the primary node can create one (KUMA-NODE.md), so every request
through nginx must reach the primary -- the node with is_primary, else node1 -- whatever the
client address or fixed-node cookie, /lb/setup-status says primary_only, and kumaguard does not
call the nodes' reconcile endpoint (they would answer 401).  Within 5 s of the first user,
requests spread over the cluster again, the status says cluster, and the reconcile call that
waited is made.

Clients are told apart by source address (127.0.1.x) for `hash $remote_addr`."""

import os
import re
import subprocess
import time

import pytest

from kg_harness import Kumaguard, MariaCluster, node_status, seed_monitors, wait_until
from kumasim_ctl import Kumasim
from nginx_ctl import Nginx, file_sha256, free_port, sample_site

NODES = ("node1", "node2", "node3")
CLIENTS = ["127.0.1.%d" % i for i in range(1, 31)]
API_KEY = "test-cluster-key"
FAST = ["--health-interval", "200ms", "--health-fast-interval", "100ms", "--health-timeout",
        "300ms", "--fall", "2", "--rise", "2", "--recovery-hold-down", "1s"]


@pytest.fixture
def maria(mariadb_server):
    name = "kg_setup_%d_%d" % (os.getpid(), int(time.monotonic() * 1000) % 1000000)
    subprocess.run(["mariadb", "--no-defaults", "-S", mariadb_server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    store = MariaCluster(mariadb_server, name)
    # Uptime Kuma's migrations create `user` with node and monitor; --init-schema does not
    store.execute("CREATE TABLE `user` (id INT PRIMARY KEY, username VARCHAR(255),"
                  " active BOOLEAN NOT NULL DEFAULT 1)")
    return store


class Stack:
    def __init__(self, tmp, store, procs):
        # real nodes on the cluster's database: before its first user they answer 401, their
        # cron runs regardless, node1 registers itself as primary
        self.sims = {n: Kumasim(n, store=store, setup_done=False, node_host="listen")
                     for n in NODES}
        procs.extend(self.sims.values())
        ngx_dir = os.path.join(str(tmp), "nginx")
        os.makedirs(ngx_dir, exist_ok=True)
        include = os.path.join(ngx_dir, "kuma-upstream.conf")
        port = free_port()
        # only Kuma paths are requested here: the site's kumaguard upstream is not used
        self.nginx = Nginx(ngx_dir, sample_site(include, "127.0.0.1:9", port), port,
                           include_path=include)
        self.nginx.start()
        self.kg = Kumaguard(tmp, store, nodes=self.sims.values(), api_key=API_KEY, extra=FAST + [
            "--nginx-include", include, "--nginx-test-cmd", self.nginx.test_cmd,
            "--nginx-reload-cmd", self.nginx.synced_reload_cmd,
            "--nginx-reload-min-gap", "100ms"])
        procs.append(self.kg)

    def stop(self):
        self.nginx.stop()

    def cluster_nodes(self):
        with open(self.nginx.include_path) as f:
            text = f.read()
        m = re.search(r"^upstream kuma_cluster \{(.*?)^\}", text, re.S | re.M)
        by_addr = {sim.address: n for n, sim in self.sims.items()}
        return {by_addr.get(a, a)
                for a in re.findall(r"^\s*server (\S+) max_fails", m.group(1), re.M)} if m else None

    def routed(self, nodes):
        hashes = self.nginx.applied_include_hashes()
        return (self.cluster_nodes() == set(nodes) and bool(hashes)
                and hashes[-1] == file_sha256(self.nginx.include_path))

    def round(self, cookie=None):
        """{client address: node that answered} for one request per client; all 200."""
        seen = {}
        headers = {"Cookie": "KUMA_FIXED_NODE=%s" % cookie} if cookie else {}
        for ip in CLIENTS:
            status, h, body = self.nginx.request("GET", "/", headers=headers, source_ip=ip)
            assert status == 200, "client %s got %d: %r" % (ip, status, body[:200])
            seen[ip] = h.get("x-kuma-node")
        return seen


def reconcile_calls(stack):
    """Calls each node received, answered or refused (401 before the first user)."""
    return {n: sim.stats()["reconcile_calls"] + sim.stats()["reconcile_unauthorized"]
            for n, sim in stack.sims.items()}


def runs_monitors(sim, ids):
    return set(ids) <= {m["id"] for m in sim.monitors()["monitors"]}


def test_pending_setup_routes_to_the_primary_then_the_cluster(tmp_path, maria, procs):
    st = Stack(tmp_path, maria, procs)
    try:
        kg = st.kg
        wait_until(lambda: node_status(maria) == {n: "online" for n in NODES},
                   what="nodes registered")

        # node1 is primary (a Kuma node with that id makes itself so)
        wait_until(lambda: kg.get_json("/lb/setup-status")["routing_mode"] == "primary_only",
                   what="setup pending noticed")
        doc = kg.get_json("/lb/setup-status")
        assert doc["setup_complete"] is False and doc["primary_node"] == "node1", doc
        wait_until(lambda: st.routed({"node1"}), what="nginx routing node1 only")
        assert set(st.round().values()) == {"node1"}

        # the row that says which node is primary wins
        maria.execute("UPDATE node SET is_primary = (node_id = 'node2')")
        wait_until(lambda: kg.get_json("/lb/setup-status")["primary_node"] == "node2",
                   what="is_primary followed")
        wait_until(lambda: st.routed({"node2"}), what="nginx routing node2 only")
        for _ in range(2):
            assert set(st.round().values()) == {"node2"}, "every request reaches the primary"
        assert set(st.round(cookie="node3").values()) == {"node2"}, \
            "a fixed-node cookie cannot reach a node that cannot set up"
        doc = kg.get_json("/lb/setup-status")
        assert doc["routing_mode"] == "primary_only" and "node2" in doc["message"]
        lb = kg.get_json("/lb/load-balancer-status")
        assert lb["cluster"]["routing_mode"] == "primary_only"

        # moves made meanwhile do not call the nodes' reconcile endpoint (it answers 401)
        seed_monitors(maria, ["node1"] * 10)
        assert kg.post("/api/update-loads")[0] == 200
        status, body = kg.post("/api/monitors/move", {"ids": [1, 2, 3], "node": "node3"})
        assert status == 200 and body["changed"] == 3, body
        time.sleep(1.5)  # a few refreshes, where waiting nudges are retried
        assert reconcile_calls(st) == {n: 0 for n in NODES}, "no reconcile before setup"

        t0 = time.monotonic()
        maria.execute("INSERT INTO `user` (id, username, active) VALUES (1, 'admin', 1)")
        wait_until(lambda: len(set(st.round().values())) >= 2, timeout=5, interval=0.1,
                   what="requests spread within 5 s of the first user")
        took = time.monotonic() - t0
        print("first user -> requests spread over the cluster: %.2f s" % took)
        wait_until(lambda: st.routed(set(NODES)), timeout=5, what="every node routed")
        assert set(st.round().values()) == set(NODES)
        doc = kg.get_json("/lb/setup-status")
        assert doc["setup_complete"] is True and doc["routing_mode"] == "cluster", doc

        # node3 runs the moved monitors: told by kumaguard's call once setup is complete, or by
        # its own :00 cron if one ran meanwhile (a cron needs no user) — never by a refused call
        wait_until(lambda: runs_monitors(st.sims["node3"], [1, 2, 3]), timeout=10,
                   what="node3 runs the moved monitors after setup")
        assert all(s.stats()["reconcile_unauthorized"] == 0 for s in st.sims.values()), \
            "kumaguard called a node before setup (401)"
        kinds = [e["reason"] for e in kg.get_json("/api/failover-history?kind=setup")["events"]]
        assert any("pending" in r for r in kinds) and any("complete" in r for r in kinds), kinds
        kg.stop()
    finally:
        st.stop()


def test_no_user_table_is_not_gated(tmp_path, mariadb_server, procs):
    name = "kg_nogate_%d" % os.getpid()
    subprocess.run(["mariadb", "--no-defaults", "-S", mariadb_server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    store = MariaCluster(mariadb_server, name)
    sims = [Kumasim(n) for n in NODES]
    procs.extend(sims)
    kg = Kumaguard(tmp_path, store, nodes=sims, extra=FAST)
    procs.append(kg)
    wait_until(lambda: kg.get_json("/lb/setup-status")["checked_at"], what="setup looked at")
    doc = kg.get_json("/lb/setup-status")
    assert doc["setup_complete"] is True and doc["routing_mode"] == "cluster", doc
    assert doc["gated"] is False
    kg.stop()
