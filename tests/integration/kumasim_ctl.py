"""Start and drive kumasim (the simulated Kuma node) from integration tests.

Standard library only.  The binary is looked up in $KG_BUILD_DIR (default /work/main/build),
or taken from $KUMASIM_BIN when that is set.

    with Kumasim("node1", api_key="k") as node:
        node.set_mode("503")
        assert node.health()[0] == 503
        node.freeze()   # SIGSTOP: accepts connections, never answers
        node.thaw()

Every instance started here is SIGKILLed at interpreter exit if a test forgot to stop it, so a
failing test cannot leave simulated nodes holding ports.
"""

import atexit
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
import weakref

DEFAULT_BUILD_DIR = "/work/main/build"
MODES = ("healthy", "fail", "503", "hang", "slow")
_LISTEN_RE = re.compile(r"^kumasim (\S+) listening on (\S+):(\d+)$")
_live = weakref.WeakSet()


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


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (for tests that need to know it before starting)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class KumasimError(RuntimeError):
    pass


class Kumasim:
    """One kumasim process.  Starts on construction unless start=False."""

    def __init__(self, node_id="node1", port=0, host="127.0.0.1", api_key=None, mode=None,
                 slow_ms=None, pidfile=None, threads=None, extra_args=(), binary=None,
                 start=True, startup_timeout=5.0):
        self.node_id = node_id
        self.host = host
        self.requested_port = port
        self.api_key = api_key
        self.mode = mode
        self.slow_ms = slow_ms
        self.pidfile = pidfile
        self.threads = threads
        self.extra_args = list(extra_args)
        self.binary = binary or find_binary()
        self.startup_timeout = startup_timeout
        self.proc = None
        self.port = None
        self.listen_line = None
        if start:
            self.start()

    # ---------------------------------------------------------------- process control

    def argv(self):
        args = [self.binary, "--listen", "%s:%d" % (self.host, self.requested_port),
                "--node-id", self.node_id]
        if self.api_key is not None:
            args += ["--api-key", self.api_key]
        if self.mode is not None:
            args += ["--mode", self.mode]
        if self.slow_ms is not None:
            args += ["--slow-ms", str(self.slow_ms)]
        if self.pidfile is not None:
            args += ["--pidfile", str(self.pidfile)]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        return args + self.extra_args

    def start(self):
        """Start the process and wait for its "listening" line; raises KumasimError on failure."""
        if self.running:
            raise KumasimError("already running")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, start_new_session=True)
        _live.add(self)
        line = self._read_line(self.startup_timeout)
        m = _LISTEN_RE.match(line or "")
        if m is None or m.group(1) != self.node_id:
            rc = self.proc.poll()
            self.kill()
            raise KumasimError("kumasim did not start (exit %r, first line %r)" % (rc, line))
        self.listen_line = line
        self.port = int(m.group(3))
        return self

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
        return buf.split(b"\n", 1)[0].decode("utf-8", "replace")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def address(self):
        """host:port, as written in the `node.host` column."""
        return "%s:%d" % (self.host, self.port)

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
        raise KumasimError("kumasim %s did not stop within %.1fs" % (self.node_id, timeout))

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
                raise KumasimError("kumasim %s ignored SIGTERM for %.1fs" % (self.node_id, timeout))
        return self.wait(timeout)

    def restart(self):
        """Start again on the same port (useful after kill() to simulate a node coming back)."""
        if self.running:
            self.stop()
        if self.port is not None:
            self.requested_port = self.port
        return self.start()

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

    # ---------------------------------------------------------------- HTTP

    def request(self, method, path, body=None, headers=None, timeout=5.0):
        """One request on a fresh connection; returns (status, headers dict, body bytes).

        Header names in the returned dict are lower-case.  Raises socket.timeout /
        ConnectionError as the transport does.
        """
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
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

    def reconcile(self, authorization=None, timeout=5.0):
        """POST /api/v1/reconcile-monitors as kumaguard would -> status code."""
        headers = {} if authorization is None else {"Authorization": authorization}
        return self.request("POST", "/api/v1/reconcile-monitors", body=b"", headers=headers,
                            timeout=timeout)[0]

    def exit_via_api(self, timeout=5.0):
        """POST /_sim/exit, then wait for the process; returns the exit code."""
        self._json("POST", "/_sim/exit")
        return self.wait(timeout)


@atexit.register
def _kill_leftovers():
    for sim in list(_live):
        try:
            if sim.proc is not None and sim.proc.poll() is None:
                sim.proc.kill()
                sim.proc.wait(5)
        except Exception:  # best effort at interpreter exit
            pass
