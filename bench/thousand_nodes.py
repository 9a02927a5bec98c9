#!/usr/bin/env python3
"""kumaguard at scale (issue 15, "A thousand nodes" and "A light touch on the shared database"):
1,000 simulated Kuma nodes, 1,000,000 monitors on a throwaway MariaDB, a real nginx.

Sets up, on loopback only, and removes again at the end (or on Ctrl-C / an error):
  - a throwaway MariaDB (scripts/mariadb-test-server.sh) with a production-like buffer pool and
    per-user statistics (userstat), so kumaguard's own load on it is told apart from the nodes';
  - N monitors homed M per node (node ids n1..nN), inserted in one INSERT ... SELECT;
  - one kumasim process serving the N nodes (realistic mode on the same database: each node
    registers its own `node` row with its listen address and answers /api/v1/health from a
    SELECT 1 on the database; --instant for the kinder node without a database);
  - a private nginx running the shipped sample site (tests/integration/nginx_ctl.py), whose
    include kumaguard renders, validates with `nginx -t` and reloads;
  - the plain build's kumaguard (KG_BUILD_DIR, default ./build) on that database with probes
    every 1 s (fast 250 ms, timeout 1 s), KUMA_API_KEY set, NGINX_INCLUDE_PATH set.
Then measures and prints each figure next to its goal:
  1. kumaguard CPU over a steady-state window (/proc utime+stime), % of one core (< 20 %);
     probe sweep: how stale the newest probe of each node gets, and how long a triggered
     sweep over every node takes against the slowest node's answer;
  2. kumaguard VmRSS / VmHWM in steady state and after a failover (<= 64 MB);
  3. /api/node-status and /api/system-status under wrk -c64: p50 / p99 (< 50 ms p99), sizes;
  4. nginx include: render + nginx -t + reload for N nodes (< 1 s);
  5. failover of one node's M monitors: from the offline verdict to the moves committed in the
     database (< 0.3 s), and whether reconcile pacing held any move back;
  6. kumaguard's database touch in steady state: rows read and server CPU per minute (its own
     user in USER_STATISTICS, and the whole server from /proc), goal <= 1 % of one core; and a
     monitor added, deactivated and re-pinned by SQL is seen within the refresh interval.
The steady-state window is measured twice (before and after the failover) and the machine's
other load (CPU not used by the processes started here) is printed with it.

  /usr/bin/python3 bench/thousand_nodes.py [--nodes 1000] [--per-node 1000] [--window 60]
        [--instant] [--wrk-seconds 10] [--keep-logs DIR] [--perf SECONDS]
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("KG_BUILD_DIR", os.path.join(ROOT, "build"))
BUILD = os.environ["KG_BUILD_DIR"]

from kumasim_ctl import KumasimFleet, free_port  # noqa: E402
from nginx_ctl import Nginx, sample_site  # noqa: E402

KEY = "bench-key"
TICK = os.sysconf("SC_CLK_TCK")
DEADLINE = None  # monotonic time after which the whole run gives up


def log(msg):
    print("[%7.1f s] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


def check_deadline(what):
    if DEADLINE and time.monotonic() > DEADLINE:
        raise TimeoutError("run time limit reached during " + what)


def wait_until(fn, timeout, what, interval=0.2):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        check_deadline(what)
        try:
            last = fn()
        except Exception as e:  # not up yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError("timed out after %.0f s waiting for %s (last: %.300r)" % (timeout, what, last))


# ---------------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------------

def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def mem_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def machine_busy_s():
    """Busy CPU seconds of the whole machine (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK


def children_of(pids):
    """pids and every descendant (nginx workers, the shell of a command)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(parents.get(p, []))
    return out


def group_cpu_s(pids):
    total = 0.0
    for p in pids:
        try:
            total += cpu_s(p)
        except OSError:
            pass
    return total


# ---------------------------------------------------------------------------------------------
# The throwaway database
# ---------------------------------------------------------------------------------------------

class Database:
    def __init__(self, tmp):
        import pymysql
        self.pymysql = pymysql
        self.dir = os.path.join(tmp, "db")
        self.sock = os.path.join(self.dir, "sock")
        self.script = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")
        self.started = False
        self._c = None

    def start(self):
        env = dict(os.environ)
        # a buffer pool that holds the table, as a production server would; userstat so that
        # kumaguard's rows and CPU are counted apart from the nodes'
        env["KG_MARIADB_OPTS"] = ("--innodb-buffer-pool-size=1G --innodb-log-file-size=256M "
                                  "--max-connections=400 --userstat=1")
        subprocess.run([self.script, "start", self.dir, str(free_port())], check=True, env=env)
        self.started = True
        with open(os.path.join(self.dir, "pid")) as f:
            self.pid = int(f.read().strip())

    def stop(self):
        if self._c:
            try:
                self._c.close()
            except Exception:
                pass
            self._c = None
        if self.started:
            subprocess.run([self.script, "stop", self.dir])
            self.started = False

    def root(self, sql):
        subprocess.run(["mariadb", "--no-defaults", "-S", self.sock, "-uroot", "-e", sql],
                       check=True)

    def conn(self):
        if self._c is None:
            self._c = self.pymysql.connect(unix_socket=self.sock, user="root", database="kuma",
                                           autocommit=True)
        return self._c

    def query(self, sql, args=()):
        with self.conn().cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def execute(self, sql, args=()):
        with self.conn().cursor() as cur:
            return cur.execute(sql, args)

    def global_status(self):
        rows = self.query("SELECT variable_name, variable_value FROM "
                          "information_schema.global_status WHERE variable_name LIKE "
                          "'HANDLER\\_READ\\_%%' OR variable_name IN ('ROWS_READ', 'QUESTIONS')")
        return {k.lower(): int(v) for k, v in rows}

    def user_stats(self, user):
        rows = self.query("SELECT rows_read, cpu_time, busy_time, select_commands, "
                          "update_commands, other_commands, rows_sent FROM "
                          "information_schema.user_statistics WHERE user = %s", (user,))
        if not rows:
            return {"rows_read": 0, "cpu_time": 0.0, "busy_time": 0.0, "select": 0,
                    "update": 0, "other": 0, "rows_sent": 0}
        r = rows[0]
        return {"rows_read": int(r[0]), "cpu_time": float(r[1]), "busy_time": float(r[2]),
                "select": int(r[3]), "update": int(r[4]), "other": int(r[5]),
                "rows_sent": int(r[6])}


class NodeStore:
    """kumasim's database options (the nodes connect as user kuma)."""

    def __init__(self, db):
        self.db = db

    def kumasim_args(self):
        return ["--db-socket", self.db.sock, "--db-user", "kuma", "--db-password", "kumapw",
                "--db-name", "kuma"]


SCHEMA = [
    # as the Kuma nodes' migrations create them (the columns kumaguard and kumasim use)
    "CREATE TABLE IF NOT EXISTS node (node_id VARCHAR(50) NOT NULL PRIMARY KEY,"
    " node_name VARCHAR(100) NOT NULL, location VARCHAR(100) NULL, hostname VARCHAR(255) NULL,"
    " host VARCHAR(45) NULL, status VARCHAR(20) DEFAULT 'online', active BOOLEAN DEFAULT 1,"
    " is_primary BOOLEAN DEFAULT 0,"
    " created_date TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,"
    " modified_date TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,"
    " last_seen TIMESTAMP NULL DEFAULT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS monitor (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(150) NULL, active BOOLEAN NOT NULL DEFAULT 1, user_id INT NULL,"
    " node_id VARCHAR(50) NULL, assigned_node VARCHAR(255) NULL,"
    " KEY monitor_node_id (node_id), KEY monitor_assigned_node (assigned_node)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `user` (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " username VARCHAR(255) NOT NULL, password VARCHAR(255) NULL,"
    " active BOOLEAN NOT NULL DEFAULT 1, UNIQUE KEY user_username (username)) ENGINE=InnoDB",
]


def seed(db, nodes, per_node):
    db.root("CREATE USER 'kg'@'localhost' IDENTIFIED BY 'kgpw'; "
            "GRANT ALL ON kuma.* TO 'kg'@'localhost';")
    for sql in SCHEMA:
        db.execute(sql)
    n = nodes * per_node
    t = time.monotonic()
    db.execute("INSERT INTO monitor (id, name, active, user_id, node_id) SELECT seq, "
               "CONCAT('monitor ', seq), 1, 1, CONCAT('n', (seq - 1) DIV %d + 1) FROM "
               "seq_1_to_%d" % (per_node, n))
    log("seeded %d monitors (%d per node) in %.1f s" % (n, per_node, time.monotonic() - t))


# ---------------------------------------------------------------------------------------------
# kumaguard
# ---------------------------------------------------------------------------------------------

class Kumaguard:
    def __init__(self, tmp, db, ngx, extra, env=None):
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(tmp, "kumaguard.log")
        self.args = [os.path.join(BUILD, "kumaguard"), "--listen", "127.0.0.1:%d" % self.port,
                     "--state-dir", os.path.join(tmp, "kg-state"),
                     "--db-host", db.sock, "--db-user", "kg", "--db-password", "kgpw",
                     "--db-name", "kuma", "--init-schema",
                     "--health-interval", "1s", "--health-fast-interval", "250ms",
                     "--health-timeout", "1s", "--kuma-api-key", KEY,
                     "--nginx-include", ngx.include_path, "--nginx-test-cmd", ngx.test_cmd,
                     "--nginx-reload-cmd", ngx.reload_cmd,
                     "--log-level", "info"] + list(extra)
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=self.env)
        self.pid = self.proc.pid
        wait_until(lambda: self.alive() and self.get("/health"), 30, "kumaguard /health")

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError("kumaguard exited with %s; log %s" % (self.proc.returncode,
                                                                     self.log_path))
        return True

    def raw(self, path, method="GET", timeout=30):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path):
        status, body = self.raw(path)
        if status != 200:
            raise RuntimeError("%s -> %d %.200r" % (path, status, body))
        return json.loads(body)

    def post(self, path):
        return self.raw(path, "POST")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self.log.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def ts(iso):
    """API time (ISO 8601, UTC) -> epoch seconds."""
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------

def steady_window(kg, db, fleet, ngx, seconds):
    """kumaguard CPU, MariaDB CPU, kumaguard's rows/CPU on MariaDB, the machine's other load."""
    ours = children_of([kg.pid, db.pid, fleet.pid, ngx.proc.pid, os.getpid()])
    g0, u0, m0 = db.global_status(), db.user_stats("kg"), machine_busy_s()
    k0, d0, o0 = cpu_s(kg.pid), cpu_s(db.pid), group_cpu_s(ours)
    w0 = time.monotonic()
    load0 = open("/proc/loadavg").read().split()[:3]
    time.sleep(seconds)
    kg.alive()
    ours = children_of([kg.pid, db.pid, fleet.pid, ngx.proc.pid, os.getpid()])
    dt = time.monotonic() - w0
    k1, d1, o1, m1 = cpu_s(kg.pid), cpu_s(db.pid), group_cpu_s(ours), machine_busy_s()
    g1, u1 = db.global_status(), db.user_stats("kg")
    per_min = 60.0 / dt
    return {
        "seconds": dt,
        "kg_cpu_pct": 100.0 * (k1 - k0) / dt,
        "db_cpu_pct": 100.0 * (d1 - d0) / dt,
        "db_cpu_s_per_min": (d1 - d0) * per_min,
        "kg_db_rows_per_min": (u1["rows_read"] - u0["rows_read"]) * per_min,
        "kg_db_rows_sent_per_min": (u1["rows_sent"] - u0["rows_sent"]) * per_min,
        "kg_db_cpu_s_per_min": (u1["cpu_time"] - u0["cpu_time"]) * per_min,
        "kg_db_busy_s_per_min": (u1["busy_time"] - u0["busy_time"]) * per_min,
        "kg_db_statements_per_min": (u1["select"] + u1["update"] + u1["other"] - u0["select"]
                                     - u0["update"] - u0["other"]) * per_min,
        "db_rows_read_per_min": (g1["rows_read"] - g0["rows_read"]) * per_min,
        "db_handler_reads_per_min": sum(g1[k] - g0[k] for k in g1 if k.startswith("handler_read"))
        * per_min,
        "others_cpu_pct": 100.0 * max(0.0, (m1 - m0) - (o1 - o0)) / dt,
        "ours_cpu_pct": 100.0 * (o1 - o0) / dt,
        "loadavg": " ".join(load0),
    }


def sweep_staleness(kg, samples, interval=1.0):
    """For each sample of /api/health-check-status: generated_at - last_probe per node."""
    worst, all_ages, lat = 0.0, [], []
    for _ in range(samples):
        doc = kg.get("/api/health-check-status")
        gen = ts(doc["generated_at"]) if doc.get("generated_at") else time.time()
        for n in doc["nodes"]:
            if n.get("last_probe"):
                age = gen - ts(n["last_probe"])
                all_ages.append(age)
                worst = max(worst, age)
            if n.get("last_latency_ms") is not None:
                lat.append(n["last_latency_ms"])
        time.sleep(interval)
    all_ages.sort()
    lat.sort()
    return {"max_age_s": worst, "p99_age_s": all_ages[int(0.99 * (len(all_ages) - 1))],
            "median_age_s": statistics.median(all_ages), "max_latency_ms": lat[-1],
            "p99_latency_ms": lat[int(0.99 * (len(lat) - 1))]}


def triggered_sweep(kg, n_nodes, timeout=20):
    """POST /api/trigger-health-check; time until every node's last_probe is after it."""
    t0 = time.time()
    status, body = kg.post("/api/trigger-health-check")
    if status not in (200, 202):
        raise RuntimeError("trigger-health-check -> %d %r" % (status, body))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        doc = kg.get("/api/health-check-status")
        probed = [n for n in doc["nodes"] if n.get("last_probe") and ts(n["last_probe"]) >= t0]
        if len(probed) >= n_nodes:
            done = max(ts(n["last_probe"]) for n in probed)
            slowest = max(n["last_latency_ms"] or 0 for n in probed)
            return {"sweep_s": done - t0, "slowest_answer_ms": slowest}
        time.sleep(0.02)
    raise TimeoutError("triggered sweep did not reach every node in %d s" % timeout)


def wrk(url, seconds, conns=64, threads=2):
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds,
                          "--timeout", "5s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(v):
        m = re.match(r"([\d.]+)(us|ms|s)", v)
        x = float(m.group(1))
        return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"p50_ms": ms(p50.group(1)) if p50 else None, "p99_ms": ms(p99.group(1)) if p99 else None,
            "rps": float(rps.group(1)) if rps else None, "non2xx": int(errs.group(1)) if errs else 0,
            "socket_errors": sock.group(1) if sock else "", "raw": out}


def events(kg, limit=200):
    return kg.get("/api/failover-history?limit=%d" % limit)["events"]


def failover(kg, db, fleet, victim_id, per_node, tmp):
    """Takes one node down (its health answers 503), then times the offline verdict, the plan
    and the moves committed (polled in the database on the node_id index)."""
    victim = fleet.node(victim_id)
    # keep the failover away from the nodes' :00 cron (pacing is checked separately below):
    # start when the wall clock second is in [10, 30)
    while not 10 <= datetime.datetime.now().second < 30:
        time.sleep(0.2)
    t_fault = time.time()
    victim.set_mode("503")
    q = ("SELECT COUNT(*) FROM monitor WHERE node_id = %s AND active = 1 AND "
         "COALESCE(assigned_node, node_id) = node_id")
    c = db.pymysql.connect(unix_socket=db.sock, user="root", database="kuma", autocommit=True)
    t_committed = None
    remaining = []
    try:
        end = time.monotonic() + 30
        with c.cursor() as cur:
            while time.monotonic() < end:
                cur.execute(q, (victim_id,))
                left = cur.fetchone()[0]
                now = time.time()
                remaining.append((now, left))
                if left == 0:
                    t_committed = now
                    break
                time.sleep(0.005)
    finally:
        c.close()
    if t_committed is None:
        raise TimeoutError("the victim's monitors were not all moved within 30 s")
    evs = wait_until(lambda: [e for e in events(kg) if e["kind"] == "failover"
                              and e.get("node") == victim_id and ts(e["time"]) >= t_fault], 10,
                     "failover event")
    evs_all = events(kg)
    offline = [e for e in evs_all if e["kind"] == "state_change" and e.get("node") == victim_id
               and e.get("to") == "offline" and ts(e["time"]) >= t_fault]
    suspect = [e for e in evs_all if e["kind"] == "state_change" and e.get("node") == victim_id
               and e.get("to") == "suspect" and ts(e["time"]) >= t_fault]
    t_off = ts(offline[-1]["time"])
    fo = evs[-1]
    # when the last row left: the poll before the one that saw 0 bounds it from below
    before = [t for t, left in remaining if left > 0]
    return {
        "t_fault": t_fault,
        "first_failure_after_fault_s": (ts(suspect[-1]["time"]) - t_fault) if suspect else None,
        "offline_after_fault_s": t_off - t_fault,
        "failover_event_after_offline_s": ts(fo["time"]) - t_off,
        "plan_ms": fo["duration_ms"],
        "moves_in_event": fo["count"],
        "committed_after_offline_s": t_committed - t_off,
        "poll_resolution_s": (t_committed - before[-1]) if before else 0.0,
        "victim": victim_id,
    }


def nginx_after(kg, t_fault, timeout=20):
    """The nginx reload that followed the failover (its duration: write + nginx -t + reload)."""
    evs = wait_until(lambda: [e for e in events(kg) if e["kind"] in ("nginx_reload", "nginx_failed")
                              and ts(e["time"]) >= t_fault], timeout, "nginx reload event")
    e = evs[-1]
    return {"kind": e["kind"], "duration_ms": e["duration_ms"], "time": ts(e["time"])}


def pacing_check(kg, victim_id, per_node):
    """Did reconcile pacing hold back any of the moves?  Reads kumaguard's own log line."""
    text = kg.log_text()
    held = re.findall(r"converge: (\d+) of (\d+) moves now", text)
    sent = re.findall(r"converge: (\d+) moves planned, (\d+) sent", text)
    return {"held_back_lines": held, "converge_lines": sent[-3:]}


def change_detection(kg, db, nodes, per_node, refresh_s):
    """A monitor added, one deactivated and one re-pinned by SQL: time until the API shows
    each (kumaguard's monitors_total / monitors_active, the pinned node's pinned_monitors).
    A change not seen in refresh*3+10 s is recorded as missed, with what kumaguard and the
    database said meanwhile, and the run goes on."""
    out = {}
    n_total = nodes * per_node
    limit = refresh_s * 3 + 10

    def summary():
        return kg.get("/api/system-status")["cluster"]

    def node_view(node):
        doc = kg.get("/api/node-status")
        for n in doc["nodes"]:
            if n["node_id"] == node:
                return n, doc["summary"]
        return None, doc["summary"]

    def probe_times():
        return db.query("SELECT NOW(), (SELECT update_time FROM information_schema.tables WHERE"
                        " table_schema = 'kuma' AND table_name = 'monitor'), (SELECT update_time"
                        " FROM information_schema.tables WHERE table_schema = 'kuma' AND"
                        " table_name = 'kumaguard_override')")[0]

    def timed(key, change, seen, what, trace=None):
        t = time.time()
        change()
        try:
            wait_until(seen, limit, what, 0.1)
            out[key] = time.time() - t
        except TimeoutError as e:
            out[key] = None
            out.setdefault("missed", {})[key] = {"error": str(e), "trace": (trace or [])[-12:],
                                                 "probe_times_now": str(probe_times())}
            log("MISSED: %s" % e)

    base = summary()
    # wait for a moment just after a refresh would not tell us anything: do it at a random
    # phase and report the time against the refresh interval
    timed("added_s",
          lambda: db.execute("INSERT INTO monitor (id, name, active, user_id, node_id) VALUES"
                             " (%s, 'added', 1, 1, 'n1')", (n_total + 1,)),
          lambda: summary()["monitors_total"] == base["monitors_total"] + 1, "added monitor seen")
    time.sleep(1.3)  # a different phase of the refresh cycle for the next change
    base = summary()
    timed("deactivated_s", lambda: db.execute("UPDATE monitor SET active = 0 WHERE id = 5"),
          lambda: summary()["monitors_active"] == base["monitors_active"] - 1,
          "deactivated monitor seen")
    time.sleep(2.7)
    target = "n%d" % (nodes // 3 + 1)
    p0 = node_view(target)[0]["monitors_pinned"]
    trace = []

    def repinned():
        n, summ = node_view(target)
        # (time, pinned, effective on the target, when kumaguard last knew the table)
        trace.append((round(time.time(), 1), n and n["monitors_pinned"],
                      n and n["monitors_effective"], summ.get("monitors_refreshed_at")))
        return n is not None and n["monitors_pinned"] == p0 + 1

    timed("repinned_s",
          lambda: db.execute("UPDATE monitor SET assigned_node = %s WHERE id = 7", (target,)),
          repinned, "re-pinned monitor seen", trace)
    if out.get("missed", {}).get("repinned_s"):
        out["missed"]["repinned_s"]["rows"] = [str(r) for r in db.query(
            "SELECT m.id, m.node_id, m.assigned_node, m.active, o.node_id FROM monitor m LEFT"
            " JOIN kumaguard_override o ON o.monitor_id = m.id WHERE m.id = 7")]
    # and put things back (a re-pin is an operator's: kumaguard leaves it alone)
    db.execute("UPDATE monitor SET assigned_node = NULL WHERE id = 7")
    db.execute("UPDATE monitor SET active = 1 WHERE id = 5")
    db.execute("DELETE FROM monitor WHERE id = %s", (n_total + 1,))
    return out


def wait_ready(kg, nodes, n_monitors, timeout):
    def ready():
        doc = kg.get("/api/node-status")
        s = doc["summary"]
        proven = sum(1 for n in doc["nodes"] if n["state"] == "online" and n["proven"])
        lb = kg.get("/api/load-balancer-status")
        return (proven == nodes and s["monitors_total"] == n_monitors and
                lb["routed_nodes"] == nodes and lb["reloads_ok"] >= 1 and doc)
    return wait_until(ready, timeout, "%d nodes online and proven, %d monitors, nginx routing "
                      "all" % (nodes, n_monitors), 1.0)


def verdict(value, goal, smaller=True):
    if value is None:
        return "n/a"
    return "met" if (value < goal if smaller else value > goal) else "MISSED"


def main():
    global DEADLINE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--per-node", type=int, default=1000)
    ap.add_argument("--window", type=int, default=60, help="steady-state window (s)")
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--instant", action="store_true",
                    help="instant simulated nodes (no database behind their health answer)")
    ap.add_argument("--max-minutes", type=float, default=30)
    ap.add_argument("--keep-logs", help="copy kumaguard's log and the event history here")
    ap.add_argument("--perf", type=int, default=0,
                    help="also record `perf record -g` of kumaguard for this many seconds")
    ap.add_argument("--kg-env", action="append", default=[],
                    help="NAME=VALUE in kumaguard's environment (repeatable), e.g. "
                         "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576")
    ap.add_argument("--hold", type=int, default=0,
                    help="set up, then only hold everything for this many seconds (profiling)")
    ap.add_argument("--sim-arg", action="append", default=[],
                    help="extra kumasim flag (repeatable), e.g. --sim-arg=--threads=4")
    ap.add_argument("--kg-arg", action="append", default=[],
                    help="extra kumaguard flag (repeatable), e.g. --kg-arg=--monitor-limit=2000")
    a = ap.parse_args()
    DEADLINE = time.monotonic() + a.max_minutes * 60
    # SIGTERM (timeout(1), a CI stop) cleans up like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if not os.path.exists(os.path.join(BUILD, "kumaguard")):
        sys.exit("thousand_nodes.py: %s/kumaguard not built (scripts/build.sh build)" % BUILD)
    tmp = tempfile.mkdtemp(prefix="kg-thousand-")
    db = Database(tmp)
    fleet = ngx = kg = None
    results = {}
    n_monitors = a.nodes * a.per_node
    try:
        db.start()
        seed(db, a.nodes, a.per_node)
        t = time.monotonic()
        fleet = KumasimFleet(a.nodes, prefix="n", store=NodeStore(db), instant=a.instant,
                             node_host="listen", startup_timeout=300, extra_args=a.sim_arg)
        log("kumasim fleet of %d %s nodes up in %.1f s (pid %d)"
            % (a.nodes, "instant" if a.instant else "realistic", time.monotonic() - t, fleet.pid))
        if a.instant:
            # instant nodes have no database: register their rows as the realistic ones do
            rows = [(n.node_id, n.node_id, n.address) for n in fleet.nodes]
            with db.conn().cursor() as cur:
                cur.executemany("INSERT INTO node (node_id, node_name, host, status) VALUES "
                                "(%s, %s, %s, 'online')", rows)
        ngx_dir = os.path.join(tmp, "nginx")
        os.makedirs(ngx_dir)
        ngx_port = free_port()
        include = os.path.join(ngx_dir, "kuma-upstream.conf")
        kg_port_placeholder = "127.0.0.1:9"  # the site's kumaguard upstream is not exercised
        ngx = Nginx(ngx_dir, sample_site(include, kg_port_placeholder, ngx_port), ngx_port,
                    include_path=include)
        ngx.start()
        # wrk's 64 connections come from one address: above the per-client default of 32
        extra = ["--monitor-limit", str(a.per_node * 2), "--http-max-per-client", "128"] + a.kg_arg
        kg = Kumaguard(tmp, db, ngx, extra, dict(e.split("=", 1) for e in a.kg_env))
        t = time.monotonic()
        kg.start()
        wait_ready(kg, a.nodes, n_monitors, 300)
        log("kumaguard ready in %.1f s: %d nodes online and proven, %d monitors, nginx routes "
            "all" % (time.monotonic() - t, a.nodes, n_monitors))
        time.sleep(15)  # past the start-up: first full reads, proving, first nginx reload
        if a.hold:
            log("holding %d s: kumaguard pid %d at %s, MariaDB pid %d (socket %s), fleet pid "
                "%d" % (a.hold, kg.pid, kg.url, db.pid, db.sock, fleet.pid))
            time.sleep(a.hold)
            return

        # 1 + 6: the steady-state window (kumaguard and MariaDB CPU, kumaguard's rows)
        log("steady-state window 1 (%d s)" % a.window)
        results["steady1"] = steady_window(kg, db, fleet, ngx, a.window)
        results["mem_steady"] = mem_kb(kg.pid)
        if a.perf:
            data = os.path.join(tmp, "perf.data")
            log("perf record -g for %d s -> %s" % (a.perf, data))
            subprocess.run(["perf", "record", "-g", "-o", data, "-p", str(kg.pid), "--",
                            "sleep", str(a.perf)], capture_output=True)
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                  "--percent-limit", "1.5"], capture_output=True, text=True)
            results["perf"] = rep.stdout[:12000]
        log("sweep staleness (10 samples)")
        results["staleness"] = sweep_staleness(kg, 10)
        log("triggered sweeps")
        results["sweeps"] = [triggered_sweep(kg, a.nodes)]
        time.sleep(2)
        results["sweeps"].append(triggered_sweep(kg, a.nodes))

        # 3: API latency
        for path in ("/api/node-status", "/api/system-status"):
            status, body = kg.raw(path)
            log("wrk -c64 %s (%d bytes)" % (path, len(body)))
            w = wrk(kg.url + path, a.wrk_seconds)
            w["bytes"] = len(body)
            results["wrk " + path] = w

        # 6b: changes made by SQL are noticed
        log("changes by SQL")
        results["changes"] = change_detection(kg, db, a.nodes, a.per_node, 10)

        # 5 + 4: failover of one node, then the nginx reload it caused
        victim = "n%d" % (a.nodes // 2)
        log("failover of %s" % victim)
        fo = failover(kg, db, fleet, victim, a.per_node, tmp)
        results["failover"] = fo
        results["nginx"] = nginx_after(kg, fo["t_fault"])
        results["nginx"]["after_offline_s"] = results["nginx"]["time"] - (
            fo["t_fault"] + fo["offline_after_fault_s"])
        results["pacing"] = pacing_check(kg, victim, a.per_node)
        lb = kg.get("/api/load-balancer-status")
        results["nginx"]["lb_last_reload_duration_ms"] = lb["last_reload_duration_ms"]
        results["nginx"]["include_bytes"] = os.path.getsize(include)
        results["mem_after_failover"] = mem_kb(kg.pid)
        time.sleep(10)
        results["mem_after_failover_10s"] = mem_kb(kg.pid)

        # repeat the steady state (after the failover: 999 nodes, the nudges done or waiting)
        log("steady-state window 2 (%d s)" % a.window)
        results["steady2"] = steady_window(kg, db, fleet, ngx, a.window)
        results["mem_end"] = mem_kb(kg.pid)
        results["sweeps"].append(triggered_sweep(kg, a.nodes - 1 if False else a.nodes))
        reconcile = kg.get("/api/node-status")["nodes"]
        results["reconcile"] = {
            "calls": sum(n["reconcile"]["calls"] for n in reconcile),
            "pending_starts": sum(n["reconcile"]["pending_starts"] for n in reconcile),
            "waiting": sorted({n["reconcile"]["waiting"] for n in reconcile
                               if n["reconcile"]["waiting"]}),
            "left_to_cron": sum(n["reconcile"]["left_to_cron"] for n in reconcile),
        }
    finally:
        if a.keep_logs and kg:
            os.makedirs(a.keep_logs, exist_ok=True)
            try:
                shutil.copy(kg.log_path, a.keep_logs)
                with open(os.path.join(a.keep_logs, "results.json"), "w") as f:
                    json.dump(results, f, indent=1, default=str)
            except OSError:
                pass
        for what in (kg, ngx, fleet):
            if what is not None:
                try:
                    what.stop()
                except Exception as e:  # keep cleaning up
                    print("cleanup: %r" % e, file=sys.stderr)
        db.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        report(results, a)  # what was measured, also when a phase failed


def report(r, a):
    p = print
    p("")
    p("=== kumaguard, %d %s nodes, %d monitors (%d per node), MariaDB, nginx ==="
      % (a.nodes, "instant" if a.instant else "realistic", a.nodes * a.per_node, a.per_node))
    for k in ("steady1", "steady2"):
        s = r.get(k)
        if not s:
            continue
        p("%s (%.0f s): machine load avg %s; other engineers' CPU %.0f %% of one core, ours "
          "%.0f %%" % (k, s["seconds"], s["loadavg"], s["others_cpu_pct"], s["ours_cpu_pct"]))
    p("")
    p("| # | measure | goal | result | |")
    p("|---|---|---|---|---|")
    for k in ("steady1", "steady2"):
        s = r.get(k)
        if s:
            p("| 1 | kumaguard CPU, %s | < 20 %% of a core | %.1f %% | %s |"
              % (k, s["kg_cpu_pct"], verdict(s["kg_cpu_pct"], 20)))
    st = r.get("staleness")
    if st:
        p("| 1 | newest probe per node: age median / p99 / max | <= 1.1 s + slowest answer "
          "| %.2f / %.2f / %.2f s (slowest answer %.0f ms, p99 %.0f ms) | %s |"
          % (st["median_age_s"], st["p99_age_s"], st["max_age_s"], st["max_latency_ms"],
             st["p99_latency_ms"], verdict(st["max_age_s"], 1.1 + st["max_latency_ms"] / 1000)))
    for i, sw in enumerate(r.get("sweeps", [])):
        p("| 1 | triggered sweep over every node #%d | within the slowest answer | %.0f ms "
          "(slowest answer %.0f ms) | %s |" % (i + 1, sw["sweep_s"] * 1000,
                                               sw["slowest_answer_ms"],
                                               "met" if sw["sweep_s"] * 1000 <=
                                               sw["slowest_answer_ms"] + 50 else "MISSED"))
    for k, label in (("mem_steady", "steady"), ("mem_after_failover", "just after failover"),
                     ("mem_after_failover_10s", "10 s after failover"), ("mem_end", "end")):
        m = r.get(k)
        if m:
            p("| 2 | kumaguard VmRSS / VmHWM, %s | <= 64 MB | %.1f / %.1f MB | %s |"
              % (label, m["VmRSS"] / 1024, m["VmHWM"] / 1024, verdict(m["VmHWM"] / 1024, 64.01)))
    for path in ("/api/node-status", "/api/system-status"):
        w = r.get("wrk " + path)
        if w:
            p("| 3 | %s, wrk -c64: p50 / p99 (%d bytes, %.0f req/s, non-2xx %d%s) | p99 < 50 ms "
              "| %.1f / %.1f ms | %s |" % (path, w["bytes"], w["rps"] or 0, w["non2xx"],
                                           ", " + w["socket_errors"] if w["socket_errors"] else "",
                                           w["p50_ms"] or -1, w["p99_ms"] or -1,
                                           verdict(w["p99_ms"], 50)))
    ng = r.get("nginx")
    if ng:
        p("| 4 | nginx include (%d bytes): write + nginx -t + reload (%s) | < 1 s | %.0f ms "
          "(offline verdict -> reloaded: %.0f ms) | %s |"
          % (ng["include_bytes"], ng["kind"], ng["duration_ms"], ng["after_offline_s"] * 1000,
             verdict(ng["after_offline_s"], 1.0)))
    fo = r.get("failover")
    if fo:
        p("| 5 | failover of %s's %d monitors: offline verdict -> moves committed | < 0.3 s "
          "| %.0f ms (plan %d ms, failover event +%.0f ms, poll step %.0f ms) | %s |"
          % (fo["victim"], fo["moves_in_event"], fo["committed_after_offline_s"] * 1000,
             fo["plan_ms"], fo["failover_event_after_offline_s"] * 1000,
             fo["poll_resolution_s"] * 1000, verdict(fo["committed_after_offline_s"], 0.3)))
        p("|   | fault -> first failed probe / offline verdict | | %.2f / %.2f s | |"
          % (fo["first_failure_after_fault_s"] or -1, fo["offline_after_fault_s"]))
    pc = r.get("pacing")
    if pc:
        p("|   | pacing: converge lines that held moves back | none | %s | %s |"
          % (pc["held_back_lines"] or "none", "met" if not pc["held_back_lines"] else "HELD"))
    for k in ("steady1", "steady2"):
        s = r.get(k)
        if not s:
            continue
        p("| 6 | kumaguard on MariaDB, %s: rows read / rows sent / statements per minute | "
          "only what changed | %.0f / %.0f / %.0f | |"
          % (k, s["kg_db_rows_per_min"], s["kg_db_rows_sent_per_min"],
             s["kg_db_statements_per_min"]))
        p("| 6 | kumaguard on MariaDB, %s: server CPU (USER_STATISTICS cpu_time) | <= 1 %% of a "
          "core (0.6 s/min) | %.3f s/min = %.2f %% | %s |"
          % (k, s["kg_db_cpu_s_per_min"], s["kg_db_cpu_s_per_min"] / 0.6,
             verdict(s["kg_db_cpu_s_per_min"] / 0.6, 1.0)))
        p("|   | whole MariaDB, %s (nodes' health SELECT 1s and cron included): CPU, rows read, "
          "handler reads per minute | | %.1f %% of a core, %.0f, %.0f | |"
          % (k, s["db_cpu_pct"], s["db_rows_read_per_min"], s["db_handler_reads_per_min"]))
    ch = r.get("changes")
    if ch:
        for k, label in (("added_s", "added"), ("deactivated_s", "deactivated"),
                         ("repinned_s", "re-pinned")):
            if ch.get(k) is None:
                p("| 6 | monitor %s by SQL -> seen by kumaguard | <= refresh interval 10 s | not "
                  "seen in 40 s | MISSED |" % label)
            else:
                p("| 6 | monitor %s by SQL -> seen by kumaguard | <= refresh interval 10 s | "
                  "%.1f s | %s |" % (label, ch[k], verdict(ch[k], 10.5)))
        for k, m in ch.get("missed", {}).items():
            p("")
            p("%s missed: %s" % (k, json.dumps(m, indent=1, default=str)))
    rc = r.get("reconcile")
    if rc:
        p("")
        p("reconcile after the failover (end of run): %d calls made, %d starts pending, "
          "%d left to the cron, waiting: %s" % (rc["calls"], rc["pending_starts"],
                                                rc["left_to_cron"], rc["waiting"] or "nothing"))
    if r.get("perf"):
        p("")
        p(r["perf"])


if __name__ == "__main__":
    main()
