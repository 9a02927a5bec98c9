"""Two real kumaguard controllers on different nodes of a real 3-node Galera cluster, with real
simulated Kuma nodes (kumasim): only one of them leads at any time, only the leader moves
monitors, leadership moves on when the leader's process or its database node dies, and
differing probe views do not make monitors go back and forth.

How "who leads" is seen, two ways:
- what a user sees: both controllers' /api/system-status, sampled every 100 ms;
- what each controller decided: its log's leader events (millisecond timestamps on the same
  machine), from which leadership intervals and their overlap are computed exactly; the
  interval of a controller killed with SIGKILL ends when it was killed.
How "who moved a monitor" is seen: a trigger on `monitor` records, inside the writing
transaction, which database node ran it and the lease row as that transaction saw it (the
fence wrote that row first).  Controller A always talks to node1 and B to node2, so the node
names the controller; a move by a controller that did not hold the lease would record the
other's name as holder.

Figures (takeover times, overlaps, generation churn) are printed at the end of the run."""

import datetime
import os
import re
import signal
import threading
import time

import pytest

from kg_harness import INSTANT_NODE_COSTS, Kumaguard, effective_counts, seed_monitors, wait_until
from kumasim_ctl import Kumasim, free_port

API_KEY = "ha-test-key"
TTL_S = int(os.environ.get("KG_HA_LEASE_TTL", "2"))  # seconds; 10 is the product default
FLAGS = ["--health-interval", "200ms", "--health-fast-interval", "100ms", "--health-timeout",
         "300ms", "--fall", "3", "--rise", "3", "--recovery-hold-down", "1s",
         "--db-timeout", "1s", "--lease-ttl", "%ds" % TTL_S] + INSTANT_NODE_COSTS
_counter = [0]


# ------------------------------------------------------------------------------------------------
# The cluster database as a test sees it
# ------------------------------------------------------------------------------------------------

class GaleraDb:
    """One database on the Galera cluster; kumaguard_args(k) points a controller at node k."""

    kind = "mariadb"

    def __init__(self, galera, name):
        import pymysql
        self._pymysql = pymysql
        self.galera = galera
        self.name = name
        self.node = 1  # where this object's own queries go
        galera.sql(1, "CREATE DATABASE %s" % name)

    def kumaguard_args(self, k):
        return ["--db-host", self.galera.socket(k), "--db-user", "kuma", "--db-password",
                "kumapw", "--db-name", self.name, "--init-schema"]

    def _conn(self):
        for k in (self.node, 1, 2, 3):  # a node may be down in the middle of a test
            try:
                c = self._pymysql.connect(unix_socket=self.galera.socket(k), user="root",
                                          database=self.name, autocommit=True,
                                          connect_timeout=3, read_timeout=20)
                with c.cursor() as cur:
                    cur.execute("SET SESSION wsrep_sync_wait = 1")  # see all committed writes
                return c
            except Exception:
                continue
        raise RuntimeError("no Galera node answers")

    def execute(self, sql, params=()):
        c = self._conn()
        try:
            with c.cursor() as cur:
                return cur.execute(sql, params)
        finally:
            c.close()

    def executemany(self, sql, rows):
        c = self._conn()
        try:
            with c.cursor() as cur:
                cur.executemany(sql, rows)
        finally:
            c.close()

    def query(self, sql, params=()):
        c = self._conn()
        try:
            with c.cursor() as cur:
                cur.execute(sql, params)
                return [tuple(r) for r in cur.fetchall()]
        finally:
            c.close()

    def schema_ready(self):
        try:
            return bool(self.query("SHOW TABLES LIKE 'kumaguard_leader'")) and bool(
                self.query("SHOW TABLES LIKE 'monitor'"))
        except Exception:
            return False

    def install_audit(self):
        """Records every change of a monitor's home or override: node, lease holder, gen."""
        self.execute("CREATE TABLE kg_audit (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                     " monitor_id INT, old_home VARCHAR(50), new_home VARCHAR(50),"
                     " old_over VARCHAR(255), new_over VARCHAR(255), node VARCHAR(64),"
                     " holder VARCHAR(128), gen BIGINT, ts DATETIME(6)) ENGINE=InnoDB")
        self.execute("CREATE TRIGGER kg_audit_monitor AFTER UPDATE ON monitor FOR EACH ROW"
                     " IF NOT (OLD.node_id <=> NEW.node_id AND"
                     " OLD.assigned_node <=> NEW.assigned_node) THEN"
                     " INSERT INTO kg_audit (monitor_id, old_home, new_home, old_over, new_over,"
                     " node, holder, gen, ts) SELECT OLD.id, OLD.node_id, NEW.node_id,"
                     " OLD.assigned_node, NEW.assigned_node, @@wsrep_node_name, holder,"
                     " generation, NOW(6) FROM kumaguard_leader WHERE id = 1;"
                     " END IF")

    def audit(self):
        return self.query("SELECT monitor_id, node, holder, gen, new_over, new_home"
                          " FROM kg_audit ORDER BY id")

    def generation(self):
        rows = self.query("SELECT generation FROM kumaguard_leader WHERE id = 1")
        return int(rows[0][0]) if rows else 0


def new_db(galera):
    _counter[0] += 1
    return GaleraDb(galera, "kg_ha_%d_%d" % (os.getpid(), _counter[0]))


# ------------------------------------------------------------------------------------------------
# Controllers and what they decided
# ------------------------------------------------------------------------------------------------

class Ctl:
    """One kumaguard on Galera node `k`, named ctl-<side>-<n> (side a = node1, b = node2)."""

    def __init__(self, tmp_path, db, k, name, nodes, extra=()):
        self.name = name
        self.k = k
        self.killed_at = None
        self.kg = Kumaguard(tmp_path, _DbOnNode(db, k), nodes=nodes, api_key=API_KEY,
                            name=name, extra=FLAGS + ["--instance-id", name] + list(extra))

    def is_leader(self):
        try:
            return self.kg.get_json("/api/system-status")["controller"]["is_leader"]
        except Exception:
            return None

    def db_ok(self):
        try:
            return self.kg.get_json("/api/system-status")["database"]["ok"] is True
        except Exception:
            return False

    def kill(self):
        self.killed_at = time.time()
        self.kg.proc.send_signal(signal.SIGKILL)
        self.kg.proc.wait()

    def intervals(self):
        """Leadership intervals [start, end) in epoch seconds from the log's leader events."""
        out, start = [], None
        for line in self.kg.read_log().splitlines():
            m = LEADER_RE.match(line)
            if not m:
                continue
            ts = parse_ts(m.group(1))
            if m.group(3) == "leader" and start is None:
                start = ts
            elif m.group(3) != "leader" and start is not None:
                out.append((start, ts))
                start = None
        if start is not None:
            end = self.killed_at if self.killed_at else (
                time.time() if self.kg.proc.poll() is None else self.stop_time())
            out.append((start, end))
        return out

    def stop_time(self):
        for line in reversed(self.kg.read_log().splitlines()):
            if "signal 15: stopping" in line:
                return parse_ts(line.split()[0])
        return time.time()

    def became_leader_after(self, t):
        for s, _ in self.intervals():
            if s >= t:
                return s
        return None


class _DbOnNode:
    def __init__(self, db, k):
        self.db, self.k = db, k

    def kumaguard_args(self):
        return self.db.kumaguard_args(self.k)


LEADER_RE = re.compile(r"^(\S+Z) info\s+event leader node=\S* from=(\w+) to=(\w+)")


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def overlap(ctls):
    """Longest time two of these controllers both led, by their own logs (seconds)."""
    worst = 0.0
    for i, a in enumerate(ctls):
        for b in ctls[i + 1:]:
            for s1, e1 in a.intervals():
                for s2, e2 in b.intervals():
                    worst = max(worst, min(e1, e2) - max(s1, s2))
    return worst


class Sampler:
    """Samples every controller's is_leader every 100 ms in a thread (what a user sees)."""

    def __init__(self):
        self.ctls = []
        self.both = []  # (time, names) where two or more said leader
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def add(self, c):
        self.ctls.append(c)

    def _run(self):
        while not self._stop.is_set():
            t = time.time()
            leaders = [c.name for c in list(self.ctls)
                       if c.kg.proc.poll() is None and c.is_leader()]
            self.samples += 1
            if len(leaders) > 1:
                self.both.append((t, leaders))
            self._stop.wait(0.1)

    def stop(self):
        self._stop.set()
        self._t.join(5)


def check_audit(db, what):
    """Every monitor change was made by the controller the lease row named: node1 = side a."""
    rows = db.audit()
    for monitor_id, node, holder, gen, _, _ in rows:
        side = {"node1": "ctl-a", "node2": "ctl-b"}.get(node)
        assert side and holder.startswith(side), (
            "%s: monitor %s changed on %s while the lease said %s (generation %s)"
            % (what, monitor_id, node, holder, gen))
    return rows


def start_nodes(procs):
    # instant nodes: this is about who leads and who writes, not about the nodes' reconcile
    nodes = [Kumasim("node%d" % i, instant=True, api_key=API_KEY) for i in (1, 2, 3)]
    procs.extend(nodes)
    return nodes


def settle(db, a, what):
    wait_until(lambda: a.is_leader() is True, timeout=20, what="%s leads" % what)
    wait_until(db.schema_ready, timeout=10, what="schema")


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def test_leader_process_dies_takeover_without_overlap(galera, tmp_path, procs, figures):
    """The leader's process is killed (SIGKILL) or stopped (SIGTERM, which releases the lease),
    alternately, four times; a fresh follower is started each round.  Meanwhile a Kuma node dies
    and comes back, so both sides move monitors."""
    db = new_db(galera)
    nodes = start_nodes(procs)
    sampler = Sampler()
    ctls = []
    try:
        a = Ctl(tmp_path, db, 1, "ctl-a-0", nodes)
        procs.append(a.kg)
        ctls.append(a)
        sampler.add(a)
        settle(db, a, "ctl-a-0")
        db.install_audit()
        ids = seed_monitors(db, ["node1", "node2", "node3"] * 100)
        b = Ctl(tmp_path, db, 2, "ctl-b-0", nodes)
        procs.append(b.kg)
        ctls.append(b)
        sampler.add(b)
        time.sleep(2)
        assert (a.is_leader(), b.is_leader()) == (True, False)

        nodes[2].kill()  # the leader fails node3 over
        wait_until(lambda: "node3" not in effective_counts(db), timeout=20,
                   what="node3's monitors moved")
        leader, follower = a, b
        for rnd in range(4):
            how = "SIGKILL" if rnd % 2 == 0 else "SIGTERM"
            t0 = time.time()
            if how == "SIGKILL":
                leader.kill()
            else:
                leader.kg.stop()
            wait_until(lambda: follower.is_leader() is True, timeout=6 * TTL_S + 10,
                       what="%s takes over after %s" % (follower.name, how))
            took = follower.became_leader_after(t0 - 0.001) - t0
            figures.append(("takeover after leader %s (lease TTL %d s)" % (how, TTL_S), took,
                            "s"))
            if rnd == 0:
                nodes[2].restart()  # node3 back: the new leader reverts its monitors
                wait_until(lambda: effective_counts(db).get("node3", 0) == 100, timeout=20,
                           what="node3's monitors reverted by %s" % follower.name)
            side = "a" if leader.k == 1 else "b"
            fresh = Ctl(tmp_path, db, leader.k, "ctl-%s-%d" % (side, rnd + 1), nodes)
            procs.append(fresh.kg)
            ctls.append(fresh)
            sampler.add(fresh)
            leader, follower = follower, fresh
            time.sleep(1)
            assert fresh.is_leader() is False, "a new controller took a held lease"
        assert sorted(r[0] for r in db.query("SELECT id FROM monitor")) == sorted(ids)
    finally:
        sampler.stop()
    worst = overlap(ctls)
    figures.append(("leadership overlap by the logs, leader process dies (worst)", worst, "s"))
    figures.append(("samples where two controllers said leader (of %d)" % sampler.samples,
                    len(sampler.both), ""))
    assert worst <= 0, "two controllers led at once for %.3f s" % worst
    assert not sampler.both, "both said leader: %s" % sampler.both[:5]
    rows = check_audit(db, "process deaths")
    assert {r[1] for r in rows} == {"node1", "node2"}, "both sides should have moved: %s" % (
        sorted({(r[1], r[2]) for r in rows}))
    for c in ctls:
        if c.kg.proc.poll() is None:
            c.kg.stop()


def test_leaders_galera_node_dies_takeover_without_overlap(galera, tmp_path, procs, figures):
    """The database node the leader talks to is killed (SIGKILL of mariadbd), twice: first
    node1 under A, then — once node1 rejoined — node2 under the new leader B.  The leader
    steps down on its own clock; the other takes over once the lease expired and the surviving
    nodes formed a primary component."""
    db = new_db(galera)
    nodes = start_nodes(procs)
    sampler = Sampler()
    a = Ctl(tmp_path, db, 1, "ctl-a-0", nodes)
    procs.append(a.kg)
    sampler.add(a)
    try:
        settle(db, a, "ctl-a-0")
        db.install_audit()
        seed_monitors(db, ["node1", "node2", "node3"] * 100)
        b = Ctl(tmp_path, db, 2, "ctl-b-0", nodes)
        procs.append(b.kg)
        sampler.add(b)
        time.sleep(2)
        assert (a.is_leader(), b.is_leader()) == (True, False)
        for leader, follower in ((a, b), (b, a)):
            # measure the takeover, not a reconnect back-off from the previous round
            wait_until(lambda: follower.db_ok() and leader.db_ok(), timeout=60,
                       what="both controllers reach their database nodes")
            db.node = 3  # our own queries avoid the node about to die
            t0 = time.time()
            galera.kill_node(leader.k)
            wait_until(lambda: follower.is_leader() is True, timeout=60,
                       what="%s takes over when node%d dies" % (follower.name, leader.k))
            took = follower.became_leader_after(t0 - 0.001) - t0
            stepped = [e for s, e in leader.intervals() if e >= t0]
            figures.append(("takeover after the leader's Galera node is killed (TTL %d s)"
                            % TTL_S, took, "s"))
            if stepped:
                figures.append(("old leader stepped down after its node was killed",
                                stepped[0] - t0, "s"))
            # the follower moves monitors now: a Kuma node dies and is failed over
            galera.start_node(leader.k)
            wait_until(lambda: galera.size(3) == 3, timeout=60, what="node rejoined")
            time.sleep(1)
    finally:
        sampler.stop()
    worst = overlap([a, b])
    figures.append(("leadership overlap by the logs, leader's Galera node dies (worst)", worst,
                    "s"))
    assert worst <= 0, "two controllers led at once for %.3f s" % worst
    assert not sampler.both, "both said leader: %s" % sampler.both[:5]
    check_audit(db, "node deaths")
    a.kg.stop()
    b.kg.stop()


def test_differing_probe_views_do_not_ping_pong(galera, tmp_path, procs, figures):
    """A cannot reach node3 (its configuration points at a dead port), B can.  Only the leader's
    view moves monitors: A (leading) moves node3's monitors away once; B, following, moves
    nothing and the lease does not change hands (no churn).  When A stops, B leads and brings
    them back once.  Nothing goes back and forth."""
    db = new_db(galera)
    nodes = start_nodes(procs)
    dead = free_port()
    sampler = Sampler()
    a = Ctl(tmp_path, db, 1, "ctl-a-0", nodes[:2],
            extra=["--node", "node3=127.0.0.1:%d" % dead])
    procs.append(a.kg)
    sampler.add(a)
    try:
        settle(db, a, "ctl-a-0")
        db.install_audit()
        seed_monitors(db, ["node1", "node2", "node3"] * 100)
        b = Ctl(tmp_path, db, 2, "ctl-b-0", nodes)
        procs.append(b.kg)
        sampler.add(b)
        wait_until(lambda: "node3" not in effective_counts(db), timeout=20,
                   what="A moves node3's monitors away")
        gen0, t0, moves0 = db.generation(), time.time(), len(db.audit())
        time.sleep(20)
        gen1, t1, moves1 = db.generation(), time.time(), len(db.audit())
        churn = (gen1 - gen0) / (t1 - t0) * 60
        figures.append(("generation churn per minute, settled (differing probe views)", churn,
                        "/min"))
        assert gen1 == gen0, "the lease changed hands while settled: %d -> %d" % (gen0, gen1)
        assert moves1 == moves0, "monitors moved while settled (%d more)" % (moves1 - moves0)
        assert (a.is_leader(), b.is_leader()) == (True, False)

        a.kg.stop()  # releases the lease: B leads and sees node3 healthy
        wait_until(lambda: effective_counts(db).get("node3", 0) == 100, timeout=30,
                   what="B brings node3's monitors back")
        time.sleep(8)
    finally:
        sampler.stop()
    rows = check_audit(db, "differing views")
    per_monitor = {}
    for monitor_id, node, *_ in rows:
        per_monitor.setdefault(monitor_id, []).append(node)
    assert len(per_monitor) == 100, "only node3's 100 monitors should have moved"
    flaps = [m for m, seq in per_monitor.items() if seq != ["node1", "node2"]]
    assert not flaps, "monitors moved more than away-and-back: %s" % (
        [(m, per_monitor[m]) for m in flaps[:5]])
    assert overlap([a, b]) <= 0
    assert not sampler.both
    b.kg.stop()
