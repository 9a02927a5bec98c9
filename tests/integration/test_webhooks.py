"""Issue 14, webhooks, against real local HTTP receivers (Python's http.server): the real
kumaguard, three kumasim nodes, the embedded store.

- every delivery is signed: X-Kumaguard-Signature is HMAC-SHA256 over "<timestamp>.<body>"
  with the secret (read from a *_FILE here), verified with Python's own hmac;
- an answer of 500 is retried, with a growing back-off, until it is accepted;
- each sink gets only its kinds, in its format (a Slack-style second sink);
- a receiver outage shorter than the retry window loses nothing, and order is kept;
- an event failing for the whole window is given up and counted, and the next one goes;
- a receiver that hangs delays neither a failover nor kumaguard's shutdown;
- deliveries and failures show in /api/webhook-status and /metrics."""

import hashlib
import hmac
import http.server
import json
import threading
import time

from kg_harness import Kumaguard, SqliteCluster, monitors, node_status, seed_monitors, wait_until
from kumasim_ctl import Kumasim, free_port

SECRET = "webhook-secret-42"
FAST = ["--health-interval", "200ms", "--health-fast-interval", "100ms", "--health-timeout",
        "300ms", "--fall", "3", "--rise", "3"]


class Receiver:
    """A webhook endpoint.  mode: 'ok' (200), 'fail' (500), 'hang' (never answers until
    released); fail_next: that many requests get 500 before the mode applies."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d/hook/path-is-a-secret" % self.port
        self.lock = threading.Lock()
        self.got = []
        self.mode = "ok"
        self.fail_next = 0
        self.release = threading.Event()
        self.server = None

    def start(self):
        rx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rx.lock:
                    status = 500 if rx.fail_next > 0 or rx.mode == "fail" else 200
                    rx.fail_next = max(0, rx.fail_next - 1)
                    hang = rx.mode == "hang"
                    rx.got.append({"at": time.monotonic(), "path": self.path, "body": body,
                                   "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "status": "hang" if hang else status})
                if hang:
                    rx.release.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.release.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def requests(self):
        with self.lock:
            return list(self.got)


def verify(req, secret=SECRET):
    h = req["headers"]
    want = hmac.new(secret.encode(), h["x-kumaguard-timestamp"].encode() + b"." + req["body"],
                    hashlib.sha256).hexdigest()
    assert h["x-kumaguard-signature"] == "sha256=" + want, "signature does not verify"
    assert abs(int(h["x-kumaguard-timestamp"]) - time.time()) < 120
    return json.loads(req["body"])


def start(tmp_path, procs, extra, env=None, n=3):
    nodes = [Kumasim("node%d" % i) for i in range(1, n + 1)]
    procs.extend(nodes)
    store = SqliteCluster(str(tmp_path / "cluster.db"))
    kg = Kumaguard(tmp_path, store, nodes=nodes, extra=FAST + list(extra), env=env)
    procs.append(kg)
    wait_until(lambda: len(kg.get_json("/api/webhook-status")["webhooks"]) >= 1,
               what="webhook configured")
    wait_until(store.schema_ready, what="cluster schema")
    return nodes, store, kg


def operator_event(kg):
    status, _ = kg.post("/api/trigger-health-check")
    assert status == 202


def sink(kg, i=1):
    return kg.get_json("/api/webhook-status")["webhooks"][i - 1]


def test_signed_retried_filtered_and_formatted(tmp_path, procs):
    r1, r2 = Receiver().start(), Receiver().start()
    try:
        secret_file = tmp_path / "webhook-secret"
        secret_file.write_text(SECRET + "\n")
        r1.fail_next = 2
        nodes, store, kg = start(tmp_path, procs, [
            "--webhook-url", r1.url, "--webhook-events", "operator",
            "--webhook2-url", r2.url, "--webhook2-format", "slack",
            "--webhook2-events", "failover"],
            env={"KUMAGUARD_WEBHOOK_SECRET_FILE": str(secret_file)})
        operator_event(kg)
        wait_until(lambda: len(r1.requests()) >= 3, timeout=15, what="two 500s and a retry")
        got = r1.requests()[:3]
        assert [g["status"] for g in got] == [500, 500, 200]
        assert len({g["headers"]["x-kumaguard-delivery"] for g in got}) == 1, "same event"
        assert got[1]["at"] - got[0]["at"] >= 0.8 and got[2]["at"] - got[1]["at"] >= 1.6, \
            "back-off: 1 s, then 2 s"
        for g in got:
            doc = verify(g)
            assert g["path"] == "/hook/path-is-a-secret"
            assert g["headers"]["x-kumaguard-event"] == "operator" == doc["kind"]
            assert "health check" in doc["reason"] and doc["instance"] and doc["text"]
            assert isinstance(doc["timestamp"], int) and isinstance(doc["id"], int)
        st = sink(kg, 1)
        assert (st["delivered"], st["failures"], st["retries"], st["given_up"]) == (1, 2, 2, 0)
        assert st["signed"] is True and st["events"] == ["operator"]
        assert st["target"] == "http://127.0.0.1:%d" % r1.port, "the path is not shown"
        assert r2.requests() == [], "the second sink does not take operator events"

        # a failover goes to the Slack sink only, as {"text": ...}, unsigned
        seed_monitors(store, ["node3"] * 6)
        assert kg.post("/api/update-loads")[0] == 200
        nodes[2].kill()
        wait_until(lambda: r2.requests(), timeout=15, what="the failover at the Slack sink")
        body = json.loads(r2.requests()[0]["body"])
        assert list(body) == ["text"] and "failover" in body["text"] and "node3" in body["text"]
        assert "x-kumaguard-signature" not in r2.requests()[0]["headers"]
        assert all(g["headers"]["x-kumaguard-event"] == "operator" for g in r1.requests())
        assert sink(kg, 2)["format"] == "slack"

        metrics = kg.request("GET", "/metrics")[2].decode()
        line = 'kumaguard_webhook_deliveries_total{sink="1",target="http://127.0.0.1:%d"} 1' \
            % r1.port
        assert line in metrics, metrics[-1500:]
        assert 'kumaguard_webhook_failures_total{sink="1",target="http://127.0.0.1:%d"} 2' \
            % r1.port in metrics
        assert "path-is-a-secret" not in metrics
        kg.stop()
    finally:
        r1.stop()
        r2.stop()


def test_nothing_lost_across_a_receiver_outage(tmp_path, procs):
    rx = Receiver().start()
    port = rx.port
    try:
        nodes, store, kg = start(tmp_path, procs, [
            "--webhook-url", rx.url, "--webhook-secret", SECRET, "--webhook-events", "operator"])
        operator_event(kg)
        wait_until(lambda: len(rx.requests()) == 1, what="first event delivered")
        rx.stop()  # the receiver is down: connections are refused
        for _ in range(4):
            operator_event(kg)
            time.sleep(0.2)
        wait_until(lambda: sink(kg)["failures"] >= 2, what="deliveries failing")
        assert sink(kg)["queued"] == 4
        time.sleep(1.5)
        rx = Receiver(port).start()
        wait_until(lambda: len(rx.requests()) >= 4, timeout=30, what="the backlog delivered")
        ids = [int(g["headers"]["x-kumaguard-delivery"]) for g in rx.requests()]
        assert ids == sorted(ids) and len(set(ids)) == 4, "in order, each once: %r" % ids
        for g in rx.requests():
            verify(g)
        st = sink(kg)
        assert st["delivered"] == 5 and st["given_up"] == 0 and st["dropped"] == 0, st
        assert st["queued"] == 0 and st["last_error"] is None
        kg.stop()
    finally:
        rx.stop()


def test_an_event_failing_for_the_whole_window_is_given_up(tmp_path, procs):
    rx = Receiver().start()
    rx.mode = "fail"
    try:
        nodes, store, kg = start(tmp_path, procs, [
            "--webhook-url", rx.url, "--webhook-events", "operator",
            "--webhook-retry-window", "1s"])
        operator_event(kg)
        wait_until(lambda: sink(kg)["given_up"] == 1, timeout=15, what="given up")
        st = sink(kg)
        assert st["failures"] >= 2 and st["queued"] == 0 and "HTTP 500" in st["last_error"]
        rx.mode = "ok"
        operator_event(kg)
        wait_until(lambda: sink(kg)["delivered"] == 1, timeout=10, what="the next one delivered")
        kg.stop()
    finally:
        rx.stop()


def test_a_hanging_receiver_delays_neither_failover_nor_shutdown(tmp_path, procs):
    rx = Receiver().start()
    rx.mode = "hang"
    try:
        nodes, store, kg = start(tmp_path, procs, [
            "--webhook-url", rx.url, "--webhook-timeout", "30s",
            "--webhook-events", "all"])
        seed_monitors(store, ["node1", "node2", "node3"] * 10)
        assert kg.post("/api/update-loads")[0] == 200
        wait_until(lambda: rx.requests(), what="the receiver holds a delivery")
        on2 = {i for i, (a, h, o) in monitors(store).items() if (o or h) == "node2"}
        t0 = time.monotonic()
        nodes[1].kill()

        def moved():
            rows = monitors(store)
            return node_status(store)["node2"] == "offline" and \
                all((rows[i][2] or rows[i][1]) != "node2" for i in on2)
        wait_until(moved, timeout=10, what="node2 failed over")
        took = time.monotonic() - t0
        print("kill -> failover with a hanging webhook receiver: %.2f s" % took)
        assert took < 10, "a failover must not wait for the webhook (its timeout is 30 s)"
        assert sink(kg)["queued"] >= 2, "events wait in the queue instead"
        t1 = time.monotonic()
        kg.stop()
        assert time.monotonic() - t1 < 10, "stopping aborts the hanging delivery"
    finally:
        rx.stop()
