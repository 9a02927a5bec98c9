#!/bin/sh
# nginx_feed_bench.sh — what the generated nginx include costs, and how fast it follows a death.
#
#  1. Throughput: the same nginx binary, three instances side by side in one run, all in front
#     of the same three kumasim nodes:
#       A  the shipped docker/nginx-site.conf + the include rendered by kumaguard (requests
#          without the KUMA_FIXED_NODE cookie -> fixed proxy_pass http://kuma_cluster)
#       L  the same, with the site config of before: `proxy_pass http://$kuma_upstream;` for
#          every request (what existing site configs still do; it must keep working)
#       B  a hand-written static upstream with the same balancing and proxy settings
#     wrk runs against A, L and B in turn (ROUNDS times each, DURATION each); prints the
#     requests/s of each and the ratios A/B and L/B (goal for A/B >= 0.98).  Only ratios from
#     the same run mean anything on this shared 2-core machine.  Also runs them at the same
#     time (the same noise hits all), and, when valgrind is installed, counts the instructions
#     nginx executes per proxied request under callgrind: a deterministic figure when the
#     machine is too busy for wall-clock numbers to mean much.
#  2. Failover: kills one node TRIALS times and measures the time from the kill until nginx no
#     longer routes to it (the reload that drops it has finished and nginx's old workers are
#     gone; see the synced reload command in tests/integration/nginx_ctl.py), with
#     --health-interval $INTERVAL --health-fast-interval $FAST --fall $FALL.
#
# Usage: bench/nginx_feed_bench.sh            (KG_BUILD_DIR defaults to ./build)
# Tunables (environment): DURATION=3s ROUNDS=6 CONNECTIONS=32 TRIALS=5 INTERVAL=1s FAST=200ms
#                         FALL=2
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
export KG_BUILD_DIR="${KG_BUILD_DIR:-$HERE/../build}"
export DURATION="${DURATION:-3s}" ROUNDS="${ROUNDS:-6}" CONNECTIONS="${CONNECTIONS:-32}"
export TRIALS="${TRIALS:-5}" INTERVAL="${INTERVAL:-1s}" FAST="${FAST:-200ms}" FALL="${FALL:-2}"
export KG_BENCH_HERE="$HERE"

for tool in wrk /usr/sbin/nginx /usr/bin/python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 2; }
done
for bin in kumaguard kumasim; do
    [ -x "$KG_BUILD_DIR/$bin" ] || { echo "missing: $KG_BUILD_DIR/$bin (build it)" >&2; exit 2; }
done

exec /usr/bin/python3 - <<'PYEOF'
import os, re, statistics, subprocess, sys, tempfile, time, shutil

here = os.environ["KG_BENCH_HERE"]
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
from kumasim_ctl import Kumasim                                     # noqa: E402
from nginx_ctl import Nginx, file_sha256, free_port, sample_site, static_site  # noqa: E402
import http.client                                                   # noqa: E402

build = os.environ["KG_BUILD_DIR"]
tmp = tempfile.mkdtemp(prefix="kg-nginx-bench-")
sims, procs, instances = [], [], []


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        total += int(rest[11]) + int(rest[12])  # utime + stime
    return total


def wrk_start(ngx):
    return subprocess.Popen(["wrk", "-t1", "-c%s" % os.environ["CONNECTIONS"],
                             "-d%s" % os.environ["DURATION"], "http://127.0.0.1:%d/" % ngx.port],
                            stdout=subprocess.PIPE, text=True)


def wrk(ngx):
    """-> (requests/s, nginx worker CPU microseconds per request)."""
    return wrk_many([ngx])[0]


def wrk_many(ngxs):
    """Runs wrk against every instance at the same time -> [(requests/s, us cpu/request)]."""
    pids = [n.workers_pids() for n in ngxs]
    c0 = [cpu_ticks(p) for p in pids]
    runs = [wrk_start(n) for n in ngxs]
    outs = [r.communicate()[0] for r in runs]
    c1 = [cpu_ticks(p) for p in pids]
    return [_parse(n, out, b - a) for n, out, a, b in zip(ngxs, outs, c0, c1)]


def _parse(ngx, out, ticks):
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errs:
        raise SystemExit("wrk saw %s error responses on port %d:\n%s" % (errs.group(1),
                                                                         ngx.port, out))
    us = ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(1, int(n.group(1)))
    return float(m.group(1)), us


def callgrind_instructions(http_body, include, n=2000):
    """Instructions nginx executes per proxied request (valgrind callgrind, one process,
    counters zeroed after a warm-up): deterministic, unlike wall-clock figures on a shared
    machine.  None when valgrind is not installed."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return None
    port = free_port()
    d = tempfile.mkdtemp(prefix="cg-", dir=tmp)
    n_ = Nginx(d, http_body(port), port, include_path=include)
    with open(n_.conf_path, "w") as f:
        f.write(n_.render_conf().replace("worker_processes 1;",
                                         "worker_processes 1;\nmaster_process off;\ndaemon off;"))
    out = os.path.join(d, "callgrind.out")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                          "/usr/sbin/nginx", "-p", d, "-c", n_.conf_path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = None
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/")
                conn.getresponse().read()
                break
            except OSError:
                conn = None
                time.sleep(0.1)
        if conn is None:
            raise SystemExit("nginx under valgrind did not start")
        for _ in range(200):  # warm-up: keepalive connections to the node, caches
            conn.request("GET", "/")
            conn.getresponse().read()
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
        for _ in range(n):
            conn.request("GET", "/")
            r = conn.getresponse()
            r.read()
            assert r.status == 200
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
    finally:
        p.terminate()
        p.wait()
    with open(out + ".1") as f:
        m = re.search(r"^(?:totals|summary):\s+(\d+)", f.read(), re.M)
    return int(m.group(1)) / n


def legacy_site(text):
    """The sample site as it was before the fast path: every Kuma request through the variable
    (existing site configs look like this and must keep working)."""
    fast = ("error_page 418 = @kuma_pinned;\n        if ($cookie_KUMA_FIXED_NODE != \"\") {\n"
            "            return 418;\n        }\n        proxy_pass http://kuma_cluster;")
    if fast not in text:
        raise SystemExit("docker/nginx-site.conf: the pinned fast path is not where expected")
    return text.replace(fast, "proxy_pass http://$kuma_upstream;")


def cluster_addrs(include):
    text = open(include).read()
    m = re.search(r"^upstream kuma_cluster \{(.*?)^\}", text, re.S | re.M)
    return set(re.findall(r"^\s*server (\S+) max_fails", m.group(1), re.M)) if m else set()


def wait(fn, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if fn():
            return time.monotonic() - t0
        time.sleep(0.005)
    raise SystemExit("timed out waiting for " + what)


try:
    for i in (1, 2, 3):
        sims.append(Kumasim("node%d" % i))
    addrs = [s.address for s in sims]

    # A: sample site + kumaguard's include
    a_port, kg_port = free_port(), free_port()
    a_dir = os.path.join(tmp, "nginx-a")
    os.makedirs(a_dir)
    include = os.path.join(a_dir, "kuma-upstream.conf")
    a = Nginx(a_dir, sample_site(include, "127.0.0.1:%d" % kg_port, a_port), a_port,
              include_path=include)
    a.start()
    instances.append(a)
    args = [os.path.join(build, "kumaguard"), "--listen", "127.0.0.1:%d" % kg_port,
            "--state-dir", os.path.join(tmp, "state"),
            "--sqlite-path", os.path.join(tmp, "cluster.db"),
            "--health-interval", os.environ["INTERVAL"],
            "--health-fast-interval", os.environ["FAST"], "--health-timeout", "2s",
            "--fall", os.environ["FALL"], "--rise", "2",
            "--nginx-include", include, "--nginx-test-cmd", a.test_cmd,
            "--nginx-reload-cmd", a.synced_reload_cmd, "--nginx-reload-min-gap", "100ms",
            "--log-level", "warn"]
    for s in sims:
        args += ["--node", "%s=%s" % (s.node_id, s.address)]
    kg = subprocess.Popen(args, stdout=open(os.path.join(tmp, "kumaguard.log"), "wb"),
                          stderr=subprocess.STDOUT)
    procs.append(kg)

    def routed(expected):
        def ok():
            if kg.poll() is not None:
                raise SystemExit("kumaguard exited; log in " + tmp)
            h = a.applied_include_hashes()
            return (cluster_addrs(include) == set(expected) and h
                    and h[-1] == file_sha256(include))
        return ok
    wait(routed(addrs), 30, "kumaguard to route all three nodes")

    # B: static upstream, same nodes
    b_port = free_port()
    b = Nginx(os.path.join(tmp, "nginx-b"), static_site(addrs, b_port), b_port)
    b.start()
    instances.append(b)
    # L: the site config of before, on the same include (kumaguard reloads only A; the nodes do
    # not change while L is measured)
    l_port = free_port()
    legacy = legacy_site(sample_site(include, "127.0.0.1:%d" % kg_port, l_port))
    l_ = Nginx(os.path.join(tmp, "nginx-l"), legacy, l_port, include_path=include)
    l_.start()
    instances.append(l_)
    for n in (a, b, l_):  # each answers through a node before measuring
        st, h, _ = n.request("GET", "/")
        assert st == 200 and h.get("x-kuma-node"), (st, h)

    print("throughput: wrk -t1 -c%s -d%s, %s rounds, in turn" % (
        os.environ["CONNECTIONS"], os.environ["DURATION"], os.environ["ROUNDS"]))
    reloads_before = len(a.applied_include_hashes())
    ra, rb, rl, ca, cb, cl = [], [], [], [], [], []
    order = [(a, ra, ca), (l_, rl, cl), (b, rb, cb)]
    for r in range(int(os.environ["ROUNDS"])):
        for ngx_, rps, cpu in order[r % 3:] + order[:r % 3]:
            x, y = wrk(ngx_)
            rps.append(x)
            cpu.append(y)
        print("  round %d: shipped %7.0f req/s %5.1f us cpu/req | before (variable proxy_pass) "
              "%7.0f req/s %5.1f us | static upstream %7.0f req/s %5.1f us | shipped/static "
              "%.3f, before/static %.3f"
              % (r + 1, ra[-1], ca[-1], rl[-1], cl[-1], rb[-1], cb[-1], ra[-1] / rb[-1],
                 rl[-1] / rb[-1]))
    flaps = len(a.applied_include_hashes()) - reloads_before
    if flaps:
        print("  note: kumaguard reloaded nginx %d time(s) during the throughput rounds (probes "
              "failing under load); those rounds include reload cost" % flaps)
    ma, mb, ml = statistics.median(ra), statistics.median(rb), statistics.median(rl)
    pa = statistics.median([x / y for x, y in zip(ra, rb)])
    pl = statistics.median([x / y for x, y in zip(rl, rb)])
    print("requests/s median: shipped %.0f, before %.0f, static upstream %.0f; shipped/static: "
          "ratio of medians %.3f, median of per-round ratios %.3f (goal >= 0.98); before/static:"
          " %.3f, %.3f" % (ma, ml, mb, ma / mb, pa, ml / mb, pl))
    print("nginx worker CPU per request (median): shipped %.1f us, before %.1f us, static "
          "upstream %.1f us; static/shipped %.3f, static/before %.3f (less sensitive to other "
          "load on the machine)"
          % (statistics.median(ca), statistics.median(cl), statistics.median(cb),
             statistics.median(cb) / statistics.median(ca),
             statistics.median(cb) / statistics.median(cl)))

    print("throughput, all three at once (the same noise hits all; they share the CPUs):")
    qa, qb, ql = [], [], []
    for r in range(max(3, int(os.environ["ROUNDS"]) // 2)):
        (xa, _), (xl, _), (xb, _) = wrk_many([a, l_, b])
        qa.append(xa)
        ql.append(xl)
        qb.append(xb)
        print("  round %d: shipped %7.0f req/s | before %7.0f req/s | static upstream %7.0f "
              "req/s | shipped/static %.3f, before/static %.3f"
              % (r + 1, xa, xl, xb, xa / xb, xl / xb))
    print("concurrent: median of per-round ratios shipped/static %.3f, before/static %.3f" % (
        statistics.median([x / y for x, y in zip(qa, qb)]),
        statistics.median([x / y for x, y in zip(ql, qb)])))

    ia = callgrind_instructions(
        lambda p: sample_site(include, "127.0.0.1:%d" % kg_port, p), include)
    if ia is not None:
        il = callgrind_instructions(
            lambda p: legacy_site(sample_site(include, "127.0.0.1:%d" % kg_port, p)), include)
        ib = callgrind_instructions(lambda p: static_site(addrs, p), include)
        print("nginx instructions per proxied request (callgrind, 2000 requests): shipped %.0f, "
              "before %.0f, static upstream %.0f; static/shipped %.3f, static/before %.3f"
              % (ia, il, ib, ib / ia, ib / il))

    print("failover: --health-interval %s --health-fast-interval %s --fall %s, %s trials" % (
        os.environ["INTERVAL"], os.environ["FAST"], os.environ["FALL"], os.environ["TRIALS"]))
    times, written_ms = [], []
    for t in range(int(os.environ["TRIALS"])):
        victim = sims[t % 3]
        time.sleep(0.3 + 0.37 * t)  # do not kill in step with the probe schedule
        t0 = time.monotonic()
        victim.kill()
        rest = [s.address for s in sims if s is not victim]
        written = wait(lambda: cluster_addrs(include) == set(rest), 60, "the include to change")
        took = written + wait(routed(rest), 60, "nginx to drop %s" % victim.node_id)
        times.append(took)
        written_ms.append(written * 1000)
        print("  trial %d: %s killed -> include rewritten after %4.0f ms, nginx no longer "
              "routes to it after %4.0f ms" % (t + 1, victim.node_id, written * 1000, took * 1000))
        victim.restart()
        wait(routed(addrs), 60, "%s back in the upstream" % victim.node_id)
    print("death -> include rewritten: median %.0f ms; death -> not routed: min %.0f ms, "
          "median %.0f ms, max %.0f ms" % (statistics.median(written_ms), min(times) * 1000,
                                           statistics.median(times) * 1000, max(times) * 1000))
finally:
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(20)
    for n in instances:
        n.stop()
    for s in sims:
        try:
            s.stop()
        except Exception:
            s.kill()
    shutil.rmtree(tmp, ignore_errors=True)
PYEOF
