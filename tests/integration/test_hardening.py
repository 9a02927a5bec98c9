"""Issue 13 (hardening), against the real daemon over real sockets: one test per row of the
issue's table (row 2, node ids that break nginx's map, is tested with the nginx template).

  1  HTML refuses framing (the real-browser proof is tests/dashboard/clickjack.test.mjs)
  3  600 slow connections from one address do not lock out another
  4  one client cannot hold every event-stream slot
  5  secrets given as flags log a warning; run.sh passes none
  6  node hosts outside KUMAGUARD_NODE_NETWORKS, link-local or the database's own address are
     refused: never probed, never sent the key, the reason on /api/node-status
  7  node ids over 50 characters are refused, never cut
  8  strict request framing (raw sockets): 400 JSON and the connection closed; HEAD has no body
  9  invalid UTF-8 in a URL: 400, and every error body is valid UTF-8 JSON
 10  /api/system-status without the token: the database is down and why, in general terms only
 11  a flood of aborted connections cannot evict the log

Every count and wait is bounded; every process is stopped by the `procs` fixture."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from kg_harness import ROOT, BUILD_DIR, Kumaguard, SqliteCluster, monitors, seed_monitors, wait_until
from kumasim_ctl import Kumasim, free_port

TOKEN = "hardening-test-token-1234"
FAST = ["--health-interval", "300ms", "--health-fast-interval", "100ms", "--health-timeout",
        "500ms", "--fall", "2", "--rise", "2", "--recovery-hold-down", "1s"]


@pytest.fixture
def sqlite(tmp_path):
    return SqliteCluster(str(tmp_path / "cluster.db"))


def start_kg(tmp_path, store, procs, extra=(), env=None, name="kg"):
    kg = Kumaguard(tmp_path, store, extra=list(extra), env=env, name=name)
    procs.append(kg)
    return kg


# ------------------------------------------------------------------------------------------------
# Raw HTTP over sockets
# ------------------------------------------------------------------------------------------------

def connect(port, src=None, timeout=3.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if src:
        s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


class Reader:
    """Reads HTTP/1.1 responses one after the other from one connection."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self):
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def response(self, head=False):
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("no complete response header (eof=%s): %r"
                                     % (self.eof, self.buf[:300]))
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        body = b""
        if head or status in (204, 304):
            return status, headers, body
        if "content-length" in headers:
            n = int(headers["content-length"][0])
            while len(self.buf) < n and self._fill():
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", [""])[0].lower() == "chunked":
            while True:
                while b"\r\n" not in self.buf and self._fill():
                    pass
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2 and self._fill():
                    pass
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        return status, headers, body

    def closed_after(self, wait=2.0):
        """True when the server closes the connection with nothing more to read."""
        self.sock.settimeout(wait)
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def raw_exchange(port, data, head=False):
    s = connect(port)
    try:
        s.sendall(data)
        r = Reader(s)
        st, hd, body = r.response(head=head)
        return st, hd, body, r.closed_after()
    finally:
        s.close()


def assert_json_error(status, body, want_status, want_text=None):
    assert status == want_status, (status, body[:300])
    doc = json.loads(body.decode("utf-8"))  # strict: invalid UTF-8 raises
    assert set(doc) >= {"error", "detail"}, doc
    if want_text:
        assert want_text in doc["detail"], doc
    return doc


# ------------------------------------------------------------------------------------------------
# Row 1: clickjacking headers; nosniff everywhere
# ------------------------------------------------------------------------------------------------

def test_html_refuses_framing_and_every_response_says_nosniff(tmp_path, sqlite, procs):
    kg = start_kg(tmp_path, sqlite, procs)
    wait_until(lambda: kg.request("GET", "/api/system-status")[0] == 200, what="first snapshot")
    for path in ("/", "/lb/fixed-node/node1"):
        st, hd, _ = kg.request("GET", path)
        assert st in (200, 404, 409, 503), (path, st)
        assert hd.get("X-Frame-Options") == "DENY", (path, hd)
        csp = hd.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp, (path, csp)
        assert "default-src" in csp, (path, csp)
    st, hd, _ = kg.request("GET", "/")
    assert st == 200 and "text/html" in hd["Content-Type"]
    assert "default-src 'self'" in hd["Content-Security-Policy"]
    for path in ("/", "/static/app.js", "/health", "/api/system-status", "/metrics",
                 "/no/such/path", "/api/update-loads", "/lb/capacity"):
        st, hd, _ = kg.request("GET", path)
        assert hd.get("X-Content-Type-Options") == "nosniff", (path, st, hd)


# ------------------------------------------------------------------------------------------------
# Row 8: strict framing; Row 9: invalid UTF-8
# ------------------------------------------------------------------------------------------------

FRAMING_CASES = {
    "duplicate Content-Length":
        b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "conflicting Content-Length":
        b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length with Transfer-Encoding":
        b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "Transfer-Encoding other than chunked":
        b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n",
    "no Host on HTTP/1.1": b"GET /health HTTP/1.1\r\n\r\n",
    "two Host headers": b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "space before the colon":
        b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "%00 in the path": b"GET /static/app.js%00.html HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw invalid UTF-8 in the path": b"GET /nope\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "escaped invalid UTF-8 in the path": b"GET /nope%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    "overlong UTF-8 in the path": b"GET /static/%C0%AEapp.js HTTP/1.1\r\nHost: x\r\n\r\n",
    "%00 in the query": b"GET /api/failover-history?node=node1%00x HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.fixture(scope="module")
def shared_kg(tmp_path_factory):
    """One daemon for the read-only request tests (no state is changed through it)."""
    d = tmp_path_factory.mktemp("hardening-shared")
    kg = Kumaguard(d, SqliteCluster(str(d / "cluster.db")), name="shared")
    yield kg
    kg.stop()


@pytest.mark.parametrize("case", sorted(FRAMING_CASES))
def test_malformed_framing_is_400_json_and_the_connection_closes(shared_kg, case):
    st, hd, body, closed = raw_exchange(shared_kg.port, FRAMING_CASES[case])
    assert_json_error(st, body, 400, "malformed request")
    assert hd.get("content-type") == ["application/json"], hd
    assert closed, "the connection stays open after a framing error: the rest of the stream " \
                   "could be read as a request"


def test_what_libmicrohttpd_rejects_itself_is_closed_and_leaks_nothing(shared_kg):
    # libmicrohttpd answers these before kumaguard sees the request (its own short HTML body);
    # the request state kumaguard allocated for the target must still be freed (the shared
    # daemon's sanitizer report at the end of the module says so).
    for raw in (b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"):
        s = connect(shared_kg.port)
        try:
            s.sendall(raw)
            r = Reader(s)
            st, _, _ = r.response()
            assert 400 <= st < 500, st
            # (0.9.75 sends the header block of its Content-Length error twice: read to the end)
            deadline = time.monotonic() + 5
            while not r.eof and time.monotonic() < deadline:
                r._fill()
            assert r.eof, "the connection stays open"
        finally:
            s.close()


def test_well_formed_requests_still_keep_alive(shared_kg):
    s = connect(shared_kg.port)
    try:
        r = Reader(s)
        for _ in range(3):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            st, hd, body = r.response()
            assert st == 200 and json.loads(body)["status"] in ("ok", "degraded")
        s.sendall(b"POST /lb/set-fixed-node HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        st, _, body = r.response()
        assert st == 400 and b"node" in body  # the body was read: {} has no "node"
        assert r.response()[0] == 200
    finally:
        s.close()
    # HTTP/1.0 needs no Host
    st, _, body, _ = raw_exchange(shared_kg.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert st == 200, body


@pytest.mark.parametrize("path", ["/api/events", "/", "/api/system-status", "/metrics",
                                  "/static/app.js", "/lb/ping", "/no/such/path"])
def test_head_never_carries_a_body_and_keeps_the_connection(shared_kg, path):
    s = connect(shared_kg.port)
    try:
        s.sendall(("HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
                  + b"GET /lb/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        st, hd, _ = r.response(head=True)
        assert st in (200, 404), (path, st)
        # the next bytes on the wire must be the second response, not a stray body
        st2, _, body2 = r.response()
        assert st2 == 200 and json.loads(body2)["pong"] is True, (path, st2, body2[:200])
    finally:
        s.close()


def test_error_bodies_are_valid_utf8_json_whatever_the_url(shared_kg):
    # a valid multi-byte path long enough to be cut in the 404's detail
    path = "/" + "%C3%A9" * 150
    st, _, body, _ = raw_exchange(shared_kg.port,
                                  ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    doc = assert_json_error(st, body, 404)
    assert doc["detail"].startswith("no such endpoint: /\u00e9")
    for raw in (b"/nope\xff\xfe", b"/nope%ff%fe", b"/%ED%A0%80", b"/lb/fixed-node/%E2%82"):
        st, _, body, _ = raw_exchange(shared_kg.port,
                                      b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_json_error(st, body, 400, "UTF-8")


# ------------------------------------------------------------------------------------------------
# Rows 3 and 4: connection floods and event-stream slots
# ------------------------------------------------------------------------------------------------

def test_600_slow_connections_from_one_address_do_not_lock_out_another(tmp_path, sqlite, procs):
    kg = start_kg(tmp_path, sqlite, procs)
    slow = []
    t0 = time.monotonic()
    try:
        for _ in range(600):
            try:
                s = connect(kg.port, src="127.0.0.2", timeout=2)
                s.sendall(b"GET /api/system-status HTTP/1.1\r\nHost: x\r\n")  # never finished
                slow.append(s)
            except OSError:
                pass  # refused while connecting is fine too
        time.sleep(0.5)
        still_open = 0
        for s in slow:
            s.setblocking(False)
            try:
                if s.recv(1) != b"":
                    still_open += 1
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        # another address is served, promptly, while the flood is still open
        for _ in range(10):
            with urllib.request.urlopen(kg.url + "/health", timeout=3) as r:
                assert r.status == 200
            st, _, body = kg.request("GET", "/api/node-status", timeout=3)
            assert st == 200, body
        # the flood holds at most its own quota (plus the few accepts racing the count)
        assert still_open <= 32 + 4, still_open
        assert time.monotonic() - t0 < 60
    finally:
        for s in slow:
            s.close()
    # the quota is given back when the connections close
    wait_until(lambda: all_connect(kg.port, "127.0.0.2", 20), timeout=10,
               what="127.0.0.2 can connect again")
    assert "refused a connection from 127.0.0.2" in kg.read_log()


def all_connect(port, src, n):
    socks = []
    try:
        for _ in range(n):
            s = connect(port, src=src)
            s.sendall(b"GET /lb/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        return all(Reader(s).response()[0] == 200 for s in socks)
    finally:
        for s in socks:
            s.close()


def open_stream(port, src=None, xff=None):
    """Opens /api/events; returns (status, socket or None)."""
    s = connect(port, src=src)
    req = "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
    if xff:
        req += "X-Forwarded-For: %s\r\n" % xff
    s.sendall((req + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    status = int(buf.split(b" ", 2)[1]) if buf else 0
    if status == 200:
        return status, s
    s.close()
    return status, None


def test_one_client_cannot_take_every_event_stream(tmp_path, sqlite, procs):
    kg = start_kg(tmp_path, sqlite, procs)
    held = []
    try:
        refused = None
        for _ in range(64):  # every slot there is
            st, s = open_stream(kg.port, src="127.0.0.2")
            if s is None:
                refused = st
                break
            held.append(s)
        assert refused == 429, "one client got %d streams" % len(held)
        assert len(held) == 8, len(held)
        # another client still gets one
        st, s = open_stream(kg.port, src="127.0.0.1")
        assert st == 200
        held.append(s)
    finally:
        for s in held:
            s.close()


def test_behind_a_trusted_proxy_streams_count_per_forwarded_client(tmp_path, sqlite, procs):
    kg = start_kg(tmp_path, sqlite, procs,
                  extra=["--trusted-proxies", "127.0.0.3", "--event-streams-per-client", "2"])
    held = []
    try:
        for _ in range(2):
            st, s = open_stream(kg.port, src="127.0.0.3", xff="6.6.6.6, 198.51.100.7")
            assert st == 200
            held.append(s)
        # the forwarded client is at its limit; what it wrote itself into the header is ignored
        assert open_stream(kg.port, src="127.0.0.3", xff="1.1.1.1, 198.51.100.7")[0] == 429
        # another forwarded client, through the same proxy, is not
        st, s = open_stream(kg.port, src="127.0.0.3", xff="198.51.100.8")
        assert st == 200
        held.append(s)
        # an untrusted peer's X-Forwarded-For is ignored: it is one client whatever it claims
        for i in range(2):
            st, s = open_stream(kg.port, src="127.0.0.4", xff="203.0.113.%d" % i)
            assert st == 200
            held.append(s)
        assert open_stream(kg.port, src="127.0.0.4", xff="203.0.113.99")[0] == 429
    finally:
        for s in held:
            s.close()


# ------------------------------------------------------------------------------------------------
# Row 5: secrets as flags
# ------------------------------------------------------------------------------------------------

def test_a_secret_given_as_a_flag_works_but_warns(tmp_path, sqlite, procs):
    kg = start_kg(tmp_path, sqlite, procs, extra=["--api-token", TOKEN], name="flag")
    assert kg.request("GET", "/api/debug-config",
                      headers={"Authorization": "Bearer " + TOKEN})[0] == 200
    log = kg.read_log()
    assert re.search(r"warn .*--api-token was given on the command line.*KUMAGUARD_API_TOKEN",
                     log), log[-2000:]
    assert TOKEN not in log
    kg.stop()
    kg2 = start_kg(tmp_path, sqlite, procs, env={"KUMAGUARD_API_TOKEN": TOKEN}, name="env")
    assert kg2.request("GET", "/api/debug-config",
                       headers={"Authorization": "Bearer " + TOKEN})[0] == 200
    assert "was given on the command line" not in kg2.read_log()


def test_run_sh_passes_no_secret_on_the_command_line(tmp_path):
    port = free_port()
    state = tmp_path / "state"
    env = dict(os.environ)
    env.pop("KUMA_API_KEY", None)
    p = subprocess.Popen([os.path.join(ROOT, "scripts", "run.sh"), "--simulate", "0",
                          "--monitors", "0", "--listen", "127.0.0.1:%d" % port,
                          "--state-dir", str(state)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def kumaguard_cmdline():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv and argv[0].endswith(b"/kumaguard") and str(state).encode() in argv:
                    return argv
            return None
        argv = wait_until(kumaguard_cmdline, timeout=300, interval=0.2, what="run.sh's kumaguard")
        wait_until(lambda: urllib.request.urlopen("http://127.0.0.1:%d/health" % port,
                                                  timeout=1).status == 200,
                   timeout=30, what="run.sh's kumaguard answering")
        joined = b" ".join(argv)
        assert b"--kuma-api-key" not in joined and b"demo-cluster-key" not in joined, joined
        assert b"--api-token" not in joined and b"--db-password" not in joined, joined
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# ------------------------------------------------------------------------------------------------
# Row 6: where nodes may be
# ------------------------------------------------------------------------------------------------



def test_nodes_outside_the_allowed_networks_are_never_probed_or_sent_the_key(tmp_path, sqlite,
                                                                             procs):
    key = "hardening-cluster-key"
    outside = Kumasim("outside", host="127.0.0.1", instant=True, api_key=key)
    inside = Kumasim("inside", host="127.0.0.2", instant=True, api_key=key)
    procs.extend([outside, inside])
    kg = start_kg(tmp_path, sqlite, procs, env={"KUMA_API_KEY": key}, extra=FAST + [
        "--node-networks", "127.0.0.2/32",
        "--node", "inside=127.0.0.2:%d" % inside.port,
        "--node", "outside=127.0.0.1:%d" % outside.port,
        # a name that resolves to the refused address: caught on the connected address
        "--node", "byname=localhost:%d" % outside.port,
        "--node", "metadata=169.254.169.254:80"])
    wait_until(sqlite.schema_ready, what="schema")
    ids = seed_monitors(sqlite, ["outside"] * 20 + ["byname"] * 10 + ["inside"] * 10)
    assert kg.post("/api/update-loads")[0] == 200

    def refused(node_id, text):
        n = kg.node(node_id)
        return n and text in (n.get("last_failure_reason") or "") and n

    n = wait_until(lambda: refused("outside", "outside KUMAGUARD_NODE_NETWORKS"), timeout=15,
                   what="'outside' shown as refused")
    assert n["host_valid"] is False and n["routable"] is False
    n = wait_until(lambda: refused("metadata", "link-local"), timeout=15,
                   what="'metadata' shown as refused")
    assert n["host_valid"] is False
    wait_until(lambda: refused("byname", "is outside KUMAGUARD_NODE_NETWORKS"), timeout=15,
               what="'byname' refused on the address it resolved to")
    # every monitor ends up on the one allowed node
    wait_until(lambda: all((over or home) == "inside"
                           for _, (a, home, over) in monitors(sqlite).items()),
               timeout=20, what="monitors moved to the allowed node")
    assert sorted(monitors(sqlite)) == sorted(ids)
    wait_until(lambda: inside.stats()["reconcile_calls"] > 0, timeout=15,
               what="the allowed node nudged")
    time.sleep(1.0)  # a few more probe rounds
    st = outside.stats()
    assert st["health_requests"] == 0, st
    assert st["reconcile_calls"] == 0 and st["reconcile_unauthorized"] == 0, st
    assert inside.stats()["health_requests"] > 0


# ------------------------------------------------------------------------------------------------
# Row 7: over-long node ids
# ------------------------------------------------------------------------------------------------

def test_node_ids_over_50_characters_are_refused_not_cut(tmp_path, sqlite, procs):
    node1 = Kumasim("node1")
    longsim = Kumasim("x" * 50)  # answers health probes; its row's id below is longer
    procs.extend([node1, longsim])
    kg = start_kg(tmp_path, sqlite, procs, extra=FAST + ["--node", "node1=127.0.0.1:%d" % node1.port])
    wait_until(sqlite.schema_ready, what="schema")
    long_id = "L" * 60
    cut = long_id[:50]
    sqlite.execute("INSERT INTO node (node_id, node_name, host, status) VALUES (%s, %s, %s, %s)",
                   (long_id, "long", "127.0.0.1:%d" % longsim.port, "online"))
    ids = seed_monitors(sqlite, [long_id] * 20 + ["node1"] * 5)
    assert kg.post("/api/update-loads")[0] == 200
    # the monitors homed on the long id (a node kumaguard does not accept) are failed over
    wait_until(lambda: all(over for _, (a, home, over) in monitors(sqlite).items()
                           if home == long_id), timeout=20,
               what="the monitors of the long id moved")
    # new monitors without a home are adopted by the least loaded node: never the cut id
    time.sleep(1.0)
    ids += seed_monitors(sqlite, [None] * 10, start_id=1001)
    assert kg.post("/api/update-loads")[0] == 200
    wait_until(lambda: all(over or home for _, (a, home, over) in monitors(sqlite).items()),
               timeout=20, what="the new monitors adopted")
    rows = monitors(sqlite)
    assert sorted(rows) == sorted(ids)
    assert not [i for i, (_, home, over) in rows.items() if cut in (home, over)], \
        "a monitor was placed on the cut id, which no node has"
    assert all((over or home) == "node1" for _, (a, home, over) in rows.items()), rows
    assert "node ids are at most 50 characters" in kg.read_log()
    names = {n["node_id"] for n in kg.get_json("/api/node-status")["nodes"]}
    assert cut not in names and long_id not in names, names
    assert longsim.stats()["health_requests"] == 0


# ------------------------------------------------------------------------------------------------
# Row 10: what leaks without a token
# ------------------------------------------------------------------------------------------------

def dead_mariadb(tmp_path, port):
    """A MariaDB store that is down: nothing listens on `port`."""
    store = SqliteCluster(str(tmp_path / "unused.db"))
    store.kumaguard_args = lambda: ["--db-host", "127.0.0.1", "--db-port", str(port),
                                    "--db-user", "secretuser", "--db-name", "secretdb",
                                    "--db-timeout", "500"]
    return store


def test_database_details_stay_behind_the_token(tmp_path, procs):
    dead_port = free_port()
    kg = start_kg(tmp_path, dead_mariadb(tmp_path, dead_port), procs,
                  env={"KUMAGUARD_API_TOKEN": TOKEN})
    doc = wait_until(lambda: (lambda d: d if d["database"]["ok"] is False and
                              d["database"]["error"] else None)(kg.get_json("/api/system-status")),
                     timeout=20, what="database reported down")
    err = doc["database"]["error"]
    assert "cannot connect to the database server" in err, err
    for path in ("/api/system-status", "/api/fault-detection-status", "/api/health-status",
                 "/api/failover-history", "/health", "/lb/health"):
        st, _, body = kg.request("GET", path)
        for s in ("secretuser", "secretdb", str(dead_port), "127.0.0.1"):
            assert s not in body.decode(), (path, s, body[:1500])
    st, _, body = kg.request("GET", "/api/system-status",
                             headers={"Authorization": "Bearer " + TOKEN})
    assert st == 200
    db = json.loads(body)["database"]
    assert (db["host"], db["port"], db["name"], db["user"]) == \
        ("127.0.0.1", dead_port, "secretdb", "secretuser"), db
    assert "secretuser" in db["error_detail"]
    # a wrong token gets the public document
    st, _, body = kg.request("GET", "/api/system-status",
                             headers={"Authorization": "Bearer wrong-token-123"})
    assert st == 200 and "secretuser" not in body.decode()


def test_a_node_on_the_databases_own_address_is_refused(tmp_path, procs):
    dead_port = free_port()
    kg = start_kg(tmp_path, dead_mariadb(tmp_path, dead_port), procs, extra=FAST + [
        "--node", "sneaky=127.0.0.1:%d" % dead_port, "--node", "named=localhost:%d" % dead_port])
    for node in ("sneaky", "named"):
        # a name passes the static check and is refused on the address it resolves to, so
        # it goes offline through failed probes (fall = 2) instead of at once
        wait_until(lambda: (lambda n: n and "cluster database's own address" in
                            (n.get("last_failure_reason") or "") and not n["routable"])(
                                kg.node(node)), timeout=15,
                   what="%s refused as the database's own address" % node)
    assert kg.node("sneaky")["host_valid"] is False


# ------------------------------------------------------------------------------------------------
# Row 11: a flood of aborted connections and the log ring
# ------------------------------------------------------------------------------------------------

def test_a_flood_of_aborted_connections_cannot_evict_the_log(tmp_path, sqlite, procs):
    kg = start_kg(tmp_path, sqlite, procs)
    marker = "http: listening on"
    # the log reaches the file a moment after /health answers (slower under TSan)
    wait_until(lambda: marker in kg.read_log(), timeout=10, what="the listening line logged")
    # 1,500 clients that start a request and hang up, in batches of 50 (the hang-up arrives
    # apart from the data, so the server notices each one at once)
    for _ in range(30):
        batch = []
        for _ in range(50):
            try:
                s = connect(kg.port, src="127.0.0.2")
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Incompl")
                batch.append(s)
            except OSError:
                pass  # refused at accept: the client is over its connection limit
        time.sleep(0.05)
        for s in batch:
            s.close()
    time.sleep(0.5)
    st, _, body = kg.request("GET", "/api/debug-logs?lines=1000")
    assert st == 200, body
    lines = json.loads(body)["lines"]
    assert any(marker in ln for ln in lines), \
        "the start-up lines were pushed out of /api/debug-logs by the flood"
    per_kind = {}
    for ln in lines:
        m = re.search(r"(closed by remote side|refused a connection)", ln)
        if m and "suppressed" not in ln:
            per_kind[m.group(1)] = per_kind.get(m.group(1), 0) + 1
    assert all(n <= 20 for n in per_kind.values()), per_kind
