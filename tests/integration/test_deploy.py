"""The container's start-up script, run for real outside a container (there is no Docker engine
here): docker/entrypoint.sh starts a real nginx (own prefix and port in a temporary directory)
with the shipped site config docker/nginx-site.conf, then the real kumaguard against a real
MariaDB, with three realistic simulated Kuma nodes that create Kuma's tables and register
themselves in the `node` table the way the Kuma nodes of docker-compose-cluster.yaml do.  Secrets arrive through *_FILE variables, as
in the compose file.

What an operator would notice is asserted: traffic on nginx's published port reaches the Kuma
nodes (per-node pin cookie, spread over client addresses, failover) and the controller paths
reach kumaguard; kumaguard renders the include and reloads the nginx the script started; the
API token from its file protects actions through the proxy; SIGTERM stops both processes
cleanly; if either process dies, the other is stopped and the script exits non-zero (so the
container restarts); a restart reuses the last include nginx accepted; bad settings and a site
config that no longer matches stop the start-up with a message.
"""

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse

import pytest

from kg_harness import BUILD_DIR, ROOT, MariaCluster, wait_until
from kumasim_ctl import Kumasim, free_port

ENTRYPOINT = os.path.join(ROOT, "docker", "entrypoint.sh")
SITE_CONF = os.path.join(ROOT, "docker", "nginx-site.conf")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
API_KEY = "deploy-cluster-key"
TOKEN = "deploy-test-token-0123456789"
# Fast enough that a node's death shows within a second or two, even under ASan.
FAST_ENV = {
    "HEALTH_CHECK_INTERVAL": "300ms",
    "HEALTH_CHECK_FAST_INTERVAL": "100ms",
    "HEALTH_CHECK_TIMEOUT": "1000ms",
    "HEALTH_CHECK_FALL": "2",
    "HEALTH_CHECK_RISE": "2",
    "RECOVERY_HOLD_DOWN": "1s",
    "KUMAGUARD_REFRESH_INTERVAL": "500ms",
    "NGINX_RELOAD_MIN_GAP": "100ms",
    "KUMAGUARD_LOG_LEVEL": "info",
    "KG_STOP_TIMEOUT": "10",
}
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it no longer runs anything
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _children(pid):
    """[(child pid, command line)] of a process, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                out.append((int(entry), f.read().replace(b"\0", b" ").decode().strip()))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Deployment:
    """docker/entrypoint.sh in its own session, pointed at a temporary prefix and state dir."""

    def __init__(self, tmp_path, env, name="deploy", state_dir=None, site_conf=SITE_CONF,
                 wait=True, run_as=None):
        self.tmp = str(tmp_path)
        self.name = name
        self.proxy_port = free_port()
        self.kg_port = free_port()
        self.prefix = os.path.join(self.tmp, name + "-nginx")
        self.state_dir = state_dir or os.path.join(self.tmp, name + "-state")
        self.log_path = os.path.join(self.tmp, name + ".log")
        self.access_log = os.path.join(self.tmp, name + "-access.log")
        self.error_log = os.path.join(self.tmp, name + "-nginx-error.log")
        self.include = os.path.join(self.prefix, "conf", "kuma-upstream.conf")
        e = dict(os.environ)
        e.update(FAST_ENV)
        e.update({
            "KG_NGINX_PREFIX": self.prefix,
            "KG_NGINX_SITE_CONF": site_conf,
            "KG_PROXY_LISTEN": "127.0.0.1:%d" % self.proxy_port,
            "KG_NGINX_BIN": NGINX,
            "KG_KUMAGUARD_BIN": os.path.join(BUILD_DIR, "kumaguard"),
            "KG_NGINX_ACCESS_LOG": self.access_log,
            "KG_NGINX_ERROR_LOG": self.error_log,
            "KG_NGINX_WORKERS": "1",
            "KUMAGUARD_LISTEN": "127.0.0.1:%d" % self.kg_port,
            "KUMAGUARD_STATE_DIR": self.state_dir,
        })
        e.update(env)
        self.log = open(self.log_path, "ab")
        ids = {} if run_as is None else {"user": run_as, "group": run_as, "extra_groups": []}
        self.proc = subprocess.Popen([ENTRYPOINT], env=e, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, **ids)
        self.pgid = self.proc.pid
        if wait:
            self.wait_for(self._ready, timeout=30, what="nginx and kumaguard up via the entrypoint")

    # ---------------------------------------------------------------- state

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def nginx_pid(self):
        with open(os.path.join(self.prefix, "nginx.pid")) as f:
            return int(f.read().strip())

    def kumaguard_pid(self):
        m = re.search(r"kumaguard started \(pid (\d+)\)", self.read_log())
        return int(m.group(1)) if m else None

    def _ready(self):
        if not self.kumaguard_pid():
            return False
        status, _, body = self.get("/kumaguard/health")
        return status == 200 and json.loads(body).get("status") in ("ok", "degraded")

    # ---------------------------------------------------------------- requests via nginx

    def request(self, method, path, headers=None, body=None, source="127.0.0.1", timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=timeout,
                                          source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def get_json(self, path):
        status, headers, body = self.get(path)
        assert status == 200, "%s via nginx -> %s %r" % (path, status, body[:300])
        assert "x-kuma-node" not in headers, "%s went to a Kuma node, not kumaguard" % path
        return json.loads(body)

    # ---------------------------------------------------------------- stopping

    def wait_for(self, fn, timeout, what):
        """wait_until, but failing at once (with the log) if the entrypoint has exited."""
        def step():
            if self.proc.poll() is not None:
                return "exited"
            return fn()
        result = wait_until(step, timeout=timeout, what=what)
        assert result != "exited", "entrypoint exited with %s while waiting for %s:\n%s" % (
            self.proc.returncode, what, self.read_log()[-4000:])
        return result

    def settle(self):
        """Waits until nginx runs one generation of workers.  A reload answers as soon as the
        master is signalled; for a moment the old worker, with the old upstream, still accepts
        connections (NOTES.md: its exit is the reliable signal)."""
        master = self.nginx_pid()

        def one_generation():
            kids = _children(master)
            return len(kids) == 1 and kids[0][1] == "nginx: worker process"

        wait_until(one_generation, timeout=10, what="nginx old workers gone after a reload")

    def stop(self, sig=signal.SIGTERM, timeout=40):
        """Signals the entrypoint and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def kill_all(self):
        """Teardown of last resort: the session this test started, by its id."""
        if _group_alive(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        if not self.log.closed:
            self.log.close()

    def assert_no_sanitizer_report(self):
        out = self.read_log()
        for mark in SANITIZER_MARKS:
            assert mark not in out, out[-6000:]


@pytest.fixture
def deployments():
    started = []
    yield started
    for d in started:
        d.kill_all()


_db_names = itertools.count(1)


@pytest.fixture
def kuma_db(mariadb_server):
    """An empty database for one test, as MariaCluster (direct SQL for the assertions)."""
    name = "kg_deploy_%d_%d" % (os.getpid(), next(_db_names))
    subprocess.run(["mariadb", "--no-defaults", "-S", mariadb_server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    return MariaCluster(mariadb_server, name)


def write_secret(tmp_path, name, value):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(value + "\n")  # a trailing newline, as `echo > file` leaves it
    os.chmod(path, 0o600)
    return path


def mariadb_env(tmp_path, db):
    """The proxy service's settings in docker-compose-cluster.yaml, pointed at the test server."""
    return {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(db.server["port"]),
        "DB_USER": "kuma",
        "DB_NAME": db.dbname,
        "DB_PASSWORD_FILE": write_secret(tmp_path, "db_password", "kumapw"),
        "KUMAGUARD_API_TOKEN_FILE": write_secret(tmp_path, "api_token", TOKEN),
        "KUMA_API_KEY_FILE": write_secret(tmp_path, "kuma_api_key", API_KEY),
        "KUMAGUARD_INIT_SCHEMA": "1",
    }


def answering_node(dep, **kw):
    status, headers, _ = dep.get("/dashboard", **kw)
    return status, headers.get("x-kuma-node")


# Enough client addresses that every node's share of the consistent hash shows up.
SOURCES = ["127.0.0.%d" % i for i in range(10, 70)]


def nodes_by_source(dep):
    """Which node answers each client address (nginx hashes on the client address)."""
    seen = {}
    for src in SOURCES:
        status, node = answering_node(dep, source=src)
        assert status == 200, "GET /dashboard from %s via nginx -> %s" % (src, status)
        seen[src] = node
    return seen


def capacity(dep):
    return {n["node_id"]: n for n in dep.get_json("/lb/capacity")["nodes"]}


# ------------------------------------------------------------------------------------------------


def test_entrypoint_runs_nginx_and_kumaguard_against_mariadb(tmp_path, kuma_db, procs,
                                                            deployments):
    # Realistic nodes on the deployment's MariaDB: each registers its own row at start, with
    # UPTIME_KUMA_NODE_HOST carrying its port as in the compose file (node_host="listen").
    nodes = [Kumasim("node%d" % i, store=kuma_db, node_host="listen") for i in (1, 2, 3)]
    procs.extend(nodes)
    env = mariadb_env(tmp_path, kuma_db)
    dep = Deployment(tmp_path, env)
    deployments.append(dep)

    log = dep.read_log()
    assert "placeholder include" in log, log  # first start: nothing to reuse yet
    nginx_pid, kg_pid = dep.nginx_pid(), dep.kumaguard_pid()
    assert _alive(nginx_pid) and _alive(kg_pid)
    # nginx is the one the entrypoint started (its child), on the port it was given
    with open("/proc/%d/stat" % nginx_pid) as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == dep.proc.pid

    # the nodes created Kuma's tables and registered themselves before kumaguard started;
    # kumaguard (KUMAGUARD_INIT_SCHEMA=1) adds its own
    dep.wait_for(kuma_db.schema_ready, timeout=20, what="schema")
    kuma_db.executemany("INSERT INTO monitor (id, name, active, user_id, node_id) VALUES "
                        "(%s, %s, 1, 1, %s)",
                        [(i, "m%d" % i, "node%d" % (i % 3 + 1)) for i in range(1, 31)])

    # kumaguard renders the include and reloads the nginx the entrypoint started: the pin
    # cookie reaches each node, which only the generated include can route
    def every_pin_routes():
        for n in nodes:
            status, node = answering_node(dep, headers={"Cookie": "KUMA_FIXED_NODE=%s"
                                                        % n.node_id})
            if (status, node) != (200, n.node_id):
                return False
        return True

    dep.wait_for(every_pin_routes, timeout=30, what="nginx routing to every node by pin cookie")
    with open(dep.include) as f:
        include = f.read()
    assert "GENERATED FILE" in include and "upstream kuma_cluster" in include
    for n in nodes:
        assert n.address in include
    assert _alive(nginx_pid), "the reload must not replace the nginx master"

    # plain traffic spreads over the nodes by client address
    dep.settle()
    assert set(nodes_by_source(dep).values()) == {"node1", "node2", "node3"}

    # controller paths reach kumaguard, with the state it read from MariaDB
    status_doc = dep.get_json("/api/system-status")
    assert isinstance(status_doc, dict) and status_doc
    dep.wait_for(lambda: {k: v["effective"] for k, v in capacity(dep).items()}
                 == {"node1": 10, "node2": 10, "node3": 10}, timeout=20,
                 what="/lb/capacity via nginx counting the seeded monitors")
    health = dep.get_json("/kumaguard/health")
    assert health["db"] == "ok" and health["leader"] is True

    # the secrets came from their files and are not shown
    status, _, raw = dep.get("/api/debug-config")
    assert status == 401, "debug-config names hosts and users: it needs the token"
    status, _, raw = dep.get("/api/debug-config", headers={"Authorization": "Bearer " + TOKEN})
    assert status == 200
    config = json.loads(raw)
    for var in ("DB_PASSWORD", "KUMAGUARD_API_TOKEN", "KUMA_API_KEY"):
        assert config[var] == "(redacted)", (var, config.get(var))
    for secret in (b"kumapw", TOKEN.encode(), API_KEY.encode()):
        assert secret not in raw

    # the API token from KUMAGUARD_API_TOKEN_FILE guards actions; nginx's forwarding headers
    # keep a proxied request from passing as a local one
    status, _, _ = dep.request("POST", "/api/trigger-health-check", body=b"{}",
                               headers={"Content-Type": "application/json"})
    assert status == 401
    status, _, body = dep.request("POST", "/api/trigger-health-check", body=b"{}",
                                  headers={"Content-Type": "application/json",
                                           "Authorization": "Bearer " + TOKEN})
    assert 200 <= status < 300, body[:300]

    # a node dies: kumaguard reloads the same nginx again and no client reaches the dead node
    nodes[1].kill()
    def available():
        return {n["node_id"] for n in dep.get_json("/lb/available-nodes")["available_nodes"]}

    dep.wait_for(lambda: available() == {"node1", "node3"}, timeout=15,
                 what="node2 leaves /lb/available-nodes")
    dep.wait_for(lambda: capacity(dep)["node2"]["effective"] == 0, timeout=15,
                 what="node2's monitors moved")
    dep.settle()
    seen = nodes_by_source(dep)
    assert "node2" not in seen.values() and set(seen.values()) == {"node1", "node3"}
    assert dep.nginx_pid() == nginx_pid and _alive(nginx_pid)

    # SIGTERM: kumaguard first, then nginx; both gone, port closed, exit 0
    rc = dep.stop()
    assert rc == 0, dep.read_log()[-4000:]
    assert not _alive(kg_pid) and not _alive(nginx_pid)
    wait_until(lambda: not _group_alive(dep.pgid), timeout=5,
               what="every process of the deployment gone")
    assert not _port_open(dep.proxy_port) and not _port_open(dep.kg_port)
    log = dep.read_log()
    assert "stopped (kumaguard status 0, nginx status 0)" in log, log[-3000:]
    assert log.index("signal 15: stopping") < log.index("stopped (kumaguard status")
    dep.assert_no_sanitizer_report()
    with open(dep.error_log) as f:
        assert "[emerg]" not in f.read()

    # a restart (same state volume) starts nginx with the last include it accepted, so the
    # live nodes are routed before kumaguard has probed anything
    dep2 = Deployment(tmp_path, env, name="restart", state_dir=dep.state_dir, wait=False)
    deployments.append(dep2)
    dep2.wait_for(lambda: "nginx started" in dep2.read_log(), timeout=15, what="restarted nginx")
    assert "last good include" in dep2.read_log(), dep2.read_log()
    status, node = answering_node(dep2, headers={"Cookie": "KUMA_FIXED_NODE=node3"})
    assert (status, node) == (200, "node3")
    dep2.wait_for(dep2._ready, timeout=30, what="restarted deployment ready")
    assert dep2.stop() == 0, dep2.read_log()[-4000:]
    dep2.assert_no_sanitizer_report()


@pytest.mark.parametrize("victim", ["nginx", "kumaguard"])
def test_when_one_process_dies_the_other_is_stopped_and_the_exit_is_nonzero(
        tmp_path, procs, deployments, victim):
    node = Kumasim("node1")
    procs.append(node)
    dep = Deployment(tmp_path, {"KUMAGUARD_NODES": "node1=%s" % node.address})
    deployments.append(dep)
    dep.wait_for(lambda: answering_node(dep) == (200, "node1"), timeout=20,
                 what="traffic reaching node1")
    nginx_pid, kg_pid = dep.nginx_pid(), dep.kumaguard_pid()

    os.kill(nginx_pid if victim == "nginx" else kg_pid, signal.SIGKILL)
    rc = dep.proc.wait(timeout=30)
    dep.log.close()
    assert rc != 0, "a container whose %s died must exit non-zero to be restarted" % victim
    assert not _alive(kg_pid) and not _alive(nginx_pid)
    # nginx workers outlive a killed master; the entrypoint must not leave them serving
    wait_until(lambda: not _group_alive(dep.pgid), timeout=5,
               what="every process of the deployment gone (nginx workers included)")
    assert not _port_open(dep.proxy_port)
    log = dep.read_log()
    assert "%s exited" % victim in log, log[-3000:]
    if victim == "nginx":
        assert "signal 15: stopping" in log  # kumaguard was stopped cleanly, not killed
        dep.assert_no_sanitizer_report()


def _uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line for %d" % pid)


def test_runs_unprivileged_like_the_image(procs, deployments):
    """The image runs as uid 10001: nginx (port above 1024, pid and temp files in its prefix)
    and kumaguard run as one unprivileged user, and kumaguard's reload reaches that nginx."""
    unprivileged = 65534  # nobody; when the suite itself runs unprivileged, as that user
    d = tempfile.mkdtemp(prefix="kg-deploy-unpriv-")
    try:
        os.chmod(d, 0o755)
        run_as = None
        if os.geteuid() == 0:
            os.chown(d, unprivileged, unprivileged)
            run_as = unprivileged
        expected_uid = unprivileged if run_as is not None else os.geteuid()
        nodes = [Kumasim("node%d" % i) for i in (1, 2)]
        procs.extend(nodes)
        # no Kuma API key yet: an empty secret file (as `touch` leaves it) means no nudge
        empty_key = write_secret(d, "kuma_api_key", "")
        os.chmod(empty_key, 0o644)
        dep = Deployment(d, {"KUMAGUARD_NODES": ",".join("%s=%s" % (n.node_id, n.address)
                                                         for n in nodes),
                             "KUMA_API_KEY_FILE": empty_key,
                             "KUMAGUARD_API_TOKEN": TOKEN}, run_as=run_as)
        deployments.append(dep)
        nginx_pid, kg_pid = dep.nginx_pid(), dep.kumaguard_pid()
        assert _uid(nginx_pid) == expected_uid and _uid(kg_pid) == expected_uid
        # the generated include (per-node upstreams) is live: kumaguard reloaded nginx
        def pins_route():
            return all(answering_node(dep, headers={"Cookie": "KUMA_FIXED_NODE=" + n.node_id})
                       == (200, n.node_id) for n in nodes)

        dep.wait_for(pins_route, timeout=20, what="pins routed as unprivileged")
        with open(dep.include) as f:
            include = f.read()
        assert all(n.address in include for n in nodes)
        assert dep.nginx_pid() == nginx_pid
        dep.settle()
        assert [_uid(pid) for pid, _ in _children(nginx_pid)] == [expected_uid]
        assert "reconcile nudges are off" in dep.read_log()
        status, _, raw = dep.get("/api/debug-config",
                                 headers={"Authorization": "Bearer " + TOKEN})
        assert status == 200, raw[:300]
        config = json.loads(raw)
        assert "KUMA_API_KEY" in config and config["KUMA_API_KEY"] is None
        assert dep.stop() == 0, dep.read_log()[-4000:]
        wait_until(lambda: not _group_alive(dep.pgid), timeout=5, what="deployment gone")
        assert "stopped (kumaguard status 0, nginx status 0)" in dep.read_log()
        dep.assert_no_sanitizer_report()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_dashboard_through_the_proxy_loads_its_assets_from_kumaguard(tmp_path, procs,
                                                                    deployments):
    """The sample site serves the dashboard at /kumaguard/: its stylesheets and scripts must come
    from kumaguard too, not from a Kuma node (which answers every path)."""
    node = Kumasim("node1")
    procs.append(node)
    dep = Deployment(tmp_path, {"KUMAGUARD_NODES": "node1=%s" % node.address})
    deployments.append(dep)
    status, headers, body = dep.get("/kumaguard/")
    assert status == 200 and "x-kuma-node" not in headers
    html = body.decode("utf-8", "replace")
    assets = re.findall(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", html)
    assert assets, "no <script src> or <link href> in the dashboard page"
    wrong = []
    for ref in assets:
        url = urllib.parse.urljoin("/kumaguard/", ref)
        if urllib.parse.urlsplit(url).scheme:
            continue  # nothing external is expected, but it would not be ours to check
        st, hd, _ = dep.get(url)
        if st != 200 or "x-kuma-node" in hd:
            wrong.append("%s -> %s %s" % (url, st, hd.get("x-kuma-node", "")))
    assert not wrong, "dashboard assets not served by kumaguard through nginx: %s" % wrong
    assert dep.stop() == 0


def test_bad_settings_and_a_mismatched_site_config_stop_the_start_up(tmp_path, deployments):
    # a value that would inject nginx configuration
    bad = Deployment(tmp_path, {"KG_PROXY_LISTEN": "8080; include /etc/passwd"}, name="bad",
                     wait=False)
    deployments.append(bad)
    assert bad.proc.wait(timeout=20) == 1
    assert "KG_PROXY_LISTEN" in bad.read_log()

    # a site config whose deployment names changed (here: no kumaguard upstream) is refused
    # rather than producing an nginx that proxies the controller paths nowhere
    with open(SITE_CONF) as f:
        site = f.read()
    drifted = os.path.join(str(tmp_path), "drifted-site.conf")
    with open(drifted, "w") as f:
        f.write(re.sub(r"server\s+kumaguard:\d+;", "server 127.0.0.1:1;", site))
    dep = Deployment(tmp_path, {}, name="drift", site_conf=drifted, wait=False)
    deployments.append(dep)
    assert dep.proc.wait(timeout=20) == 1
    assert "server kumaguard:PORT;" in dep.read_log()
    assert not _group_alive(dep.pgid)
    assert "nginx started" not in dep.read_log()
