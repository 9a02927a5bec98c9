"""Test harness for the real kumaguard daemon and its two cluster stores.

- MariaDB: a throwaway server started through scripts/mariadb-test-server.sh (own datadir, own
  port and socket), stopped at the end of the session.  Each test gets its own database.
- SQLite: the embedded default, a file in the test's temporary directory.
- Kumaguard: the real binary from $KG_BUILD_DIR, started with flags, stopped with SIGTERM; a
  sanitizer report or a non-zero exit fails the test.

Standard library + pymysql (Debian python3-pymysql) only.
"""

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("KG_BUILD_DIR", os.path.join(ROOT, "build"))


def wait_until(fn, timeout=10.0, interval=0.05, what="condition"):
    """Polls fn() until it returns a truthy value; returns it.  Fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # the thing polled may not be up yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


# ------------------------------------------------------------------------------------------------
# Cluster stores, as the tests see them (direct SQL, independent of kumaguard's code)
# ------------------------------------------------------------------------------------------------

class SqliteCluster:
    kind = "sqlite"

    def __init__(self, path):
        self.path = path

    def kumaguard_args(self):
        return ["--sqlite-path", self.path]

    def kumasim_args(self):
        """A simulated node on the same file (as a real node would be on a shared database)."""
        return ["--sqlite-path", self.path]

    def _conn(self):
        c = sqlite3.connect(self.path, timeout=10)
        c.execute("PRAGMA busy_timeout=10000")
        return c

    def execute(self, sql, params=()):
        sql = sql.replace("%s", "?")
        with self._conn() as c:
            cur = c.execute(sql, params)
            return cur.rowcount

    def executemany(self, sql, rows):
        sql = sql.replace("%s", "?")
        with self._conn() as c:
            c.executemany(sql, rows)

    def query(self, sql, params=()):
        sql = sql.replace("%s", "?")
        c = self._conn()
        try:
            return [tuple(r) for r in c.execute(sql, params).fetchall()]
        finally:
            c.close()

    def schema_ready(self):
        try:
            return bool(self.query("SELECT name FROM sqlite_master WHERE name='monitor'"))
        except sqlite3.Error:
            return False


class MariaCluster:
    kind = "mariadb"

    def __init__(self, server, dbname):
        import pymysql
        self._pymysql = pymysql
        self.server = server
        self.dbname = dbname

    def kumaguard_args(self):
        return ["--db-host", self.server["socket"], "--db-user", "kuma", "--db-password", "kumapw",
                "--db-name", self.dbname, "--init-schema"]

    def kumasim_args(self):
        return ["--db-socket", self.server["socket"], "--db-user", "kuma", "--db-password",
                "kumapw", "--db-name", self.dbname]

    def _conn(self):
        return self._pymysql.connect(unix_socket=self.server["socket"], user="kuma",
                                     password="kumapw", database=self.dbname, autocommit=True)

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
            return bool(self.query("SHOW TABLES LIKE 'monitor'"))
        except Exception:
            return False


def monitors(store):
    """{id: (active, node_id, assigned_node)} for every monitor row."""
    return {r[0]: (int(r[1]), r[2], r[3])
            for r in store.query("SELECT id, active, node_id, assigned_node FROM monitor")}


def effective_counts(store, active_only=True):
    rows = store.query("SELECT COALESCE(assigned_node, node_id), COUNT(*) FROM monitor %s "
                       "GROUP BY COALESCE(assigned_node, node_id)"
                       % ("WHERE active = 1" if active_only else ""))
    return {r[0]: int(r[1]) for r in rows}


def node_status(store):
    return {r[0]: r[1] for r in store.query("SELECT node_id, status FROM node")}


def seed_monitors(store, homes, start_id=1, active=1):
    """Inserts one monitor per entry of `homes` (a node id or None), ids from start_id."""
    rows = [(start_id + i, "m%d" % (start_id + i), active, 1, h) for i, h in enumerate(homes)]
    store.executemany("INSERT INTO monitor (id, name, active, user_id, node_id) VALUES "
                      "(%s, %s, %s, %s, %s)", rows)
    return [r[0] for r in rows]


# What a simulated node that answers reconcile calls at once costs (`Kumasim(instant=True)`: no
# database, no delays, no cron): the truth about those nodes, so kumaguard's pacing and cron
# windows do not stretch tests about database-level invariants (failover, revert, rebalance,
# resilience).  Exactly-once on the nodes themselves is tested with realistic nodes and
# kumaguard's default costs (test_exactly_once.py).
INSTANT_NODE_COSTS = ["--kuma-reconcile-base", "200ms", "--kuma-reconcile-start-cost", "2ms",
                      "--kuma-reconcile-stop-cost", "2ms"]


# ------------------------------------------------------------------------------------------------
# The daemon
# ------------------------------------------------------------------------------------------------

class Kumaguard:
    def __init__(self, tmpdir, store, nodes=(), extra=(), api_key=None, env=None, name="kg"):
        from kumasim_ctl import free_port
        self.port = free_port()
        self.listen = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.listen
        self.state_dir = os.path.join(str(tmpdir), name + "-state")
        self.log_path = os.path.join(str(tmpdir), name + ".log")
        args = [os.path.join(BUILD_DIR, "kumaguard"), "--listen", self.listen,
                "--state-dir", self.state_dir, "--refresh-interval", "500ms",
                "--log-level", "debug"]
        args += store.kumaguard_args()
        for n in nodes:
            args += ["--node", "%s=127.0.0.1:%d" % (n.node_id, n.port)]
        if api_key:
            args += ["--kuma-api-key", api_key]
        args += list(extra)
        e = dict(os.environ)
        e.update(env or {})
        self.args = args
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=e)
        wait_until(self._healthy, timeout=20, what="kumaguard /health")

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("kumaguard exited with %s:\n%s" % (self.proc.returncode,
                                                                    self.read_log()[-4000:]))
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return r.status in (200, 503)
        except urllib.error.HTTPError as e:
            return e.code in (200, 503)
        except OSError:
            return False

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, timeout=10):
        data = None
        h = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (
                body.encode() if isinstance(body, str) else body)
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get_json(self, path):
        status, _, body = self.request("GET", path)
        assert status == 200, "%s -> %s %s" % (path, status, body[:300])
        return json.loads(body)

    def node(self, node_id):
        """The node's document in /api/node-status (AssertionError when it is not listed)."""
        for n in self.get_json("/api/node-status")["nodes"]:
            if n["node_id"] == node_id:
                return n
        raise AssertionError("no node %s in /api/node-status" % node_id)

    def proven(self):
        """True when every online node has passed `rise` probes of this kumaguard (until then
        nothing is placed on it and rebalancing is refused)."""
        nodes = self.get_json("/api/node-status")["nodes"]
        return bool(nodes) and all(n["proven"] for n in nodes
                                   if n["state"] in ("online", "suspect"))

    def wait_leader(self, timeout=15):
        """Until this instance holds the lease (actions answer 409 not_leader before)."""
        return wait_until(lambda: self.get_json("/health")["leader"], timeout=timeout,
                          what="leadership")

    def wait_proven(self, timeout=15):
        return wait_until(self.proven, timeout=timeout, what="nodes proven by kumaguard's probes")

    def post(self, path, body=None, headers=None):
        status, _, raw = self.request("POST", path, body if body is not None else {}, headers)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def stop(self, check=True):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("kumaguard did not stop within 20 s of SIGTERM")
        self.log.close()
        if check:
            out = self.read_log()
            assert "ERROR: AddressSanitizer" not in out, out[-6000:]
            assert "runtime error:" not in out, out[-6000:]
            assert "ERROR: LeakSanitizer" not in out, out[-6000:]
            assert "WARNING: ThreadSanitizer" not in out, out[-6000:]
            assert self.proc.returncode == 0, "exit %s\n%s" % (self.proc.returncode, out[-4000:])
