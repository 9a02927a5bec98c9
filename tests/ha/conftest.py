"""Fixtures of the HA stage: a real 3-node MariaDB Galera cluster for the session
(scripts/galera-test-cluster.sh), a database of its own per test, and the figures the tests
measured, printed at the end of the run.

The cluster's directory is made with mkdtemp under /tmp because its nodes run as a non-root
user (rsync state transfer), who cannot enter pytest's private tmp_path.  Where Galera cannot
run at all (the script exits 2: no galera-4 provider, a server without wsrep) every test is
skipped with the script's reason; any other failure to start fails them."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from kg_harness import ROOT  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "galera-test-cluster.sh")
FIGURES = []


class Galera:
    """The running cluster: node k's socket, SQL port, raw SQL as root, kill/start a node."""

    def __init__(self, d):
        self.dir = d
        self.ports = {}
        with open(os.path.join(d, "ports")) as f:
            for line in f:
                name, sql, gcomm, ist, sst = line.split()
                self.ports[int(name[4:])] = int(sql)

    def socket(self, k):
        return os.path.join(self.dir, "node%d" % k, "sock")

    def pid(self, k):
        with open(os.path.join(self.dir, "node%d" % k, "pid")) as f:
            return int(f.read().strip())

    def sql(self, k, statement, db=None):
        """Runs SQL as root on node k; returns rows as lists of strings."""
        args = ["mariadb", "--no-defaults", "-S", self.socket(k), "-uroot", "-N", "-B",
                "--connect-timeout=5", "-e", statement]
        if db:
            args.insert(-2, db)
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("node%d: %s: %s" % (k, statement[:120], r.stderr.strip()))
        return [line.split("\t") for line in r.stdout.splitlines()]

    def script(self, *args, timeout=120):
        r = subprocess.run([SCRIPT] + list(args), capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("galera-test-cluster.sh %s: %s" % (" ".join(args), r.stderr))

    def kill_node(self, k):
        self.script("kill-node", self.dir, str(k))

    def start_node(self, k):
        self.script("start-node", self.dir, str(k), timeout=180)

    def size(self, k):
        rows = self.sql(k, "SHOW STATUS LIKE 'wsrep_cluster_size'")
        return int(rows[0][1])


@pytest.fixture(scope="session")
def galera():
    d = tempfile.mkdtemp(prefix="kg-galera-ha.", dir="/tmp")
    r = subprocess.run([SCRIPT, "start", d], capture_output=True, text=True, timeout=300)
    if r.returncode == 2:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip("Galera cannot run on this machine, HA tests skipped: %s" % r.stderr.strip())
    if r.returncode != 0:
        subprocess.run([SCRIPT, "stop", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail("the Galera test cluster did not start: %s" % r.stderr)
    g = Galera(d)
    yield g
    subprocess.run([SCRIPT, "stop", d], capture_output=True, timeout=120)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs():
    """Kumasim / Kumaguard objects; anything still running at the end is stopped."""
    started = []
    yield started
    for p in reversed(started):
        try:
            if hasattr(p, "read_log"):
                p.stop(check=False)
            else:
                p.stop()
        except Exception:
            pass


@pytest.fixture
def figures():
    """Append (name, value, unit) for the summary printed at the end of the run."""
    return FIGURES


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "HA figures (Galera, two controllers)")
    for name, value, unit in FIGURES:
        terminalreporter.write_line("%-60s %10.3f %s" % (name, value, unit))
