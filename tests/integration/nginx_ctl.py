"""Start, reload and stop a private nginx for tests and benchmarks (Debian's /usr/sbin/nginx).

Standard library only.  Each instance lives in its own prefix directory with its own pid file,
error log and temp paths (nginx otherwise falls back to system paths whatever -p says) and
listens on loopback ports only.

    ngx = Nginx(workdir, http_body=sample_site(include, "127.0.0.1:8080", port))
    ngx.start()
    status, headers, body = ngx.request("GET", "/")
    ngx.stop()

`test_cmd` and `reload_cmd` are the shell commands kumaguard should run for this instance
(NGINX_TEST_CMD / NGINX_RELOAD_CMD).  Every instance started here is killed at interpreter exit
if a test forgot to stop it.
"""

import atexit
import http.client
import os
import re
import shlex
import socket
import subprocess
import time
import weakref

from kumasim_ctl import free_port  # noqa: F401  (one port picker for every test helper)

NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SAMPLE_SITE = os.path.join(ROOT, "docker", "nginx-site.conf")

# A valid include for nginx to start with before kumaguard has written the real one.
BOOTSTRAP_INCLUDE = """# bootstrap: replaced by kumaguard on its first render
upstream kuma_cluster { server 127.0.0.1:9 down; }
map $cookie_KUMA_FIXED_NODE $kuma_upstream { default kuma_cluster; }
"""

_live = weakref.WeakSet()


def sample_site(include_path, kumaguard_addr, port, listen_host="127.0.0.1"):
    """The shipped docker/nginx-site.conf, pointed at a test include, kumaguard and port.

    Fails loudly when one of the three lines it rewrites is missing, so a change to the sample
    that breaks this contract shows up in the tests rather than testing something else."""
    with open(SAMPLE_SITE) as f:
        text = f.read()
    subs = [
        (r"^include /etc/nginx/kumaguard/kuma-upstream\.conf;$", "include %s;" % include_path),
        (r"^(\s*)server kumaguard:8080;$", r"\g<1>server %s;" % kumaguard_addr),
        (r"^(\s*)listen 80;$", r"\g<1>listen %s:%d;" % (listen_host, port)),
    ]
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
        if n != 1:
            raise ValueError("docker/nginx-site.conf: no line matches %r" % pattern)
    return text


def static_site(upstream_servers, port, listen_host="127.0.0.1", name="kuma_static"):
    """A hand-written site with a fixed upstream (the benchmark's baseline): the same proxy
    settings as the sample site's Kuma location, no generated include."""
    servers = "\n".join("    server %s max_fails=1 fail_timeout=5s;" % s for s in upstream_servers)
    return """
map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
upstream {name} {{
    hash $remote_addr consistent;
{servers}
    keepalive 16;
}}
server {{
    listen {host}:{port};
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_connect_timeout 3s;
    location / {{
        proxy_pass http://{name};
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        proxy_read_timeout 75s;
    }}
}}
""".format(name=name, servers=servers, host=listen_host, port=port)


class NginxError(RuntimeError):
    pass


class Nginx:
    """One nginx master (daemon off) with its own prefix directory.

    http_body: text placed inside `http { }` (e.g. sample_site(...)); port: the port that body
    listens on (used by request() and to wait for start-up); include_path: the generated
    include (a bootstrap one is written there when absent)."""

    def __init__(self, workdir, http_body, port, include_path=None, workers=1):
        self.dir = os.path.abspath(str(workdir))
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self.port = port
        self.include_path = include_path or os.path.join(self.dir, "kuma-upstream.conf")
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        self.error_log_path = os.path.join(self.dir, "error.log")
        self.pid_path = os.path.join(self.dir, "nginx.pid")
        self.http_body = http_body
        self.workers = workers
        self.proc = None

    # ------------------------------------------------------------------ configuration

    def render_conf(self):
        d = self.dir
        return """worker_processes {w};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
{body}
}}
""".format(w=self.workers, d=d, body=self.http_body)

    def write_conf(self):
        with open(self.conf_path, "w") as f:
            f.write(self.render_conf())
        if not os.path.exists(self.include_path):
            with open(self.include_path, "w") as f:
                f.write(BOOTSTRAP_INCLUDE)

    def _base_args(self):
        return [NGINX_BIN, "-p", self.dir, "-c", self.conf_path]

    @property
    def test_cmd(self):
        """Shell command validating this instance's configuration (NGINX_TEST_CMD)."""
        return " ".join(shlex.quote(a) for a in self._base_args() + ["-t", "-q"])

    @property
    def reload_cmd(self):
        """Shell command reloading this instance (NGINX_RELOAD_CMD)."""
        return " ".join(shlex.quote(a) for a in self._base_args() + ["-s", "reload"])

    def validate(self):
        """Runs nginx -t; returns (ok, output)."""
        r = subprocess.run(self._base_args() + ["-t", "-q"], capture_output=True, text=True)
        return r.returncode == 0, r.stderr + r.stdout

    # ------------------------------------------------------------------ process control

    def start(self, timeout=5.0):
        self.write_conf()
        ok, out = self.validate()
        if not ok:
            raise NginxError("test nginx configuration is invalid:\n" + out)
        self.proc = subprocess.Popen(self._base_args() + ["-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NginxError("nginx exited with %s:\n%s" % (self.proc.returncode,
                                                                self.error_log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    if self.workers_pids():
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise NginxError("nginx did not listen on %d within %.1fs:\n%s"
                         % (self.port, timeout, self.error_log()))

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def workers_pids(self):
        """Live worker processes (children of the master), from /proc."""
        if not self.running:
            return set()
        return _children(self.proc.pid)

    def wait_workers_replaced(self, old, timeout=5.0):
        """Waits until none of the `old` worker pids is alive and a new worker runs.  After a
        reload this is the reliable sign that no request goes to the old upstream any more."""
        return _wait_replaced(self.proc.pid, old, timeout)

    @property
    def synced_reload_cmd(self):
        """Reload command for kumaguard that returns only once nginx's old workers are gone,
        and then appends the sha256 of the include to <dir>/reloads.log.  A test that sees the
        current include's hash there knows nginx routes by exactly that file."""
        return " ".join(shlex.quote(a) for a in [
            "/usr/bin/python3", os.path.abspath(__file__), "reload", self.dir,
            self.include_path])

    @property
    def reloads_log(self):
        return os.path.join(self.dir, "reloads.log")

    def applied_include_hashes(self):
        try:
            with open(self.reloads_log) as f:
                return [line.split()[0] for line in f if line.strip()]
        except OSError:
            return []

    def reload(self, timeout=5.0):
        old = self.workers_pids()
        r = subprocess.run(self._base_args() + ["-s", "reload"], capture_output=True, text=True)
        if r.returncode != 0:
            raise NginxError("reload failed: " + r.stderr)
        if not self.wait_workers_replaced(old, timeout):
            raise NginxError("old workers still alive %.1fs after reload" % timeout)

    def stop(self, timeout=5.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                self.proc.kill()
            self.proc.wait(5)

    def error_log(self):
        try:
            with open(self.error_log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------------ HTTP

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def request(self, method, path, headers=None, body=None, source_ip=None, timeout=5.0):
        """One request on a fresh connection -> (status, lower-case headers dict, body bytes).
        source_ip binds the client side (any 127.x.y.z works on Linux), which is how tests
        look like several clients to `hash $remote_addr`."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout,
            source_address=(source_ip, 0) if source_ip else None)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()


def _children(pid):
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) >= 2 and rest[0] != "Z" and int(rest[1]) == pid:
            out.add(int(name))
    return out


def _wait_replaced(master, old, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _children(master)
        if now and not (now & set(old)):
            return True
        time.sleep(0.01)
    return False


def file_sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _cli_reload(prefix, include_path):
    """`nginx_ctl.py reload DIR INCLUDE`: reload, wait for the old workers, log the include."""
    with open(os.path.join(prefix, "nginx.pid")) as f:
        master = int(f.read().strip())
    old = _children(master)
    sha = file_sha256(include_path)
    r = subprocess.run([NGINX_BIN, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
                        "-s", "reload"])
    if r.returncode != 0:
        return r.returncode
    # Bounded: an old worker holding a long WebSocket stays until it closes.
    done = _wait_replaced(master, old, 5.0)
    with open(os.path.join(prefix, "reloads.log"), "a") as f:
        f.write("%s %.3f %s\n" % (sha, time.time(), "replaced" if done else "old-workers-left"))
    return 0


@atexit.register
def _kill_leftovers():
    for n in list(_live):
        try:
            n.kill()
        except Exception:  # best effort at interpreter exit
            pass


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 4 and sys.argv[1] == "reload":
        sys.exit(_cli_reload(sys.argv[2], sys.argv[3]))
    sys.stderr.write("usage: nginx_ctl.py reload PREFIX_DIR INCLUDE_PATH\n")
    sys.exit(2)
