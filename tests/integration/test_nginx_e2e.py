"""End to end: kumaguard feeds a real nginx (the shipped docker/nginx-site.conf, own prefix and
port) in front of three kumasim nodes.

kumaguard runs with fast probes (200 ms, fall 2, rise 2) and a reload command that returns only
when nginx's old workers are gone and logs the hash of the include it loaded (nginx_ctl.py), so
"nginx routes by the current include" is an observable fact rather than a sleep.

Clients are told apart by source address (127.0.1.x; `hash $remote_addr` stickiness), which is
how requests spread over the nodes from one machine.

Needs kumaguard and kumasim in $KG_BUILD_DIR; run with /usr/bin/python3 -m pytest.
"""

import base64
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from kg_harness import BUILD_DIR, wait_until  # noqa: E402
from kumasim_ctl import Kumasim  # noqa: E402
from nginx_ctl import Nginx, file_sha256, free_port, sample_site  # noqa: E402

NODES = ("node1", "node2", "node3")
CLIENTS = ["127.0.1.%d" % i for i in range(1, 46)]


class Stack:
    """Three kumasim nodes, nginx with the sample site, kumaguard feeding it."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.sims = {}
        self.nginx = None
        self.kg = None
        self.kg_log = None

    def start(self):
        for n in NODES:
            # realistic nodes on the cluster file kumaguard uses below
            self.sims[n] = Kumasim(n, sqlite_path=os.path.join(self.tmp, "cluster.db"))
        self.kg_port = free_port()
        port = free_port()
        ngx_dir = os.path.join(self.tmp, "nginx")
        os.makedirs(ngx_dir, exist_ok=True)
        include = os.path.join(ngx_dir, "kuma-upstream.conf")
        self.nginx = Nginx(ngx_dir, sample_site(include, "127.0.0.1:%d" % self.kg_port, port),
                           port, include_path=include)
        self.nginx.start()
        binary = os.path.join(BUILD_DIR, "kumaguard")
        if not os.access(binary, os.X_OK):
            pytest.fail("kumaguard not built in %s (set KG_BUILD_DIR)" % BUILD_DIR)
        args = [binary, "--listen", "127.0.0.1:%d" % self.kg_port,
                "--state-dir", os.path.join(self.tmp, "state"),
                "--sqlite-path", os.path.join(self.tmp, "cluster.db"),
                "--health-interval", "200ms", "--health-fast-interval", "100ms",
                "--fall", "2", "--rise", "2",
                "--nginx-include", include,
                "--nginx-test-cmd", self.nginx.test_cmd,
                "--nginx-reload-cmd", self.nginx.synced_reload_cmd,
                "--nginx-reload-min-gap", "100ms",
                "--log-level", "debug"]
        for n, sim in self.sims.items():
            args += ["--node", "%s=%s" % (n, sim.address)]
        self.kg_log_path = os.path.join(self.tmp, "kumaguard.log")
        self.kg_log = open(self.kg_log_path, "wb")
        self.kg = subprocess.Popen(args, stdout=self.kg_log, stderr=subprocess.STDOUT)
        self.wait_routed(set(NODES), timeout=20)
        wait_until(self.kumaguard_ready, timeout=20, what="kumaguard /api/system-status 200")
        return self

    def kumaguard_ready(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.kg_port, timeout=2)
        try:
            conn.request("GET", "/api/system-status")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        finally:
            conn.close()

    def stop(self):
        if self.kg is not None and self.kg.poll() is None:
            self.kg.terminate()
            try:
                self.kg.wait(20)
            except subprocess.TimeoutExpired:
                self.kg.kill()
                self.kg.wait()
        if self.kg_log:
            self.kg_log.close()
        if self.nginx:
            self.nginx.stop()
        for sim in self.sims.values():
            try:
                sim.stop()
            except Exception:
                sim.kill()

    def log_tail(self):
        with open(self.kg_log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    # -------------------------------------------------------------- what nginx routes to

    def cluster_nodes(self):
        """Node ids in `upstream kuma_cluster` of the include as it is on disk."""
        with open(self.nginx.include_path) as f:
            text = f.read()
        m = re.search(r"^upstream kuma_cluster \{(.*?)^\}", text, re.S | re.M)
        if not m:
            return None
        by_addr = {sim.address: n for n, sim in self.sims.items()}
        addrs = re.findall(r"^\s*server (\S+) max_fails", m.group(1), re.M)
        return {by_addr.get(a, a) for a in addrs}

    def nginx_runs_current_include(self):
        hashes = self.nginx.applied_include_hashes()
        return bool(hashes) and hashes[-1] == file_sha256(self.nginx.include_path)

    def wait_routed(self, nodes, timeout=15):
        """Until the include's cluster is exactly `nodes` and nginx has loaded that file."""
        def ok():
            if self.kg.poll() is not None:
                raise AssertionError("kumaguard exited:\n" + self.log_tail())
            return self.cluster_nodes() == nodes and self.nginx_runs_current_include()
        try:
            wait_until(ok, timeout=timeout, what="nginx routing to %s" % sorted(nodes))
        except AssertionError:
            raise AssertionError("cluster %r, expected %r\nkumaguard log:\n%s"
                                 % (self.cluster_nodes(), nodes, self.log_tail()))

    # -------------------------------------------------------------- traffic

    def get(self, path="/", ip=None, cookie=None):
        headers = {"Cookie": "KUMA_FIXED_NODE=%s" % cookie} if cookie else {}
        return self.nginx.request("GET", path, headers=headers, source_ip=ip)

    def round(self, cookie=None, clients=CLIENTS):
        """One request per client address -> {ip: node that answered}; every answer a 200."""
        seen = {}
        for ip in clients:
            status, headers, body = self.get("/", ip=ip, cookie=cookie)
            assert status == 200, "client %s got %d: %r" % (ip, status, body[:200])
            seen[ip] = headers.get("x-kuma-node")
        return seen


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_requests_spread_and_follow_node_health(stack):
    first = stack.round()
    assert set(first.values()) == set(NODES), "45 clients should reach all three nodes: %r" % (
        sorted(first.values()),)
    assert stack.round() == first, "the same client stays on the same node (socket.io)"

    # node2's health check fails while it still serves pages: once it is offline, no request
    # may reach it -- routing changed, not just retries.
    stack.sims["node2"].set_mode("fail")
    stack.wait_routed({"node1", "node3"})
    for _ in range(3):
        after = stack.round()
        assert "node2" not in after.values()
    for ip, node in first.items():
        if node != "node2":
            assert after[ip] == node, "consistent hashing moves only node2's clients"

    stack.sims["node2"].set_mode("healthy")
    stack.wait_routed(set(NODES))
    assert "node2" in stack.round().values(), "a recovered node gets traffic again"


def test_killed_node_costs_retries_not_errors(stack):
    first = stack.round()
    victims = [ip for ip, n in first.items() if n == "node3"]
    assert victims
    t0 = time.monotonic()
    stack.sims["node3"].kill()
    # Before kumaguard notices, nginx retries on another node: every request still succeeds.
    while stack.cluster_nodes() != {"node1", "node2"} and time.monotonic() - t0 < 10:
        for ip in victims[:5]:
            status, headers, _ = stack.get("/", ip=ip)
            assert status == 200, "a dead node between probes must cost a retry, not an error"
            assert headers.get("x-kuma-node") in ("node1", "node2")
    stack.wait_routed({"node1", "node2"})
    took = time.monotonic() - t0
    print("node death -> nginx no longer routing to it: %.2f s" % took)
    assert took < 5, "fall 2 x 100-200 ms probes + reload should take well under 5 s"
    assert "node3" not in stack.round().values()

    stack.sims["node3"].restart()
    stack.wait_routed(set(NODES))
    assert "node3" in stack.round().values()


def test_fixed_node_cookie_pins_and_falls_back(stack):
    clients = CLIENTS[:12]
    for pin in NODES:
        got = stack.round(cookie=pin, clients=clients)
        assert set(got.values()) == {pin}, "KUMA_FIXED_NODE=%s: %r" % (pin, got)

    stack.sims["node2"].set_mode("503")
    stack.wait_routed({"node1", "node3"})
    got = stack.round(cookie="node2", clients=clients)
    assert "node2" not in got.values(), "a pin to an offline node falls back to the cluster"

    stack.sims["node2"].set_mode("healthy")
    stack.wait_routed(set(NODES))
    assert set(stack.round(cookie="node2", clients=clients).values()) == {"node2"}
    # unknown or hostile cookie values are just the cluster
    for value in ("nodeX", "node1;x", "%22node1%22"):
        status, headers, _ = stack.get("/", ip=clients[0], cookie=value)
        assert status == 200 and headers.get("x-kuma-node") in NODES


def _ws_frame(payload, opcode=1):
    """A masked client frame (RFC 6455) for payloads < 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _ws_read_frame(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed mid-frame")
            buf += chunk
        return buf
    b0, b1 = exact(2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", exact(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exact(8))[0]
    return b0 & 0x0F, exact(length)


def test_pinned_requests_keep_their_body(stack):
    """A pinned request takes the sample site's other path (error_page -> @kuma_pinned): its
    body must arrive whole at the pinned node."""
    for pin in NODES:
        # kumasim's /_sim/mode answers 400 unless the body names a mode: the body got through
        status, headers, body = stack.nginx.request(
            "POST", "/_sim/mode", body=b"healthy",
            headers={"Cookie": "KUMA_FIXED_NODE=%s" % pin, "Content-Type": "text/plain"})
        assert status == 200, "POST pinned to %s: %d %r" % (pin, status, body[:200])
        assert headers.get("x-kuma-node") == pin
    status, headers, body = stack.nginx.request(
        "POST", "/_sim/mode", body=b"no-such-mode", headers={"Cookie": "KUMA_FIXED_NODE=node1"})
    assert status == 400 and headers.get("x-kuma-node") == "node1", "the body is the client's"


@pytest.mark.parametrize("pin", [None, "node3"])
def test_websocket_upgrade_through_nginx(stack, pin):
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", stack.nginx.port), timeout=5)
    cookie = "Cookie: KUMA_FIXED_NODE=%s\r\n" % pin if pin else ""
    try:
        sock.sendall(("GET /socket.io/ws-echo HTTP/1.1\r\nHost: kuma\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n%s"
                      "Sec-WebSocket-Version: 13\r\n\r\n" % (key, cookie)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "connection closed during the handshake: %r" % head
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        assert not rest
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
        node = headers.get("x-kuma-node")
        assert node in NODES and (pin is None or node == pin), (node, pin)
        for msg in (b"hello", b"second message"):
            sock.sendall(_ws_frame(msg))
            opcode, payload = _ws_read_frame(sock)
            assert opcode == 1
            assert payload == node.encode() + b":" + msg
        sock.sendall(_ws_frame(b"\x03\xe8", opcode=8))  # close 1000
    finally:
        sock.close()


def test_sample_site_sends_controller_paths_to_kumaguard(stack):
    def who(path, method="GET"):
        status, headers, body = stack.nginx.request(method, path)
        return status, headers.get("x-kuma-node"), body

    # kumaguard answers these (no X-Kuma-Node header: not a Kuma node)
    for path in ("/api/system-status", "/api/node-status", "/api/load-balancer-status",
                 "/lb/ping", "/metrics", "/kumaguard/health"):
        status, node, body = who(path)
        assert node is None and status == 200, "%s -> %s from %r: %r" % (path, status, node,
                                                                         body[:200])
    status, node, _ = who("/api/trigger-rebalancing")
    assert node is None and status == 405, "GET on an action is kumaguard's 405"
    status, node, _ = who("/api/nodes/node1/drain")
    assert node is None and status == 405
    lb = json.loads(who("/api/load-balancer-status")[2])
    assert lb, "load-balancer status is JSON"

    # Kuma's own API and everything else go to the nodes
    for path in ("/", "/api/v1/health", "/api/push/abc123?status=up", "/api/badge/1/status",
                 "/api/status-page/main", "/dashboard", "/health", "/api/system-statusx"):
        status, node, _ = who(path)
        assert node in NODES, "%s should reach a Kuma node, got %r (%s)" % (path, node, status)
