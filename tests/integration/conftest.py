"""Shared pytest fixtures: a throwaway MariaDB for the session (and one of a test's own, which
it may pause), a fresh cluster database per test on either store, and cleanup of every process
a test started."""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from kg_harness import ROOT, MariaCluster, SqliteCluster  # noqa: E402
from kumasim_ctl import free_port  # noqa: E402

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def mariadb_server():
    """A real MariaDB server (throwaway datadir, own port and socket) for the whole session."""
    d = tempfile.mkdtemp(prefix="kg-mariadb-")
    port = free_port()
    script = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")
    r = subprocess.run([script, "start", d, str(port)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail("could not start MariaDB: %s" % r.stderr)
    info = {"dir": d, "port": port, "socket": os.path.join(d, "sock")}
    # the tests create one database each: let the kuma user do that
    subprocess.run(["mariadb", "--no-defaults", "-S", info["socket"], "-uroot", "-e",
                    "GRANT ALL ON *.* TO 'kuma'@'localhost'; GRANT ALL ON *.* TO "
                    "'kuma'@'127.0.0.1'; FLUSH PRIVILEGES;"], check=True)
    yield info
    subprocess.run([script, "stop", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["sqlite", "mariadb"])
def cluster(request, tmp_path):
    """A fresh, empty cluster database on the store named by the parameter."""
    if request.param == "sqlite":
        return SqliteCluster(str(tmp_path / "cluster.db"))
    server = request.getfixturevalue("mariadb_server")
    name = "kg_test_%d_%d" % (os.getpid(), next(_db_counter))
    subprocess.run(["mariadb", "--no-defaults", "-S", server["socket"], "-uroot", "-e",
                    "CREATE DATABASE %s" % name], check=True)
    return MariaCluster(server, name)


@pytest.fixture
def procs():
    """Collects Kumasim / Kumaguard objects; anything still running at the end is stopped."""
    started = []
    yield started
    for p in reversed(started):
        try:
            if hasattr(p, "proc") and hasattr(p, "read_log"):
                p.stop(check=False)
            else:
                p.stop()
        except Exception:
            pass


@pytest.fixture
def own_mariadb():
    """A MariaDB of this test's own (it may be paused with SIGSTOP, which must not touch the
    shared one), with a database kg_pause the kuma user may use; info["pid"] is mariadbd."""
    d = tempfile.mkdtemp(prefix="kg-mariadb-own-")
    port = free_port()
    script = os.path.join(ROOT, "scripts", "mariadb-test-server.sh")
    r = subprocess.run([script, "start", d, str(port)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail("could not start MariaDB: %s" % r.stderr)
    info = {"dir": d, "port": port, "socket": os.path.join(d, "sock")}
    subprocess.run(["mariadb", "--no-defaults", "-S", info["socket"], "-uroot", "-e",
                    "GRANT ALL ON *.* TO 'kuma'@'localhost'; FLUSH PRIVILEGES; "
                    "CREATE DATABASE kg_pause"], check=True)
    with open(os.path.join(d, "pid")) as f:
        info["pid"] = int(f.read().strip())
    yield info
    os.kill(info["pid"], signal.SIGCONT)
    subprocess.run([script, "stop", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
