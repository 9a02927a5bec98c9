"""kumasim behaves like a real cluster-aware Uptime Kuma node, on both stores: it registers its
own row at start and never again, reads its assignments from the database, answers a reconcile
only when the whole reconcile is done, re-reads at :00 of its own clock (and misses that :00
while stopped), leaks a monitor copy when two reconciles overlap (the failure kumaguard must
avoid causing), rate-limits /api/v1/* per client IP, refuses calls before the first user and
with a Bearer key, answers 503 on health while its database is unreachable, and serves many
node ids from one process.

Each fact modelled here is one a real node showed (tests/kumasim/README.md); where these tests pass
and a real node would fail, kumaguard's tests would pass and a real cluster fail.
"""

import datetime
import os
import socket
import subprocess
import threading
import time

import pytest

from kg_harness import SqliteCluster, seed_monitors, wait_until
from kumasim_ctl import FleetNode, Kumasim, KumasimError, KumasimFleet, find_binary

KEY = "any-value-a-real-node-never-checks"


@pytest.fixture
def procs():
    """Processes a test started; each kumasim must then stop cleanly (exit 0, nothing on stderr
    from a sanitizer): under the ASan build that also proves no leak and no crash."""
    started = []
    yield started
    for p in reversed(started):
        rc = p.stop() if p.running else p.proc.returncode
        err = p.stderr_text()
        assert "Sanitizer" not in err and "runtime error" not in err, err[-4000:]
        assert rc in (0, None, -9), "kumasim exited %r: %s" % (rc, err[-2000:])


def node_row(cluster, node_id):
    rows = cluster.query("SELECT node_name, host, status, is_primary, last_seen FROM node "
                         "WHERE node_id = %s", (node_id,))
    return rows[0] if rows else None


def assign(cluster, ids, node_id):
    cluster.execute("UPDATE monitor SET assigned_node = %%s WHERE id IN (%s)"
                    % ",".join(str(i) for i in ids), (node_id,))


def timed_call(node, results, key=KEY):
    t0 = time.monotonic()
    status = node.reconcile(key)
    results.append((status, t0, time.monotonic()))


# ------------------------------------------------------------------------------------------------
# Identity and registration
# ------------------------------------------------------------------------------------------------

def test_registers_its_row_online_at_start_and_never_writes_it_again(cluster, procs):
    n1 = Kumasim("node1", store=cluster, primary=True)
    procs.append(n1)
    # a row that says the node is away, as kumaguard may have left it
    cluster.execute("INSERT INTO node (node_id, node_name, host, status) VALUES "
                    "('node2', 'node2', 'stale', 'offline')")
    n2 = Kumasim("node2", store=cluster, node_host="listen")
    procs.append(n2)

    name, host, status, primary, last_seen = node_row(cluster, "node1")
    assert (name, host, status, int(primary)) == ("node1", "127.0.0.1", "online", 1)
    assert last_seen is not None
    # node2: whatever the row said, it is online now, with the address it was told to register
    name, host, status, primary, last_seen = node_row(cluster, "node2")
    assert (host, status, int(primary)) == ("127.0.0.1:%d" % n2.port, "online", 0)
    if cluster.kind == "sqlite":
        # written as a UTC string
        seen = datetime.datetime.strptime(str(last_seen), "%Y-%m-%d %H:%M:%S")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        assert abs((now - seen).total_seconds()) < 120, (now, seen)

    # after start-up the node never writes its row: no heartbeat, nothing on calls or cron
    cluster.execute("UPDATE node SET status = 'maintenance', last_seen = NULL "
                    "WHERE node_id = 'node2'")
    assert n2.reconcile(KEY) == 200
    n2.set_clock(next_cron_in_ms=200)
    wait_until(lambda: n2.stats()["runs_cron"] == 1, timeout=5, what="a cron run")
    for _ in range(3):
        assert n2.health()[0] == 200
    assert node_row(cluster, "node2")[2:5:2] == ("maintenance", None)
    # a clean stop writes nothing either
    assert n2.stop() == 0
    assert node_row(cluster, "node2")[2] == "maintenance"
    # a restart registers again
    n2.restart()
    assert node_row(cluster, "node2")[2] == "online"


def test_reads_the_environment_a_real_node_reads(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPTIME_KUMA_", "NODE_"))}
    env.update({"UPTIME_KUMA_NODE_ID": "envnode", "UPTIME_KUMA_NODE_NAME": "Env-Node",
                "UPTIME_KUMA_NODE_HOST": "10.9.8.7:3001", "UPTIME_KUMA_PRIMARY": "true",
                "UPTIME_KUMA_DB_TYPE": "sqlite", "DATA_DIR": str(tmp_path),
                "API_RATE_LIMIT": "3", "UPTIME_KUMA_HOST": "127.0.0.1", "UPTIME_KUMA_PORT": "0"})
    p = subprocess.Popen([find_binary(), "--setup-done"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("kumasim envnode listening on 127.0.0.1:"), (line, p.stderr)
        port = int(line.rsplit(":", 1)[1])
        import sqlite3
        db = sqlite3.connect(str(tmp_path / "kuma.db"))
        row = db.execute("SELECT node_name, host, status, is_primary FROM node "
                         "WHERE node_id = 'envnode'").fetchone()
        db.close()
        assert row == ("Env-Node", "10.9.8.7:3001", "online", 1)
        assert FleetNode(None, "envnode", "127.0.0.1", port).stats()["rate_limit"] == 3
    finally:
        p.terminate()
        assert p.wait(5) == 0
        p.stdout.close()
        p.stderr.close()


# ------------------------------------------------------------------------------------------------
# Reconcile
# ------------------------------------------------------------------------------------------------

def test_a_call_is_answered_only_when_the_whole_reconcile_is_done(cluster, procs):
    node = Kumasim("node1", store=cluster, cron=False)
    procs.append(node)
    ids = seed_monitors(cluster, ["node2"] * 10 + ["node1"] * 2)
    cluster.execute("UPDATE monitor SET active = 0 WHERE id = %s", (ids[-1],))
    assign(cluster, ids[:10], "node1")  # moved here, as kumaguard would

    t0 = time.monotonic()
    assert node.reconcile(KEY) == 200
    took = time.monotonic() - t0
    # everything assigned and active runs when the answer arrives, once
    assert node.copies() == {i: 1 for i in ids[:11]}
    run = node.runs()[-1]
    assert (run["trigger"], run["result"], run["to_start"], run["started"], run["to_stop"]) == \
        ("call", "ok", 11, 11, 0)
    # each start is followed by a 100-300 ms sleep before the answer
    assert took >= 1.1 and run["end_ms"] - run["start_ms"] >= 1100, (took, run)

    assign(cluster, ids[:10], "node3")  # moved away again
    t0 = time.monotonic()
    assert node.reconcile(KEY) == 200
    took = time.monotonic() - t0
    assert node.copies() == {ids[10]: 1}
    run = node.runs()[-1]
    assert (run["to_start"], run["to_stop"], run["stopped"]) == (0, 10, 10)
    assert took >= 0.5 and run["end_ms"] - run["start_ms"] >= 500, (took, run)

    # nothing to do: a run still happens, and answers quickly
    assert node.reconcile(KEY) == 200
    run = node.runs()[-1]
    assert (run["to_start"], run["to_stop"], run["overlapped"]) == (0, 0, False)
    st = node.stats()
    assert st["overlapping_runs"] == 0 and st["leaked_copies"] == 0
    assert st["max_calls_in_flight"] == 1


def test_overlapping_calls_leak_copies_that_only_a_restart_ends(cluster, procs):
    """The repro a real node failed: move 10 monitors to a node by SQL, send two reconcile
    calls 0.8 s apart, move them back and reconcile: the node keeps checking some of them."""
    node = Kumasim("node1", store=cluster, cron=False)
    procs.append(node)
    ids = seed_monitors(cluster, ["node2"] * 10)
    assign(cluster, ids, "node1")

    results = []
    first = threading.Thread(target=timed_call, args=(node, results))
    first.start()
    time.sleep(0.8)
    timed_call(node, results)
    first.join(30)
    assert [r[0] for r in results] == [200, 200]
    during = node.copies()
    assert set(during) == set(ids)
    doubled = [i for i, c in during.items() if c == 2]
    assert doubled, "two overlapping runs must start some monitor twice: %s" % during

    assign(cluster, ids, None)  # back to node2
    assert node.reconcile(KEY) == 200
    left = node.copies()
    # the copies the second run overwrote are in no list: the stop reached only the listed ones
    assert set(left) == set(doubled), (left, doubled)
    mons = node.monitors()
    assert mons["listed"] == [] and mons["leaked_copies"] == len(doubled)
    print("leaked %d of 10 (a real node kept checking 6)" % len(doubled))
    st = node.stats()
    assert st["overlapping_runs"] == 1 and st["calls_while_running"] == 1
    assert st["max_calls_in_flight"] == 2 and st["leaked_copies"] == len(doubled)
    runs = node.runs()
    assert [r["overlapped"] for r in runs] == [True, True, False]

    # nothing but a restart ends it: more reconciles do not
    assert node.reconcile(KEY) == 200
    assert node.copies() == left
    answer = node.restart_process()
    assert answer["ok"] is True and answer["monitors"] == 0
    assert node.copies() == {} and node.stats()["leaked_copies"] == 0
    assert node.stats()["restarts"] == 1
    # a real process restart (kill, start) likewise starts only what is assigned
    assign(cluster, ids[:3], "node1")
    node.kill()
    node.restart()
    assert node.copies() == {i: 1 for i in ids[:3]}


def test_calls_one_after_the_other_leak_nothing(cluster, procs):
    """The control of the leak test: the same two calls, the second after the first answered."""
    node = Kumasim("node1", store=cluster, cron=False)
    procs.append(node)
    ids = seed_monitors(cluster, ["node2"] * 10)
    assign(cluster, ids, "node1")
    assert node.reconcile(KEY) == 200
    assert node.reconcile(KEY) == 200
    assert node.copies() == {i: 1 for i in ids}
    assign(cluster, ids, None)
    assert node.reconcile(KEY) == 200
    assert node.copies() == {}
    st = node.stats()
    assert (st["overlapping_runs"], st["leaked_copies"], st["calls_while_running"]) == (0, 0, 0)


def test_a_call_that_fails_on_the_database_answers_500(tmp_path):
    db = tmp_path / "kuma.db"
    with Kumasim("node1", sqlite_path=str(db), cron=False) as node:
        import sqlite3
        c = sqlite3.connect(str(db))
        c.execute("DROP TABLE monitor")
        c.commit()
        c.close()
        status, _, body = node.request("POST", "/api/v1/reconcile-monitors",
                                       headers={"Authorization": KEY})
        assert status == 500 and b"monitor" in body
        run = node.runs()[-1]
        assert run["result"] == "db_error" and "monitor" in run["error"]
        assert node.stats()["reconcile_errors"] == 1


# ------------------------------------------------------------------------------------------------
# The timeline: when each copy began and stopped checking
# ------------------------------------------------------------------------------------------------

def now_ms():
    """Real-clock epoch ms, rounded down as kumasim's are (so `now_ms() <= later kumasim time`)."""
    return int(time.time() * 1000)


def copies_of(node, monitor_id):
    mons = node.timeline(monitor_id)["monitors"]
    return mons[0]["copies"] if mons else []


def test_the_timeline_has_each_copy_start_and_stop_on_the_real_clock(tmp_path, procs):
    cluster = SqliteCluster(str(tmp_path / "kuma.db"))
    t_boot = now_ms()
    # the node clock an hour ahead: the record stays on the real clock
    node = Kumasim("node1", store=cluster, cron=False, clock_skew_ms=3600000)
    procs.append(node)
    ids = seed_monitors(cluster, ["node2"] * 6)
    cluster.execute("UPDATE monitor SET node_id = 'node1' WHERE id = %s", (ids[0],))
    node.restart_process()             # starts monitor 1 at boot
    t_restart = now_ms()
    (boot_copy,) = copies_of(node, ids[0])
    assert boot_copy["started_by"] == "boot" and t_boot <= boot_copy["start_ms"] <= t_restart

    assign(cluster, ids[1:], "node1")  # five moved in
    t0 = now_ms()
    assert node.reconcile(KEY) == 200
    t1 = now_ms()
    run = node.runs()[-1]
    starts = []
    for i in ids[1:]:
        (c,) = copies_of(node, i)
        assert c["started_by"] == "run" and c["running"] and c["listed"], c
        assert c["stop_ms"] is None and c["leaked_ms"] is None
        starts.append(c["start_ms"])
    # each start is a step of the run: after the run began, ascending by id, a 100-300 ms
    # sleep after each, all before the answer
    assert t0 - 5 <= run["start_ms"] <= starts[0] and starts[-1] <= run["end_ms"] <= t1 + 5
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(95 <= g <= 320 for g in gaps), gaps

    assign(cluster, ids[1:3], "node2")  # two moved away
    t2 = now_ms()
    assert node.reconcile(KEY) == 200
    t3 = now_ms()
    for i in ids[1:3]:
        (c,) = copies_of(node, i)
        assert c["stopped_by"] == "run" and not c["running"], c
        assert max(t2, c["start_ms"]) <= c["stop_ms"] <= t3, (c, t2, t3)

    # bad settings are refused and change nothing
    for path in ("/_sim/timeline", "/_sim/timeline?cap=-1", "/_sim/timeline?clear=2"):
        assert node.request("POST", path)[0] == 400, path
    assert node.request("GET", "/_sim/timeline?id=x")[0] == 400
    assert node.timeline()["events"] == 1 + 5 + 2


def test_a_leaked_copy_has_no_stop_until_a_restart(tmp_path, procs):
    cluster = SqliteCluster(str(tmp_path / "kuma.db"))
    node = Kumasim("node1", store=cluster, cron=False)
    procs.append(node)
    ids = seed_monitors(cluster, ["node2"] * 10)
    assign(cluster, ids, "node1")
    results = []
    first = threading.Thread(target=timed_call, args=(node, results))
    first.start()
    time.sleep(0.8)
    timed_call(node, results)
    first.join(30)
    assign(cluster, ids, None)
    assert node.reconcile(KEY) == 200
    leaked = set(node.copies())
    assert leaked and node.monitors()["leaked_copies"] == len(leaked)

    tl = node.timeline()
    for m in tl["monitors"]:
        running = [c for c in m["copies"] if c["running"]]
        if m["id"] in leaked:
            # the copy the second run overwrote: dropped out of the list when the second
            # copy started, and never stopped since
            (c,) = running
            assert not c["listed"] and c["stop_ms"] is None and c["leaked_ms"] is not None
            second = [x for x in m["copies"] if x["copy"] > c["copy"]]
            assert second and second[0]["start_ms"] == c["leaked_ms"]
            assert second[0]["stopped_by"] == "run"
        else:
            assert running == [] and len(m["copies"]) == 1

    # a restart ends them: they stop then, and the record says so
    t0 = now_ms()
    node.restart_process()
    t1 = now_ms()
    for i in leaked:
        c = [x for x in copies_of(node, i) if x["leaked_ms"] is not None][0]
        assert c["stopped_by"] == "restart" and t0 <= c["stop_ms"] <= t1 and not c["running"]

    # clear: the record begins again; copies that run now are still reported, start unknown
    assign(cluster, ids[:2], "node1")
    assert node.reconcile(KEY) == 200
    t_clear = now_ms()
    info = node.clear_timeline()
    assert info["events"] == 0 and info["since_ms"] >= t_clear
    tl = node.timeline()
    assert [m["id"] for m in tl["monitors"]] == ids[:2]
    assert all(c["start_ms"] is None and c["running"] for m in tl["monitors"]
               for c in m["copies"])
    # bounded: the newest events are kept, the rest counted
    node.set_timeline_cap(1)
    assign(cluster, ids[:2], None)
    assert node.reconcile(KEY) == 200
    tl = node.timeline()
    assert (tl["cap"], tl["events"], tl["dropped"]) == (1, 1, 1)
    assert node.copy_intervals() == {ids[1]: [(None, tl["monitors"][0]["copies"][0]["stop_ms"],
                                              False)]}


# ------------------------------------------------------------------------------------------------
# The :00 cron
# ------------------------------------------------------------------------------------------------

def test_the_cron_reconciles_at_00_of_the_node_clock(cluster, procs):
    node = Kumasim("node1", store=cluster, clock_skew_ms=-12345)
    procs.append(node)
    st = node.stats()
    assert st["clock_skew_ms"] == -12345
    assert abs(st["node_clock_ms"] - (time.time() * 1000 - 12345)) < 2000
    # the next check that fires lies in second :00 of the node clock
    assert (st["next_cron_ms"] - 12345) % 60000 < 1000

    ids = seed_monitors(cluster, ["node1"] * 3)  # assigned after start: only a re-read sees them
    clock = node.set_clock(next_cron_in_ms=1500)
    boundary = time.time() * 1000 + 1500
    assert boundary - 200 <= clock["next_cron_ms"] <= boundary + 1000 + 200
    assert (clock["next_cron_ms"] + clock["clock_skew_ms"]) % 60000 < 1000
    assert node.runs() == []
    wait_until(lambda: node.stats()["runs_cron"] == 1, timeout=6, what="the cron run")
    run = node.runs()[-1]
    assert run["trigger"] == "cron" and run["to_start"] == 3
    # it began inside :00 of the node clock (after the database read: allow a little more)
    assert (run["start_ms"] + clock["clock_skew_ms"]) % 60000 < 1500, run
    wait_until(lambda: node.copies() == {i: 1 for i in ids}, timeout=5, what="monitors started")
    nxt = node.stats()["next_cron_ms"]
    assert 55000 < nxt - time.time() * 1000 < 61000  # next minute


def test_a_call_during_the_cron_run_overlaps_it(tmp_path, procs):
    node = Kumasim("node1", sqlite_path=str(tmp_path / "kuma.db"))
    procs.append(node)
    import sqlite3
    c = sqlite3.connect(str(tmp_path / "kuma.db"))
    c.executemany("INSERT INTO monitor (id, name, active, node_id) VALUES (?, ?, 1, 'node1')",
                  [(i, "m%d" % i) for i in range(1, 11)])
    c.commit()
    c.close()
    node.set_clock(next_cron_in_ms=300)
    wait_until(lambda: node.stats()["cron_runs_in_progress"] == 1, timeout=5, interval=0.01,
               what="the cron run in progress")
    time.sleep(0.5)
    assert node.reconcile(KEY) == 200
    st = node.stats()
    assert st["calls_during_cron"] == 1 and st["calls_while_running"] == 1
    assert st["overlapping_runs"] == 1
    wait_until(lambda: node.stats()["runs_in_progress"] == 0, timeout=10, what="runs done")
    assert node.stats()["leaked_copies"] >= 1


def test_a_stopped_node_skips_the_00_it_sleeps_through(tmp_path, procs):
    node = Kumasim("node1", sqlite_path=str(tmp_path / "kuma.db"))
    procs.append(node)
    # 3 s of margin: on a loaded machine the control call and SIGSTOP can take over a second,
    # and a freeze that lands after the :00 tests nothing
    clock = node.set_clock(next_cron_in_ms=3000)
    node.freeze()
    assert clock["next_cron_ms"] / 1000.0 - time.time() > 0.5, "froze too late to test the :00"
    try:
        # sleep through the whole :00 second
        time.sleep(max(0.0, clock["next_cron_ms"] / 1000.0 - time.time()) + 1.5)
    finally:
        node.thaw()
    st = wait_until(lambda: node.stats(), timeout=5, what="stats after SIGCONT")
    time.sleep(0.3)
    st = node.stats()
    assert st["runs_cron"] == 0 and st["cron_skipped"] == 1, st
    # the checks go on from the moment it resumed: the next :00 is a minute away
    assert st["next_cron_ms"] - time.time() * 1000 > 50000


def test_a_partitioned_node_answers_nothing_but_keeps_its_cron(tmp_path, procs):
    """Unlike SIGSTOP (nothing runs) and hang (only health hangs), a partition cuts the node
    off from its callers while it goes on running: the :00 re-read still happens."""
    node = Kumasim("node1", sqlite_path=str(tmp_path / "kuma.db"))
    procs.append(node)
    import sqlite3
    c = sqlite3.connect(str(tmp_path / "kuma.db"))
    c.executemany("INSERT INTO monitor (id, name, active, node_id) VALUES (?, ?, 1, 'node1')",
                  [(i, "m%d" % i) for i in range(1, 4)])
    c.commit()
    c.close()
    node.set_mode("partition")
    with pytest.raises(socket.timeout):
        node.health(timeout=0.5)
    with pytest.raises(socket.timeout):
        node.reconcile(KEY, timeout=0.5)
    with pytest.raises(socket.timeout):
        node.request("GET", "/", timeout=0.5)
    node.set_clock(next_cron_in_ms=200)
    wait_until(lambda: node.stats()["runs_cron"] == 1, timeout=5, what="cron while partitioned")
    wait_until(lambda: node.copies() == {1: 1, 2: 1, 3: 1}, timeout=5, what="monitors started")
    stuck = socket.create_connection((node.host, node.port), timeout=3)
    stuck.sendall(b"POST /api/v1/reconcile-monitors HTTP/1.1\r\nHost: x\r\nAuthorization: k\r\n"
                  b"Content-Length: 0\r\n\r\n")
    time.sleep(0.3)
    node.set_mode("healthy")
    # the call sent during the partition was lost, not delivered late
    try:
        assert stuck.recv(100) == b""
    except ConnectionResetError:
        pass
    stuck.close()
    st = node.stats()
    assert st["reconcile_calls"] == 0 and st["runs_call"] == 0
    assert node.health()[0] == 200 and node.reconcile(KEY) == 200


# ------------------------------------------------------------------------------------------------
# Rate limit and authentication
# ------------------------------------------------------------------------------------------------

def test_rate_limit_per_client_ip_on_api_v1_but_not_health(tmp_path, procs):
    node = Kumasim("node1", sqlite_path=str(tmp_path / "kuma.db"), rate_limit=5, cron=False)
    procs.append(node)
    statuses = [node.reconcile("Bearer x") for _ in range(4)]
    statuses.append(node.request("GET", "/api/v1/status-page/x")[0])  # every /api/v1 path counts
    assert statuses == [401, 401, 401, 401, 200]
    status, headers, body = node.request("POST", "/api/v1/reconcile-monitors",
                                         headers={"Authorization": KEY})
    assert status == 429
    assert int(headers["retry-after"]) > 800 and headers["x-ratelimit-limit"] == "5"
    assert headers["x-kuma-node"] == "node1" and b"Too many requests" in body
    assert node.reconcile(KEY) == 429
    # health is not limited, nor the control paths
    for _ in range(10):
        assert node.health()[0] == 200
    # another client address has its own budget
    assert node.reconcile(KEY, source="127.0.0.2") == 200
    st = node.stats()
    assert st["reconcile_rate_limited"] == 2 and st["rate_limit"] == 5
    assert st["calls_in_flight"] == 0
    # a new limit starts every client afresh; a short window opens again when it ends
    node.set_rate_limit(limit=1, window_ms=400)
    assert node.reconcile("Bearer x") == 401
    assert node.reconcile("Bearer x") == 429
    time.sleep(0.5)
    assert node.reconcile("Bearer x") == 401
    node.set_rate_limit(limit=0)
    assert all(node.reconcile("Bearer x") == 401 for _ in range(8))


def test_401_before_the_first_user_with_bearer_and_for_an_inactive_user(cluster, procs):
    node = Kumasim("node2", store=cluster, setup_done=False, cron=False)
    procs.append(node)
    status, headers, body = node.request("POST", "/api/v1/reconcile-monitors",
                                         headers={"Authorization": KEY})
    assert status == 401 and b"API key authentication failed" in body
    assert node.reconcile() == 401  # no header at all
    cluster.execute("INSERT INTO `user` (id, username, password, active) VALUES "
                    "(1, 'admin', 'x', 1)" if cluster.kind == "mariadb" else
                    "INSERT INTO user (id, username, password, active) VALUES (1, 'admin', 'x', 1)")
    # any value that does not start with "Bearer " passes: the node checks none
    assert node.reconcile(KEY) == 200
    assert node.reconcile("uk1_whatever") == 200
    assert node.reconcile("Bearer " + KEY) == 401
    cluster.execute("UPDATE %s SET active = 0 WHERE id = 1"
                    % ("`user`" if cluster.kind == "mariadb" else "user"))
    assert node.reconcile(KEY) == 401
    st = node.stats()
    assert st["reconcile_unauthorized"] == 4 and st["reconcile_calls"] == 2
    assert st["runs_call"] == 2


# ------------------------------------------------------------------------------------------------
# Health and the database
# ------------------------------------------------------------------------------------------------

class TcpCut:
    """A loopback TCP forwarder to MariaDB that a test can cut (connections refused and the open
    ones reset) and restore: the database becoming unreachable without stopping the server
    other tests share."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None
        self.port = None
        self.open()

    def open(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port or 0))
        ls.listen(16)
        self.port = ls.getsockname()[1]
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        # shutdown first: a plain close leaves the socket listening while accept() blocks on it
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.socks = []


class ProxiedMaria:
    def __init__(self, cluster, port):
        self.cluster, self.port = cluster, port

    def kumasim_args(self):
        return ["--db-host", "127.0.0.1", "--db-port", str(self.port), "--db-user", "kuma",
                "--db-password", "kumapw", "--db-name", self.cluster.dbname]


def test_health_is_503_at_once_while_the_database_is_unreachable(request, procs):
    server = request.getfixturevalue("mariadb_server")
    from kg_harness import MariaCluster
    name = "kg_sim_cut_%d" % os.getpid()
    subprocess.run(["mariadb", "--no-defaults", "-S", server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    cluster = MariaCluster(server, name)
    cut = TcpCut(server["port"])
    node = Kumasim("node1", store=ProxiedMaria(cluster, cut.port), cron=False)
    procs.append(node)
    status, doc = node.health()
    assert status == 200 and doc["ok"] is True and doc["status"] == "healthy"

    cut.cut()
    t0 = time.monotonic()
    status, doc = node.health(timeout=2.0)
    took = time.monotonic() - t0
    assert status == 503, doc
    assert doc["ok"] is False and doc["status"] == "unhealthy"
    assert doc["checks"]["database"]["status"] == "unhealthy"
    assert doc["checks"]["database"]["error"]
    print("503 after %.1f ms" % (took * 1000))
    for _ in range(3):
        assert node.health(timeout=2.0)[0] == 503
    # a reconcile call fails too, and says why
    assert node.reconcile(KEY, timeout=5) == 500
    assert node.stats()["health_db_failures"] >= 4

    cut.open()  # the database is reachable again: the next check reconnects
    assert node.health()[0] == 200
    assert node.reconcile(KEY) == 200


def test_the_database_check_can_be_shared_for_load_tests(tmp_path, procs):
    node = Kumasim("node1", sqlite_path=str(tmp_path / "kuma.db"),
                   extra_args=["--health-db-cache-ms", "60000"])
    procs.append(node)
    assert all(node.health()[0] == 200 for _ in range(20))


# ------------------------------------------------------------------------------------------------
# Many nodes from one process
# ------------------------------------------------------------------------------------------------

def test_one_process_serves_many_nodes_each_with_its_own_state(cluster, procs):
    fleet = KumasimFleet(20, prefix="p", store=cluster, delay_scale=0.1, rate_limit=3,
                         cron=False)
    procs.append(fleet)
    assert [n.node_id for n in fleet.nodes] == ["p%d" % i for i in range(1, 21)]
    assert len({n.port for n in fleet.nodes}) == 20
    rows = {r[0]: (r[1], r[2]) for r in cluster.query("SELECT node_id, host, status FROM node")}
    for n in fleet.nodes:
        assert rows[n.node_id] == ("127.0.0.1:%d" % n.port, "online")
        status, headers, _ = n.request("GET", "/api/v1/health")
        assert status == 200 and headers["x-kuma-node"] == n.node_id
    ids = seed_monitors(cluster, ["p3"] * 3 + ["p7"])
    p3, p7 = fleet.node("p3"), fleet.node("p7")
    assert p3.reconcile(KEY) == 200
    assert p3.copies() == {i: 1 for i in ids[:3]} and p7.copies() == {}
    assert p7.reconcile(KEY) == 200
    assert p7.copies() == {ids[3]: 1}
    # each node counts its own rate limit and its own runs
    assert [p7.reconcile("Bearer x") for _ in range(3)] == [401, 401, 429]
    assert p3.reconcile(KEY) == 200
    assert p3.stats()["runs_call"] == 2 and p7.stats()["runs_call"] == 1
    # a mode is per node
    p3.set_mode("503")
    assert p3.health()[0] == 503 and p7.health()[0] == 200
    assert fleet.stop() == 0


def test_nodes_of_one_process_whose_00_coincides_share_one_read(cluster, procs):
    fleet = KumasimFleet(5, prefix="q", store=cluster, delay_scale=0.1)
    procs.append(fleet)
    ids = seed_monitors(cluster, ["q1", "q2", "q3", "q4", "q5", "q5"])
    first = fleet.nodes[0].set_clock(next_cron_in_ms=400)
    clocks = [first] + [n.set_clock(skew_ms=first["clock_skew_ms"]) for n in fleet.nodes[1:4]]
    assert len({c["next_cron_ms"] for c in clocks}) == 1
    for n in fleet.nodes[:4]:
        wait_until(lambda: n.stats()["runs_cron"] >= 1, timeout=5, what="%s's cron" % n.node_id)
    for k, n in enumerate(fleet.nodes[:4]):
        wait_until(lambda: n.copies() == {ids[k]: 1}, timeout=5, what="%s started" % n.node_id)
    # one read of the monitor table served the four: their runs began together
    starts = [[r for r in n.runs() if r["trigger"] == "cron"][0]["start_ms"]
              for n in fleet.nodes[:4]]
    assert max(starts) - min(starts) < 200, starts
    # q5 was not moved to :00 and its natural :00 is most likely not now
    q5 = fleet.nodes[4].stats()
    if q5["runs_cron"] == 0:
        assert fleet.nodes[4].copies() == {}


def test_fleet_with_taken_port_fails_to_start(procs):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(KumasimError):
            KumasimFleet(3, base_port=port - 1, instant=True, startup_timeout=5)
    finally:
        blocker.close()
