"""docker-compose-cluster.yaml starts a cluster whose Kuma nodes can work: every variable given to
a node is one a cluster-aware Kuma node reads (no *_FILE, no API key), secrets reach the nodes
through an env file, node.host carries the port, node1 is the primary, the rate limit leaves
room for kumaguard and the users behind nginx; kumaguard keeps its own *_FILE secrets; and the
file validates with docker-compose 1.29 (the v2 plugin accepts what v1 does here).

There is no Docker engine on the test machine, so the file is checked as data and with
`docker-compose config` (which needs no engine)."""

import os
import re
import shutil
import subprocess

import yaml

from kg_harness import ROOT

COMPOSE = os.path.join(ROOT, "docker-compose-cluster.yaml")
NODE_ENV_EXAMPLE = os.path.join(ROOT, "docker", "kuma-node.env.example")
README = os.path.join(ROOT, "README.md")

# The environment a cluster-aware Uptime Kuma node (2.0.0-beta.3 cluster fork) reads, as
# observed on real nodes (the project's node facts, "Identity and registration"): it reads no
# *_FILE variable and no API-key variable -- a node given only UPTIME_KUMA_DB_PASSWORD_FILE
# exits with "Access denied (using password: NO)".
KUMA_NODE_ENV = {
    "UPTIME_KUMA_NODE_ID", "NODE_ID",
    "UPTIME_KUMA_NODE_NAME", "NODE_NAME",
    "UPTIME_KUMA_NODE_HOST", "NODE_HOST",
    "UPTIME_KUMA_PRIMARY",
    "UPTIME_KUMA_HOST",
    "UPTIME_KUMA_PORT", "PORT",
    "DATA_DIR",
    "UPTIME_KUMA_DB_TYPE", "UPTIME_KUMA_DB_HOSTNAME", "UPTIME_KUMA_DB_PORT",
    "UPTIME_KUMA_DB_NAME", "UPTIME_KUMA_DB_USERNAME", "UPTIME_KUMA_DB_PASSWORD",
    "API_RATE_LIMIT",
}
# Each node's default rate limit is 100 requests per 15 minutes per client address; behind
# nginx every browser and kumaguard share one address.
MIN_RATE_LIMIT = 1000
SECRET_FILES = ("db_password", "kumaguard_api_token", "kuma_api_key", "kuma-node.env")


def load():
    with open(COMPOSE) as f:
        return yaml.safe_load(f)  # resolves the x-kuma-node anchors and << merges


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env


def kuma_nodes(doc):
    nodes = {name: s for name, s in doc["services"].items() if name.startswith("uptime-kuma-")}
    assert len(nodes) == 3, sorted(doc["services"])
    return nodes


def env_file_keys(path):
    keys = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line.split("=", 1)[0])
    return keys


def default_of(value):
    """`${VAR:-default}` -> default; a plain value -> itself."""
    m = re.fullmatch(r"\$\{[A-Z_]+:-([^}]*)\}", str(value))
    return m.group(1) if m else str(value)


def test_every_variable_given_to_a_kuma_node_is_one_it_reads():
    for name, svc in kuma_nodes(load()).items():
        unknown = set(env_of(svc)) - KUMA_NODE_ENV
        assert not unknown, "%s gets variables a Kuma node does not read: %s" % (name, unknown)
        assert "secrets" not in svc, "%s: a node reads no /run/secrets file" % name
    # what the env file carries (the template the README tells operators to fill in)
    keys = env_file_keys(NODE_ENV_EXAMPLE)
    assert keys == ["UPTIME_KUMA_DB_PASSWORD"], keys
    assert set(keys) <= KUMA_NODE_ENV


def test_node_secrets_come_from_an_env_file_and_kumaguard_keeps_its_files():
    doc = load()
    for name, svc in kuma_nodes(doc).items():
        env = env_of(svc)
        assert not any(k.endswith("_FILE") for k in env), (name, sorted(env))
        assert "UPTIME_KUMA_DB_PASSWORD" not in env, "the password belongs in the env file"
        files = svc.get("env_file")
        files = [files] if isinstance(files, str) else files
        assert files and files[0].endswith("/kuma-node.env"), (name, files)
        assert env["UPTIME_KUMA_DB_TYPE"] == "mariadb"
    proxy = env_of(doc["services"]["proxy"])
    for var in ("DB_PASSWORD_FILE", "KUMAGUARD_API_TOKEN_FILE", "KUMA_API_KEY_FILE"):
        assert proxy[var].startswith("/run/secrets/"), (var, proxy.get(var))
    mariadb = env_of(doc["services"]["mariadb"])
    assert mariadb["MARIADB_PASSWORD_FILE"] == "/run/secrets/db_password"


def test_node_hosts_carry_their_port_node1_is_primary_and_the_rate_limit_has_room():
    nodes = kuma_nodes(load())
    hosts = {}
    for name, svc in nodes.items():
        env = env_of(svc)
        # "${KUMA_NET_PREFIX:-172.28.50}.11:3001" -> the literal after the default is applied
        host = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(env["UPTIME_KUMA_NODE_HOST"]))
        assert re.fullmatch(r"[0-9.]+:\d+", host), (name, host)
        hosts[env["UPTIME_KUMA_NODE_ID"]] = host
        assert int(default_of(env["API_RATE_LIMIT"])) >= MIN_RATE_LIMIT, env["API_RATE_LIMIT"]
        primary = str(env.get("UPTIME_KUMA_PRIMARY", "false")).lower() == "true"
        assert primary == (env["UPTIME_KUMA_NODE_ID"] == "node1"), name
    assert sorted(hosts) == ["node1", "node2", "node3"] and len(set(hosts.values())) == 3


def test_the_readme_tells_how_to_make_the_node_env_file():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Deploy with Docker compose"):]
    section = section[:section.index("\n## ", 3)]
    assert "kuma-node.env" in section and "UPTIME_KUMA_DB_PASSWORD=" in section
    assert "read no `*_FILE` variable" in section
    assert "API_RATE_LIMIT" in section
    assert "Bearer" in section  # what the nodes accept as a key


def test_docker_compose_v1_validates_it_and_resolves_the_node_environment(tmp_path):
    assert shutil.which("docker-compose"), \
        "docker-compose (1.29) is needed: scripts/install-deps.sh --test installs it"
    for name in SECRET_FILES:
        (tmp_path / name).write_text("UPTIME_KUMA_DB_PASSWORD=x\n" if name.endswith(".env")
                                     else "x")
    env = dict(os.environ, SECRETS_DIR=str(tmp_path))
    for k in ("KUMA_API_RATE_LIMIT", "KUMA_NET_PREFIX"):
        env.pop(k, None)
    out = subprocess.run(["docker-compose", "-f", COMPOSE, "config"], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    for name, svc in kuma_nodes(resolved).items():
        env_vars = env_of(svc)  # docker-compose merged the env file in
        assert set(env_vars) <= KUMA_NODE_ENV, (name, sorted(set(env_vars) - KUMA_NODE_ENV))
        assert env_vars["UPTIME_KUMA_DB_PASSWORD"] == "x"
        assert re.fullmatch(r"172\.28\.50\.1\d:3001", env_vars["UPTIME_KUMA_NODE_HOST"])
    # without the node env file the start-up refuses, naming it
    (tmp_path / "kuma-node.env").unlink()
    out = subprocess.run(["docker-compose", "-f", COMPOSE, "config", "-q"], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert out.returncode != 0 and "kuma-node.env" in out.stderr
