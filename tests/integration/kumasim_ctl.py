"""Start and drive kumasim (the simulated Kuma node) from integration tests.

Standard library only.  The binary is looked up in $KG_BUILD_DIR (default <repository>/build),
or taken from $KUMASIM_BIN when that is set.

A node is realistic by default (tests/kumasim/README.md): it needs a database, which is the test's
cluster store when one is given (`store=cluster`, a kg_harness SqliteCluster or MariaCluster),
else a private SQLite file of its own.  The first user exists (`setup_done=True`) unless a test
asks for a fresh cluster.

    with Kumasim("node1", store=cluster) as node:
        assert node.reconcile("any-key") == 200     # answers when the whole reconcile is done
        node.copies()                               # {monitor id: copies checking on this node}
        node.timeline()                             # every copy's start/stop time (epoch ms)
        node.set_mode("503")
        node.freeze()   # SIGSTOP: accepts connections, never answers (and misses its cron)
        node.thaw()

    with KumasimFleet(1000, store=cluster) as fleet:   # 1,000 node ids from one process
        fleet.nodes[0].health()

`instant=True` is the old, kinder node (no database, immediate answers, `api_key` compared);
a test that uses it must say why in a comment.

Every process started here is SIGKILLed at interpreter exit if a test forgot to stop it, so a
failing test cannot leave simulated nodes holding ports.
"""

import atexit
import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref

DEFAULT_BUILD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "build")
MODES = ("healthy", "fail", "503", "hang", "slow", "partition")
_LISTEN_RE = re.compile(r"^kumasim (\S+) listening on (\S+):(\d+)$")
# Variables kumasim reads like a real node; scrubbed from the inherited environment so a test
# gets only what it passes.
_NODE_ENV = re.compile(r"^(UPTIME_KUMA_.*|NODE_ID|NODE_NAME|NODE_HOST|PORT|DATA_DIR|API_RATE_LIMIT)$")
_live = weakref.WeakSet()
_tmpdirs = []


def find_binary():
    """Path of the kumasim executable: $KUMASIM_BIN, else the first `kumasim` in the build dir."""
    explicit = os.environ.get("KUMASIM_BIN")
    if explicit:
        return explicit
    build = os.environ.get("KG_BUILD_DIR", DEFAULT_BUILD_DIR)
    direct = os.path.join(build, "kumasim")
    if os.path.isfile(direct) and os.access(direct, os.X_OK):
        return direct
    for root, dirs, files in os.walk(build):
        dirs[:] = [d for d in dirs if d != "CMakeFiles"]
        if "kumasim" in files:
            path = os.path.join(root, "kumasim")
            if os.access(path, os.X_OK):
                return path
    raise FileNotFoundError(
        "kumasim not found in %s (set KG_BUILD_DIR or KUMASIM_BIN; build target `kumasim`)" % build)


# Ports handed out by free_port: below the kernel's ephemeral range (32768 and up by default),
# so a port picked here is never taken meanwhile by some outgoing connection's source port, and
# split between pytest-xdist workers (PYTEST_XDIST_WORKER=gw<N>), so two tests running at once
# never pick the same one.
_PORT_BASE, _PORT_SPAN = 20000, 3000
_port_next = None


def _port_range():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    idx = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    lo = _PORT_BASE + (idx % 4) * _PORT_SPAN
    return lo, lo + _PORT_SPAN


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (for tests that need to know it before starting):
    the next bindable one of this process's range, in turn, so a port just given up is not
    handed out again soon."""
    global _port_next
    lo, hi = _port_range()
    if _port_next is None or not lo <= _port_next < hi:
        _port_next = lo + (os.getpid() * 7919) % _PORT_SPAN
    for _ in range(_PORT_SPAN):
        port = _port_next
        _port_next = lo + (_port_next + 1 - lo) % _PORT_SPAN
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d-%d on %s" % (lo, hi - 1, host))


class KumasimError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# One node's HTTP surface (shared by a single-node process and each node of a fleet)
# ------------------------------------------------------------------------------------------------

class _NodeApi:
    """Needs self.node_id, self.host, self.port."""

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def address(self):
        """host:port, as written in the `node.host` column."""
        return "%s:%d" % (self.host, self.port)

    def request(self, method, path, body=None, headers=None, timeout=5.0, source=None):
        """One request on a fresh connection; returns (status, headers dict, body bytes).

        Header names in the returned dict are lower-case.  `source` binds the client to that
        local address (e.g. "127.0.0.2"), to act as another client IP.  Raises socket.timeout /
        ConnectionError as the transport does.
        """
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
        try:
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _json(self, method, path, body=None, timeout=5.0):
        status, _, data = self.request(method, path, body=body, timeout=timeout)
        if status != 200:
            raise KumasimError("%s %s -> %d %r" % (method, path, status, data))
        return json.loads(data)

    def health(self, timeout=5.0):
        """GET /api/v1/health -> (status, parsed JSON body or None)."""
        status, _, data = self.request("GET", "/api/v1/health", timeout=timeout)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, None

    def set_mode(self, mode, slow_ms=None):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        path = "/_sim/mode" if slow_ms is None else "/_sim/mode?slow_ms=%d" % slow_ms
        self._json("POST", path, body=mode)

    def stats(self):
        return self._json("GET", "/_sim/stats")

    def reset_stats(self):
        self._json("POST", "/_sim/reset-stats")

    def monitors(self):
        """GET /_sim/monitors: the node's list, every copy checking, duplicates, leaks."""
        return self._json("GET", "/_sim/monitors")

    def copies(self):
        """{monitor id: number of copies checking on this node} (listed and leaked)."""
        return {m["id"]: m["copies"] for m in self.monitors()["monitors"]}

    def runs(self, since=0):
        """Reconcile runs, finished (oldest first) then in progress; ids > since."""
        return self._json("GET", "/_sim/runs?since=%d" % since)["runs"]

    def timeline(self, monitor_id=None):
        """GET /_sim/timeline: every copy of each monitor this node ran since the record began
        (or runs now), with real-clock start/stop times in epoch ms.  Returns the parsed answer:
        {"nodeId", "since_ms", "now_ms", "cap", "events", "dropped",
         "monitors": [{"id", "copies": [{"copy", "start_ms", "stop_ms", "leaked_ms",
                                         "started_by", "stopped_by", "running", "listed"}]}]}
        start_ms None: began before since_ms (or its event was pushed out of the ring, which
        "dropped" counts); stop_ms None: still running (a leaked copy never stops)."""
        path = "/_sim/timeline" if monitor_id is None else "/_sim/timeline?id=%d" % monitor_id
        return self._json("GET", path, timeout=30.0)

    def copy_intervals(self):
        """{monitor id: [(start_ms or None, stop_ms or None, leaked), ...]} from timeline()."""
        return {m["id"]: [(c["start_ms"], c["stop_ms"], c["leaked_ms"] is not None or
                           (c["running"] and not c["listed"])) for c in m["copies"]]
                for m in self.timeline()["monitors"]}

    def clear_timeline(self):
        """Forgets the record; it begins again now (copies running stay reported)."""
        return self._json("POST", "/_sim/timeline?clear=1")

    def set_timeline_cap(self, cap):
        """Keeps at most `cap` events (0 = no record); the newest are kept."""
        return self._json("POST", "/_sim/timeline?cap=%d" % cap)

    def set_clock(self, skew_ms=None, next_cron_in_ms=None):
        """Sets the node clock's skew, or places its next :00 next_cron_in_ms from now.
        Returns {clock_skew_ms, node_clock_ms, cron_phase_ms, next_cron_ms}."""
        if (skew_ms is None) == (next_cron_in_ms is None):
            raise ValueError("give exactly one of skew_ms, next_cron_in_ms")
        q = ("skew_ms=%d" % skew_ms) if skew_ms is not None else (
            "next_cron_in_ms=%d" % next_cron_in_ms)
        return self._json("POST", "/_sim/clock?" + q)

    def set_rate_limit(self, limit=None, window_ms=None):
        """Sets API_RATE_LIMIT (0 = none) and/or its window; every client's count restarts."""
        q = []
        if limit is not None:
            q.append("limit=%d" % limit)
        if window_ms is not None:
            q.append("window_ms=%d" % window_ms)
        return self._json("POST", "/_sim/rate-limit?" + "&".join(q))

    def restart_process(self, timeout=10.0):
        """What a restart does to this node: leaks and runs gone, row re-registered online,
        assigned monitors started.  Returns the answer ({"ok", "monitors"})."""
        return self._json("POST", "/_sim/restart", timeout=timeout)

    def reconcile(self, authorization=None, timeout=30.0, source=None):
        """POST /api/v1/reconcile-monitors as kumaguard would -> status code.  A realistic node
        answers only when the whole reconcile is done, hence the long default timeout."""
        headers = {} if authorization is None else {"Authorization": authorization}
        return self.request("POST", "/api/v1/reconcile-monitors", body=b"{}", headers=headers,
                            timeout=timeout, source=source)[0]


# ------------------------------------------------------------------------------------------------
# The process
# ------------------------------------------------------------------------------------------------

class _Process:
    """A kumasim process; subclasses say what to run and how many nodes it prints."""

    def __init__(self, binary, startup_timeout, env):
        self.binary = binary or find_binary()
        self.startup_timeout = startup_timeout
        self.env = env
        self.proc = None

    def _base_args(self, store, sqlite_path, instant, api_key, setup_done, primary, node_host,
                   rate_limit, rate_window_ms, delay_scale, seed, clock_skew_ms, cron,
                   cron_phase_ms, mode, slow_ms, pidfile, threads, timeline_cap=None):
        args = []
        if instant:
            args.append("--instant")
            if api_key is not None:
                args += ["--api-key", api_key]
        else:
            if api_key is not None:
                raise ValueError("api_key is for instant=True only: a real node checks no key")
            if store is not None:
                args += store.kumasim_args()
            else:
                if sqlite_path is None:
                    d = tempfile.mkdtemp(prefix="kumasim-db-")
                    _tmpdirs.append(d)
                    sqlite_path = os.path.join(d, "kuma.db")
                args += ["--sqlite-path", str(sqlite_path)]
            if setup_done:
                args.append("--setup-done")
            if primary:
                args.append("--primary")
            if not cron:
                args.append("--no-cron")
        for flag, value in (("--node-host", node_host), ("--rate-limit", rate_limit),
                            ("--rate-window-ms", rate_window_ms),
                            ("--delay-scale", delay_scale), ("--seed", seed),
                            ("--clock-skew-ms", clock_skew_ms),
                            ("--cron-phase-ms", cron_phase_ms), ("--mode", mode),
                            ("--slow-ms", slow_ms), ("--pidfile", pidfile),
                            ("--threads", threads), ("--timeline-cap", timeline_cap)):
            if value is not None:
                args += [flag, str(value)]
        return args

    def _spawn(self, argv, expect):
        """Starts argv and waits for `expect` "listening" lines; returns [(id, host, port)]."""
        if self.running:
            raise KumasimError("already running")
        env = {k: v for k, v in os.environ.items() if not _NODE_ENV.match(k)}
        env.update(self.env or {})
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env, start_new_session=True)
        _live.add(self)
        lines = self._read_lines(expect, self.startup_timeout)
        out = []
        for line in lines:
            m = _LISTEN_RE.match(line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3))))
        if len(out) != expect:
            rc = self.proc.poll()
            self.kill()
            raise KumasimError("kumasim did not start (exit %r, output %r, stderr %r)"
                               % (rc, lines[:3], self.stderr_text()[-2000:]))
        self.listen_line = lines[0] if lines else None
        return out

    def stderr_text(self):
        """What the process wrote on stderr so far (its errors, sanitizer reports)."""
        f = getattr(self, "_stderr", None)
        if f is None or f.closed:
            return ""
        f.seek(0)
        return f.read().decode("utf-8", "replace")

    def _read_lines(self, count, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while buf.count(b"\n") < count:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
        return [l.decode("utf-8", "replace") for l in buf.split(b"\n") if l]

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def freeze(self, timeout=5.0):
        """SIGSTOP: the kernel still accepts connections; nothing answers. A real frozen node.
        Returns once every thread is stopped: delivery is asynchronous, and on a loaded
        machine a worker thread could otherwise still answer one more request."""
        self.signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = []
                for tid in os.listdir("/proc/%d/task" % self.proc.pid):
                    with open("/proc/%d/task/%s/stat" % (self.proc.pid, tid)) as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                return
            if states and all(st in ("T", "t") for st in states):
                return
            time.sleep(0.005)
        raise KumasimError("kumasim %d did not stop within %.1fs" % (self.proc.pid, timeout))

    def thaw(self):
        self.signal(signal.SIGCONT)

    def wait(self, timeout=5.0):
        """Wait for exit; returns the exit code (negative = killed by that signal)."""
        rc = self.proc.wait(timeout)
        self._close_pipe()
        return rc

    def kill(self):
        """SIGKILL, as a crash would; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.wait(5.0)

    def stop(self, timeout=5.0):
        """Clean stop with SIGTERM (thawing a frozen process first); SIGKILL if it hangs.

        Returns the exit code: 0 for a clean exit.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.wait(5.0)
                raise KumasimError("kumasim %d ignored SIGTERM for %.1fs" % (self.proc.pid, timeout))
        return self.wait(timeout)

    def _close_pipe(self):
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except KumasimError:
                pass
        self._close_pipe()
        return False


class Kumasim(_Process, _NodeApi):
    """One kumasim process serving one node.  Starts on construction unless start=False."""

    def __init__(self, node_id="node1", port=0, host="127.0.0.1", store=None, sqlite_path=None,
                 instant=False, api_key=None, setup_done=True, primary=False, node_host=None,
                 rate_limit=None, rate_window_ms=None, delay_scale=None, seed=None,
                 clock_skew_ms=None, cron=True, cron_phase_ms=None, mode=None, slow_ms=None,
                 pidfile=None, threads=None, timeline_cap=None, extra_args=(), binary=None,
                 start=True, startup_timeout=10.0, env=None):
        _Process.__init__(self, binary, startup_timeout, env)
        self.node_id = node_id
        self.host = host
        self.requested_port = port
        self.port = None
        self.listen_line = None
        self.options = self._base_args(store, sqlite_path, instant, api_key, setup_done,
                                       primary, node_host, rate_limit, rate_window_ms,
                                       delay_scale, seed, clock_skew_ms, cron, cron_phase_ms,
                                       mode, slow_ms, pidfile, threads,
                                       timeline_cap) + list(extra_args)
        if start:
            self.start()

    def argv(self):
        return [self.binary, "--listen", "%s:%d" % (self.host, self.requested_port),
                "--node-id", self.node_id] + self.options

    def start(self):
        """Start the process and wait for its "listening" line; raises KumasimError on failure."""
        (node_id, _, port), = self._spawn(self.argv(), 1)
        if node_id != self.node_id:
            self.kill()
            raise KumasimError("kumasim announced %r, expected %r" % (node_id, self.node_id))
        self.port = port
        return self

    def restart(self):
        """Start again on the same port (useful after kill() to simulate a node coming back)."""
        if self.running:
            self.stop()
        if self.port is not None:
            self.requested_port = self.port
        return self.start()

    def exit_via_api(self, timeout=5.0):
        """POST /_sim/exit, then wait for the process; returns the exit code."""
        self._json("POST", "/_sim/exit")
        return self.wait(timeout)


class FleetNode(_NodeApi):
    """One node of a KumasimFleet (its HTTP surface; the process is the fleet's)."""

    def __init__(self, fleet, node_id, host, port):
        self.fleet = fleet
        self.node_id = node_id
        self.host = host
        self.port = port


class KumasimFleet(_Process):
    """One kumasim process serving `count` node ids (PREFIX1..PREFIXcount), one port each."""

    def __init__(self, count, prefix="node", host="127.0.0.1", base_port=0, store=None,
                 sqlite_path=None, instant=False, setup_done=True, primary=False,
                 node_host="listen", rate_limit=None, rate_window_ms=None, delay_scale=None,
                 seed=None, clock_skew_ms=None, cron=True, cron_phase_ms=None, mode=None,
                 threads=None, timeline_cap=None, extra_args=(), binary=None, start=True,
                 startup_timeout=60.0, env=None):
        _Process.__init__(self, binary, startup_timeout, env)
        self.count = count
        self.prefix = prefix
        self.host = host
        self.base_port = base_port
        self.nodes = []
        self.options = self._base_args(store, sqlite_path, instant, None, setup_done, primary,
                                       node_host, rate_limit, rate_window_ms, delay_scale, seed,
                                       clock_skew_ms, cron, cron_phase_ms, mode, None, None,
                                       threads, timeline_cap) + list(extra_args)
        if start:
            self.start()

    def argv(self):
        return [self.binary, "--nodes", str(self.count), "--node-prefix", self.prefix,
                "--listen-base", "%s:%d" % (self.host, self.base_port)] + self.options

    def start(self):
        found = self._spawn(self.argv(), self.count)
        self.nodes = [FleetNode(self, node_id, self.host, port) for node_id, _, port in found]
        return self

    def node(self, node_id):
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)


@atexit.register
def _kill_leftovers():
    for sim in list(_live):
        try:
            if sim.proc is not None and sim.proc.poll() is None:
                sim.proc.kill()
                sim.proc.wait(5)
        except Exception:  # best effort at interpreter exit
            pass
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)
