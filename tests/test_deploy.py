"""Static checks of docker-compose.yml and deploy/ against the code they run.

No network and no Docker: the compose file, the ClickHouse XML and the Dockerfile are parsed
and compared with the click CLI, the pydantic settings classes and the chDB engine, so a
renamed flag, a misspelt env var or a drifted port fails here instead of at `docker compose up`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from pydantic import TypeAdapter

import decision_audit
from decision_audit.cli.main import main as cli_main
from decision_audit.clickhouse import grants
from decision_audit.clickhouse.settings import ClickHouseSettings, MigrateSettings
from decision_audit.devtools.kafka_broker import KAFKA_VERSION
from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
CH_CONFIG_D = DEPLOY / "clickhouse" / "config.d"
CH_USERS_D = DEPLOY / "clickhouse" / "users.d"
CLUSTER_DIR = DEPLOY / "cluster"
CLUSTER_COMPOSE = CLUSTER_DIR / "docker-compose.yml"
KEEPER_XML = CLUSTER_DIR / "keeper" / "keeper.xml"
CLUSTER_CONFIG_D = CLUSTER_DIR / "clickhouse" / "config.d"
CLUSTER_USERS_D = CLUSTER_DIR / "clickhouse" / "users.d"

SETTINGS_CLASSES: tuple[type[Any], ...] = (
    ClickHouseSettings,
    MigrateSettings,
    WorkerSettings,
    ProducerSettings,
)
# Secrets compose interpolates; any value works for the checks below.
FAKE_ENV = {
    "CLICKHOUSE_PASSWORD": "writer-secret",
    "CLICKHOUSE_AUDITOR_PASSWORD": "reader-secret",
    "CLICKHOUSE_ADMIN_PASSWORD": "admin-secret",
    "CLICKHOUSE_CLUSTER_SECRET": "cluster-secret",
}
ENV_VAR_RE = re.compile(r"\bDECISION_AUDIT_[A-Z0-9_]+\b")
INTERPOLATION_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# ---------------------------------------------------------------- helpers


def interpolate(value: Any, env: dict[str, str] = FAKE_ENV) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` substitution."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op and op.endswith("-"):
            return arg
        if op and op.endswith("?"):
            raise AssertionError(f"compose would refuse to start: {name} unset ({arg})")
        return ""

    return INTERPOLATION_RE.sub(sub, str(value)).replace("$$", "$")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def settings_env_names(cls: type[Any]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def command_tokens(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def check_cli_invocation(args: list[str], where: str) -> None:
    """``args`` follow ``decision-audit``: a subcommand, then its options."""
    assert isinstance(cli_main, click.Group)
    assert args, f"{where}: no subcommand"
    sub = cli_main.commands.get(args[0])
    assert sub is not None, f"{where}: `decision-audit {args[0]}` is not a subcommand"
    known = {opt for p in sub.params for opt in (*p.opts, *p.secondary_opts)}
    used = {tok.split("=", 1)[0] for tok in args[1:] if tok.startswith("-") and tok != "-"}
    unknown = used - known
    assert not unknown, f"{where}: `decision-audit {args[0]}` has no option(s) {sorted(unknown)}"


def port_mappings(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for ``ports`` and ``expose``."""
    out: list[tuple[int | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            host = entry.get("published")
            out.append((int(host) if host else None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        out.append((int(parts[-2]) if len(parts) >= 2 else None, int(parts[-1])))
    out.extend((None, int(str(e).split("/")[0])) for e in service.get("expose") or [])
    return out


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def xml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.xml"))


def merged_clickhouse(directory: Path) -> ET.Element:
    """The <clickhouse> roots of every file in ``directory``, children concatenated."""
    root = ET.Element("clickhouse")
    for path in sorted(directory.glob("*.xml")):
        tree = ET.parse(path).getroot()
        assert tree.tag == "clickhouse", f"{path}: root element must be <clickhouse>"
        root.extend(list(tree))
    return root


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and data.get("services"), "docker-compose.yml has no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services running the decision-audit image (built from deploy/Dockerfile)."""
    found = {name: s for name, s in services.items() if "build" in s}
    assert {"migrate", "worker"} <= found.keys(), f"app services: {sorted(found)}"
    return found


@pytest.fixture(scope="module")
def engine() -> dict[str, Any]:
    """chDB's engine version and setting names, from a subprocess (chDB allows one data
    directory per process, and other tests in this process may already hold one)."""
    code = (
        "import json, chdb\n"
        "q = lambda sql: [r for r in str(chdb.query(sql, 'TSV')).splitlines() if r]\n"
        "print(json.dumps({'version': q('SELECT version()')[0],"
        " 'settings': q('SELECT name FROM system.settings'),"
        " 'server_settings': q('SELECT name FROM system.server_settings')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"\d+\.\d+(\.\d+)*", info["version"]), info["version"]
    return info


@pytest.fixture(scope="module")
def users() -> ET.Element:
    return merged_clickhouse(CH_USERS_D)


@pytest.fixture(scope="module")
def server_config() -> ET.Element:
    return merged_clickhouse(CH_CONFIG_D)


def clickhouse_dsn(service: dict[str, Any]) -> str:
    raw = env_of(service).get("DECISION_AUDIT_CLICKHOUSE_URL")
    assert raw, "service sets no DECISION_AUDIT_CLICKHOUSE_URL"
    return raw


# ---------------------------------------------------------------- images


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, f"{name}: neither image nor build"
            continue
        image = interpolate(image)
        assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{name}: {image} untagged"
        tag = image.rsplit("/", 1)[-1].split(":", 1)[1].split("@")[0]
        assert tag != "latest", f"{name}: {image} uses latest"
        assert re.match(r"^v?\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a version"


def test_built_image_is_tagged_with_the_package_version(
    app_services: dict[str, dict[str, Any]],
) -> None:
    version = decision_audit.__version__
    for name, svc in app_services.items():
        build = svc["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert (context / dockerfile).resolve() == DOCKERFILE.resolve(), name
        if "image" in svc:
            assert interpolate(svc["image"]) == f"decision-audit:{version}", name


@pytest.mark.integration
def test_clickhouse_major_version_matches_chdb_engine(
    services: dict[str, dict[str, Any]], engine: dict[str, Any]
) -> None:
    images = [
        interpolate(s["image"])
        for s in services.values()
        if str(s.get("image", "")).startswith("clickhouse/clickhouse-server:")
    ]
    assert len(images) == 1, f"expected one clickhouse/clickhouse-server service: {images}"
    server_major = int(images[0].split(":", 1)[1].split(".")[0])
    engine_major = int(engine["version"].split(".")[0])
    assert server_major == engine_major, f"{images[0]} vs chDB engine {engine['version']}"


def test_kafka_is_apache_kafka_4_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    image = interpolate(kafka["image"])
    assert image.startswith("apache/kafka:4."), image
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    # The image's entrypoint refuses KRaft mode without a base64 UUID cluster id.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env.get("CLUSTER_ID", "")), env.get("CLUSTER_ID")


def test_compose_runs_the_kafka_version_the_tests_run(services: dict[str, dict[str, Any]]) -> None:
    # The integration and fault suites run KAFKA_VERSION (its jars, devtools/kafka_broker.py).
    image = interpolate(services["kafka"]["image"])
    assert image == f"apache/kafka:{KAFKA_VERSION}", image


# ---------------------------------------------------------------- env vars


def test_decision_audit_env_vars_are_settings_fields() -> None:
    known = set().union(*(settings_env_names(c) for c in SETTINGS_CLASSES))
    files = [COMPOSE, *(p for p in DEPLOY.rglob("*") if p.is_file())]
    used: dict[str, set[str]] = {}
    for path in files:
        for var in ENV_VAR_RE.findall(path.read_text(errors="replace")):
            used.setdefault(var, set()).add(str(path.relative_to(ROOT)))
    assert "DECISION_AUDIT_CLICKHOUSE_URL" in used, "no DECISION_AUDIT_* variables found at all"
    unknown = {var: sorted(where) for var, where in used.items() if var not in known}
    assert not unknown, f"not fields of the settings classes: {unknown}"


@pytest.mark.parametrize(
    ("service", "cls"), [("migrate", ClickHouseSettings), ("worker", WorkerSettings)]
)
def test_service_env_builds_its_settings(
    services: dict[str, dict[str, Any]],
    service: str,
    cls: type[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = {k: interpolate(v) for k, v in env_of(services[service]).items()}
    ours = {k: v for k, v in env.items() if k.startswith("DECISION_AUDIT_")}
    stray = ours.keys() - settings_env_names(cls)
    assert not stray, f"{service}: {cls.__name__} does not read {sorted(stray)}"
    for var in settings_env_names(cls):
        monkeypatch.delenv(var, raising=False)
    for var, value in ours.items():
        monkeypatch.setenv(var, mounted(services[service], value, tmp_path))
    settings = cls()  # validates types and ranges exactly as the container will
    prefix = cls.model_config["env_prefix"]
    for var, value in ours.items():
        field = var[len(prefix) :].lower()
        if value == "":  # empty variables are ignored: the field keeps its default
            expected = cls.model_fields[field].default
        else:
            expected = TypeAdapter(cls.model_fields[field].annotation).validate_python(value)
        if isinstance(got := getattr(settings, field), Path):
            expected = Path(mounted(services[service], value, tmp_path))
        assert got == expected, f"{service}: {var}={value!r} read as {got!r}"


def mounted(service: dict[str, Any], value: str, tmp_path: Path) -> str:
    """``value``, or for a path inside a bind mount of ``service`` a copy of the host side
    (which must exist) in ``tmp_path``, holding a throwaway key if the operator's keys (not
    in git) are missing: the path is checked to be mounted, the settings to load it."""
    for vol in service.get("volumes") or []:
        source, target = str(vol).split(":")[:2]
        if source.startswith(".") and (value == target or value.startswith(target + "/")):
            host = ROOT / source / value[len(target) :].lstrip("/")
            assert host.exists(), f"{value}: {host} is not there to mount"
            copy = tmp_path / target.strip("/").replace("/", "_")
            if not copy.exists():
                shutil.copytree(ROOT / source, copy)
                if not any(copy.glob("*.key")):
                    generate_keypair(copy, "worker-1")
            return str(copy / value[len(target) :].lstrip("/"))
    assert not value.startswith("/etc/decision-audit"), f"{value} is not mounted"
    return value


def test_app_services_reach_the_server_not_chdb(app_services: dict[str, dict[str, Any]]) -> None:
    for name, svc in app_services.items():
        dsn = urlsplit(interpolate(clickhouse_dsn(svc)))
        assert dsn.scheme in {"http", "https"}, f"{name}: {dsn.scheme}:// is not a server DSN"


# ---------------------------------------------------------------- CLI


def test_compose_commands_exist_in_the_cli(app_services: dict[str, dict[str, Any]]) -> None:
    for name, svc in app_services.items():
        entrypoint = svc.get("entrypoint")
        args = command_tokens(svc)
        if entrypoint is not None:
            ep = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
            assert ep[:1] == ["decision-audit"], f"{name}: entrypoint {ep}"
            args = ep[1:] + args
        check_cli_invocation(args, f"docker-compose.yml service {name}")
    assert command_tokens(app_services["migrate"])[0] == "migrate"
    assert command_tokens(app_services["worker"])[0] == "worker"


def test_documented_commands_exist_in_the_cli() -> None:
    found = 0
    for path in DEPLOY.rglob("*.md"):
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                tokens = shlex.split(line, comments=True)
                if tokens[:1] == ["decision-audit"]:
                    found += 1
                    check_cli_invocation(tokens[1:], f"{path.relative_to(ROOT)}: {line.strip()}")
    assert found, "deploy/*.md shows no decision-audit command"


# ---------------------------------------------------------------- ports


def test_clickhouse_dsn_matches_the_server(
    services: dict[str, dict[str, Any]],
    app_services: dict[str, dict[str, Any]],
    server_config: ET.Element,
) -> None:
    http_port = int(server_config.findtext("http_port", "8123"))
    clickhouse = services["clickhouse"]
    container_ports = {c for _, c in port_mappings(clickhouse)}
    assert http_port in container_ports, f"clickhouse does not expose its http_port {http_port}"
    for name, svc in app_services.items():
        dsn = urlsplit(interpolate(clickhouse_dsn(svc)))
        assert dsn.hostname == "clickhouse", f"{name}: DSN host {dsn.hostname}"
        assert dsn.port == http_port, f"{name}: DSN port {dsn.port} != http_port {http_port}"
    probe = " ".join(command_tokens({"command": clickhouse["healthcheck"]["test"]}))
    assert f":{http_port}/ping" in probe, f"healthcheck probes the wrong port: {probe}"


def test_bootstrap_servers_match_kafka_listeners(
    services: dict[str, dict[str, Any]], app_services: dict[str, dict[str, Any]]
) -> None:
    kafka_env = env_of(services["kafka"])
    listeners = parse_listeners(kafka_env["KAFKA_LISTENERS"])
    advertised = parse_listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        p.split(":", 1) for p in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols), "listener without a security protocol"
    for name, (_, port) in advertised.items():
        assert listeners.get(name, (None, None))[1] == port, f"{name} advertised on {port}"
    controller = kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller not in advertised
    voter_port = int(kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1])
    assert listeners[controller][1] == voter_port, "quorum voter port is not the controller's"
    # Host-published ports must forward to a listener that advertises that host port.
    for host_port, container_port in port_mappings(services["kafka"]):
        if host_port is not None:
            match = [n for n, (_, p) in advertised.items() if p == host_port]
            assert match and listeners[match[0]][1] == container_port, f"port {host_port}"

    in_network = {f"{h}:{p}" for h, p in advertised.values()}
    checked = 0
    for name, svc in app_services.items():
        servers = env_of(svc).get("DECISION_AUDIT_BOOTSTRAP_SERVERS")
        if servers is None:
            continue
        checked += 1
        for server in interpolate(servers).split(","):
            assert server in in_network, f"{name}: {server} is not an advertised listener"
            assert server.split(":")[0] in services, f"{name}: {server} is not a compose service"
    assert checked, "no service sets DECISION_AUDIT_BOOTSTRAP_SERVERS"
    probe = " ".join(command_tokens({"command": services["kafka"]["healthcheck"]["test"]}))
    assert any(addr in probe for addr in in_network), f"kafka healthcheck: {probe}"


# ---------------------------------------------------------------- ClickHouse config


def test_schema_registry_profile(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optional registry stores its schemas in the stack's Kafka, and the worker given
    SCHEMA_REGISTRY_URL as the compose header says reads the registry's address."""
    reg = services["schema-registry"]
    assert reg.get("profiles") == ["registry"]
    env = env_of(reg)
    assert env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == "PLAINTEXT://kafka:9092"
    assert int(env["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"]) == 1
    port = urlsplit(env["SCHEMA_REGISTRY_LISTENERS"]).port
    assert f"127.0.0.1:{port}:{port}" in reg["ports"]
    assert reg["depends_on"]["kafka"]["condition"] == "service_healthy"
    dep = services["worker"]["depends_on"]["schema-registry"]
    assert dep == {"condition": "service_healthy", "required": False}

    url = f"http://schema-registry:{port}"
    assert f"SCHEMA_REGISTRY_URL={url} docker compose --profile registry up" in COMPOSE.read_text()
    raw = env_of(services["worker"])["DECISION_AUDIT_SCHEMA_REGISTRY_URL"]
    given = {**FAKE_ENV, "SCHEMA_REGISTRY_URL": url}
    monkeypatch.setenv("DECISION_AUDIT_SCHEMA_REGISTRY_URL", interpolate(raw, given))
    assert WorkerSettings().schema_registry_url == url
    monkeypatch.setenv("DECISION_AUDIT_SCHEMA_REGISTRY_URL", interpolate(raw))
    assert WorkerSettings().schema_registry_url is None


def test_deploy_xml_files_parse() -> None:
    files = xml_files()
    assert {p.parent for p in files} >= {CH_CONFIG_D, CH_USERS_D}, files
    for path in files:
        assert ET.parse(path).getroot().tag == "clickhouse", path


def test_clickhouse_users(
    services: dict[str, dict[str, Any]],
    app_services: dict[str, dict[str, Any]],
    users: ET.Element,
) -> None:
    profiles = {p.tag: p for p in users.findall("profiles/*")}
    defined = {u.tag: u for u in users.findall("users/*")}
    server_env = env_of(services["clickhouse"])
    # Every from_env the server reads is set on the clickhouse service.
    for element in users.iter():
        var = element.get("from_env")
        if var:
            assert interpolate(server_env.get(var, "")), f"clickhouse service lacks {var}"
    for user in defined.values():
        if user.findtext("profile"):
            assert user.findtext("profile") in profiles | {"default": None}, user.tag

    # The app's DSN logs in as a defined user whose password is the same secret.
    for name, svc in app_services.items():
        raw = clickhouse_dsn(svc)
        dsn = urlsplit(interpolate(raw))
        user = defined.get(dsn.username or "")
        assert user is not None, f"{name}: DSN user {dsn.username} is not in users.d"
        password = user.find("password")
        assert password is not None, f"{name}: user {dsn.username} has no <password>"
        var = password.get("from_env")
        assert var and f"${{{var}" in raw, f"{name}: DSN password is not ${{{var}}}"
        assert dsn.password == FAKE_ENV[var]
        assert profiles[user.findtext("profile", "")].findtext("readonly", "0") == "0"

    # The dashboard account may read the worker's database (and append to its access log:
    # not readonly, which would forbid that insert) but not raise its own limits.
    auditor = defined["auditor"]
    profile = profiles[auditor.findtext("profile", "")]
    assert profile.findtext("readonly", "0") == "0"
    for setting in ("max_memory_usage", "max_execution_time"):
        assert profile.find(f"constraints/{setting}/readonly") is not None, setting
    # `default` (empty password) must not be reachable from the network.
    nets = [ip.text for ip in defined["default"].findall("networks/ip")]
    assert nets and all(n in {"::1", "127.0.0.1"} for n in nets), nets


def xml_grants(user: ET.Element) -> list[str]:
    return [" ".join((q.text or "").split()) for q in user.findall("grants/query")]


def test_users_d_grants_are_the_rendered_roles(
    services: dict[str, dict[str, Any]],
    app_services: dict[str, dict[str, Any]],
    users: ET.Element,
) -> None:
    """Each users.d user holds exactly its roles' grants (decision_audit.clickhouse.grants,
    as `migrate --print-grants` renders them); the worker logs in as the writer, migrate as
    the admin; no user manages access."""
    database = interpolate(env_of(services["worker"]).get("DECISION_AUDIT_DATABASE", "audit"))
    declared = {u.name: u for u in grants.USERS}
    defined = {u.tag: u for u in users.findall("users/*") if u.tag != "default"}
    assert set(defined) <= set(declared), sorted(set(defined) - set(declared))
    for name, user in defined.items():
        assert xml_grants(user) == list(grants.user_grants(declared[name], database)), (
            f"{name}: run python -m decision_audit.clickhouse.grants "
            f"{CH_USERS_D}/decision-audit.xml"
        )
        assert user.findtext("access_management") == "0", name
        password = user.find("password")
        assert password is not None and password.get("from_env") == declared[name].password_env
    roles = {"worker": (grants.WRITER,), "migrate": (grants.ADMIN,)}
    for service, wanted in roles.items():
        user = urlsplit(interpolate(clickhouse_dsn(app_services[service]))).username
        assert declared[str(user)].roles == wanted, (service, user)


@pytest.mark.integration
def test_clickhouse_settings_exist_in_the_engine(
    users: ET.Element, server_config: ET.Element, engine: dict[str, Any]
) -> None:
    settings = set(engine["settings"])
    for profile in users.findall("profiles/*"):
        named = {s.tag for s in profile if s.tag not in ("profile", "constraints")}
        named |= {s.tag for s in profile.findall("constraints/*")}
        unknown = named - settings
        assert not unknown, f"profile {profile.tag}: no such settings {sorted(unknown)}"
    server_settings = set(engine["server_settings"])
    leaves = {
        e.tag
        for e in server_config
        if len(e) == 0 and e.get("remove") is None and not e.tag.endswith("_port")
    }
    assert leaves, "config.d sets no server settings"
    unknown = leaves - server_settings
    assert not unknown, f"config.d: no such server settings {sorted(unknown)}"


# ---------------------------------------------------------------- compose wiring


def test_mounts_and_volumes_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used_named = set()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes") or []:
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind source {source} missing"
            else:
                used_named.add(source)
                assert source in declared, f"{name}: volume {source} is not declared"
    assert used_named, "no named volumes"


def test_depends_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is not one-shot"
            else:
                assert condition == "service_started", condition
    worker = services["worker"]["depends_on"]
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    assert worker["kafka"]["condition"] == worker["clickhouse"]["condition"] == "service_healthy"


def test_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "container_name prevents --scale"
    assert int(worker.get("deploy", {}).get("replicas", 1)) >= 2
    assert not worker.get("ports"), "published ports collide between replicas"


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    froms = [rest.split()[0] for kw, rest in instructions if kw == "FROM"]
    assert froms and froms[-1] == "python:3.11-slim", froms
    entrypoints = [rest for kw, rest in instructions if kw == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["decision-audit"], entrypoints
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "decision-audit" in pyproject["project"]["scripts"]

    installs = [r for kw, r in instructions if kw == "RUN" and "pip install" in r]
    assert any("-c requirements/constraints.txt" in r and "'.[worker]'" in r for r in installs), (
        installs
    )
    for kw, rest in instructions:
        if kw == "COPY" and "--from=" not in rest:
            *sources, _ = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} missing from the build context"

    pinned = {
        re.split(r"[=<>!~]", line, maxsplit=1)[0].strip().lower().replace("_", "-")
        for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    wanted = (
        pyproject["project"]["dependencies"]
        + pyproject["project"]["optional-dependencies"]["worker"]
    )
    names = {re.split(r"[\s\[=<>!~;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    assert names <= pinned, f"not pinned in constraints.txt: {sorted(names - pinned)}"


# ---------------------------------------------------------------- the cluster example
#
# deploy/cluster/docker-compose.yml: 2 shards x 2 replicas and a three-node Keeper ensemble.
# Paths in it are relative to deploy/cluster/ (compose's project directory for that file).


def resolve_extends(name: str, service: dict[str, Any], base: Path) -> dict[str, Any]:
    """``service`` with its ``extends`` (another file's service) merged under it."""
    ext = service.get("extends")
    if ext is None:
        return service
    path = (base / ext["file"]).resolve() if "file" in ext else None
    assert path is not None and path.exists(), f"{name}: extends a missing file {ext}"
    other = yaml.safe_load(path.read_text())["services"]
    assert ext["service"] in other, f"{name}: {path} has no service {ext['service']}"
    merged = dict(other[ext["service"]])
    merged.update({k: v for k, v in service.items() if k != "extends"})
    return merged


@pytest.fixture(scope="module")
def cluster_compose() -> dict[str, Any]:
    data = yaml.safe_load(CLUSTER_COMPOSE.read_text())
    assert isinstance(data, dict) and data.get("services"), f"{CLUSTER_COMPOSE} has no services"
    return data


@pytest.fixture(scope="module")
def cluster_services(cluster_compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resolve_extends(name, svc, CLUSTER_DIR)
        for name, svc in cluster_compose["services"].items()
    }


def keepers_of(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if "keeper" in " ".join(s.get("entrypoint") or [])}


def servers_of(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in services.items()
        if str(s.get("image", "")).startswith("clickhouse/clickhouse-server:")
        and n not in keepers_of(services)
    }


@pytest.fixture(scope="module")
def keeper_config() -> ET.Element:
    root = ET.parse(KEEPER_XML).getroot()
    assert root.tag == "clickhouse"
    return root


@pytest.fixture(scope="module")
def cluster_config() -> ET.Element:
    """The servers' config.d: the single-server file and the cluster's, as mounted."""
    root = merged_clickhouse(CH_CONFIG_D)
    root.extend(list(merged_clickhouse(CLUSTER_CONFIG_D)))
    return root


@pytest.fixture(scope="module")
def cluster_name(cluster_services: dict[str, dict[str, Any]]) -> str:
    name = env_of(cluster_services["migrate"]).get("DECISION_AUDIT_CLUSTER")
    assert name, "the cluster's migrate service sets no DECISION_AUDIT_CLUSTER"
    return name


def test_cluster_runs_the_single_server_images(
    services: dict[str, dict[str, Any]], cluster_services: dict[str, dict[str, Any]]
) -> None:
    (server_image,) = {
        s["image"] for s in services.values() if "clickhouse-server" in str(s.get("image"))
    }
    used = {s["image"] for s in cluster_services.values() if "clickhouse" in str(s.get("image"))}
    assert used == {server_image}, f"the cluster runs {used}, the single server {server_image}"
    for name, svc in cluster_services.items():
        if "build" in svc:
            assert svc["image"] == f"decision-audit:{decision_audit.__version__}", name
            context = (CLUSTER_DIR / svc["build"]["context"]).resolve()
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE.resolve()
    assert cluster_services["kafka"]["image"] == services["kafka"]["image"]


def test_keeper_ensemble(
    cluster_services: dict[str, dict[str, Any]], keeper_config: ET.Element
) -> None:
    keeper = keeper_config.find("keeper_server")
    assert keeper is not None
    server_id = keeper.find("server_id")
    assert server_id is not None and server_id.get("from_env") == "KEEPER_SERVER_ID"
    raft = {
        int(s.findtext("id", "")): (s.findtext("hostname"), int(s.findtext("port", "")))
        for s in keeper.findall("raft_configuration/server")
    }
    assert len(raft) >= 3 and len(raft) % 2 == 1, f"a Raft quorum needs an odd count: {raft}"
    keepers = keepers_of(cluster_services)
    assert {h for h, _ in raft.values()} == set(keepers), (raft, sorted(keepers))
    client_port = int(keeper.findtext("tcp_port", ""))
    ready_port = int(keeper.findtext("http_control/port", ""))
    ready = keeper.findtext("http_control/readiness/endpoint", "/ready")
    mounted = "/etc/clickhouse-keeper/keeper.xml"
    for name, svc in keepers.items():
        assert svc.get("hostname") == name, f"{name}: hostname {svc.get('hostname')}"
        node = int(env_of(svc)["KEEPER_SERVER_ID"])
        assert raft[node][0] == name, f"{name} says it is Raft server {node} ({raft[node][0]})"
        ports = {c for _, c in port_mappings(svc)}
        assert {client_port, raft[node][1], ready_port} <= ports, f"{name} exposes {ports}"
        assert f"--config-file={mounted}" in svc["entrypoint"], svc["entrypoint"]
        assert any(str(v).endswith(f":{mounted}:ro") for v in svc["volumes"]), svc["volumes"]
        probe = " ".join(command_tokens({"command": svc["healthcheck"]["test"]}))
        assert f":{ready_port}{ready}" in probe, f"{name} healthcheck: {probe}"
    ids = [env_of(s)["KEEPER_SERVER_ID"] for s in keepers.values()]
    assert len(set(ids)) == len(ids), ids


def test_servers_reach_the_keepers(
    cluster_services: dict[str, dict[str, Any]],
    keeper_config: ET.Element,
    cluster_config: ET.Element,
) -> None:
    port = int(keeper_config.findtext("keeper_server/tcp_port", ""))
    nodes = {(n.findtext("host"), int(n.findtext("port", ""))) for n in cluster_config.iter("node")}
    assert nodes == {(k, port) for k in keepers_of(cluster_services)}, nodes
    for name, svc in servers_of(cluster_services).items():
        deps = svc.get("depends_on") or {}
        for keeper in keepers_of(cluster_services):
            assert deps.get(keeper, {}).get("condition") == "service_healthy", (name, keeper)


def remote_shards(cluster_config: ET.Element, cluster: str) -> list[ET.Element]:
    clusters = {c.tag: c for c in cluster_config.findall("remote_servers/*")}
    assert cluster in clusters, f"remote_servers has no cluster {cluster}: {sorted(clusters)}"
    return clusters[cluster].findall("shard")


def test_remote_servers_are_the_servers_and_the_cluster_migrate_names(
    cluster_services: dict[str, dict[str, Any]], cluster_config: ET.Element, cluster_name: str
) -> None:
    shards = remote_shards(cluster_config, cluster_name)
    assert len(shards) == 2, "the example has 2 shards"
    tcp_port = int(cluster_config.findtext("tcp_port", "9000"))
    interserver = int(cluster_config.findtext("interserver_http_port", ""))
    hosts = []
    for shard in shards:
        assert shard.findtext("internal_replication") == "true", "Replicated tables replicate"
        replicas = shard.findall("replica")
        assert len(replicas) == 2, "the example has 2 replicas per shard"
        for r in replicas:
            assert int(r.findtext("port", "")) == tcp_port
            hosts.append(r.findtext("host"))
    servers = servers_of(cluster_services)
    assert sorted(hosts) == sorted(servers), (hosts, sorted(servers))
    secret = cluster_config.find(f"remote_servers/{cluster_name}/secret")
    assert secret is not None and secret.get("from_env"), "no inter-server secret"
    for name, svc in servers.items():
        assert svc.get("hostname") == name
        assert {tcp_port, interserver} <= {c for _, c in port_mappings(svc)}, name
        assert interpolate(env_of(svc).get(str(secret.get("from_env")), "")), name
    assert MigrateSettings(cluster=cluster_name).cluster == cluster_name


def test_each_replica_has_its_macros(
    cluster_services: dict[str, dict[str, Any]], cluster_config: ET.Element, cluster_name: str
) -> None:
    macros = cluster_config.find("macros")
    assert macros is not None
    shard_var = macros.find("shard")
    replica_var = macros.find("replica")
    assert shard_var is not None and replica_var is not None, "no shard/replica macros"
    assert macros.findtext("cluster") == cluster_name
    servers = servers_of(cluster_services)
    seen_replicas = set()
    for number, shard in enumerate(remote_shards(cluster_config, cluster_name), start=1):
        for replica in shard.findall("replica"):
            host = replica.findtext("host", "")
            env = env_of(servers[host])
            assert env[str(shard_var.get("from_env"))] == str(number), f"{host}: shard macro"
            value = env[str(replica_var.get("from_env"))]
            assert value == host, f"{host}: replica macro {value}"
            seen_replicas.add(value)
    # the tracking table's replica name is '{shard}-{replica}': unique across the cluster
    assert len(seen_replicas) == len(servers)


def test_every_server_mounts_the_single_server_and_the_cluster_files(
    cluster_compose: dict[str, Any], cluster_services: dict[str, dict[str, Any]]
) -> None:
    wanted = {
        (CH_CONFIG_D / "decision-audit.xml").resolve(): "/etc/clickhouse-server/config.d/",
        (CLUSTER_CONFIG_D / "cluster.xml").resolve(): "/etc/clickhouse-server/config.d/",
        (CH_USERS_D / "decision-audit.xml").resolve(): "/etc/clickhouse-server/users.d/",
        (CLUSTER_USERS_D / "cluster.xml").resolve(): "/etc/clickhouse-server/users.d/",
    }
    declared = set(cluster_compose.get("volumes") or {})
    data_volumes = []
    for name, svc in cluster_services.items():
        binds = {}
        for vol in svc.get("volumes") or []:
            source, target = str(vol).split(":")[:2]
            if source.startswith((".", "/")):
                path = (CLUSTER_DIR / source).resolve()
                assert path.exists(), f"{name}: bind source {source} missing"
                binds[path] = target
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                data_volumes.append(source)
        if name in servers_of(cluster_services):
            for path, directory in wanted.items():
                assert binds.get(path) == directory + path.name, f"{name}: {path.name}"
    assert len(data_volumes) == len(set(data_volumes)), "two services share a data volume"


def test_cluster_app_services(
    cluster_services: dict[str, dict[str, Any]],
    cluster_config: ET.Element,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = merged_clickhouse(CH_USERS_D)
    http_port = int(cluster_config.findtext("http_port", "8123"))
    servers = servers_of(cluster_services)
    for service, cls in (("migrate", MigrateSettings), ("worker", WorkerSettings)):
        svc = cluster_services[service]
        check_cli_invocation(command_tokens(svc), f"deploy/cluster service {service}")
        ours = {k: interpolate(v) for k, v in env_of(svc).items() if k.startswith("DECISION_")}
        assert not ours.keys() - settings_env_names(cls), f"{service}: {cls.__name__}"
        for var in settings_env_names(cls):
            monkeypatch.delenv(var, raising=False)
        for var, value in ours.items():
            monkeypatch.setenv(var, value)
        cls()  # the container's settings validate
        raw = clickhouse_dsn(svc)
        dsn = urlsplit(interpolate(raw))
        assert dsn.hostname in servers and dsn.port == http_port, f"{service}: {dsn.netloc}"
        user = users.find(f"users/{dsn.username}")
        assert user is not None, f"{service}: DSN user {dsn.username}"
        var = user.find("password").get("from_env")  # type: ignore[union-attr]
        assert f"${{{var}" in raw and dsn.password == FAKE_ENV[str(var)]
        for name in servers:
            assert interpolate(env_of(servers[name]).get(str(var), "")), f"{name} lacks {var}"
    deps = cluster_services["migrate"]["depends_on"]
    assert {d for d, c in deps.items() if c["condition"] == "service_healthy"} >= set(servers)
    worker = cluster_services["worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    kafka_env = env_of(cluster_services["kafka"])
    advertised = parse_listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    bootstrap = env_of(worker)["DECISION_AUDIT_BOOTSTRAP_SERVERS"]
    assert bootstrap in {f"{h}:{p}" for h, p in advertised.values()}, bootstrap
    assert "container_name" not in worker and int(worker["deploy"]["replicas"]) >= 2
    for name, svc in cluster_services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in cluster_services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in cluster_services[dep], f"{dep} has no healthcheck"


def test_cluster_profile_makes_distributed_inserts_mean_stored(
    cluster_config: ET.Element, cluster_name: str
) -> None:
    """The worker inserts through Distributed tables: synchronously (the shard's Replicated
    table checks the insert token, and offsets are committed after the rows are stored) and
    acknowledged by every replica of the shard (chain heads read from any replica are
    current)."""
    single = {p.tag for p in merged_clickhouse(CH_USERS_D).findall("profiles/*")}
    profiles = {p.tag: p for p in merged_clickhouse(CLUSTER_USERS_D).findall("profiles/*")}
    assert set(profiles) <= single, "the cluster file adds to the single-server profiles"
    writer = profiles["decision_audit"]
    assert writer.findtext("distributed_foreground_insert") == "1"
    replicas = {len(s.findall("replica")) for s in remote_shards(cluster_config, cluster_name)}
    assert writer.findtext("insert_quorum") == str(max(replicas)), replicas


def test_cluster_users_d_grants_are_the_rendered_cluster_roles(
    cluster_services: dict[str, dict[str, Any]], cluster_name: str
) -> None:
    """The cluster file replaces each user's grants with the cluster rendering (the
    ``*_local`` tables, CLUSTER for the admin) of the same roles."""
    database = env_of(cluster_services["migrate"]).get("DECISION_AUDIT_DATABASE", "audit")
    declared = {u.name: u for u in grants.USERS}
    single = {u.tag for u in merged_clickhouse(CH_USERS_D).findall("users/*")} - {"default"}
    overrides = {u.tag: u for u in merged_clickhouse(CLUSTER_USERS_D).findall("users/*")}
    assert set(overrides) == single, (sorted(overrides), sorted(single))
    for name, user in overrides.items():
        assert user.find("grants").get("replace") == "replace", name  # type: ignore[union-attr]
        wanted = list(grants.user_grants(declared[name], database, cluster_name))
        assert xml_grants(user) == wanted, (
            f"{name}: run python -m decision_audit.clickhouse.grants "
            f"{CLUSTER_USERS_D}/cluster.xml --cluster {cluster_name}"
        )
    user = urlsplit(interpolate(clickhouse_dsn(cluster_services["migrate"]))).username
    assert declared[str(user)].roles == (grants.ADMIN,)


@pytest.mark.integration
def test_cluster_settings_exist_in_the_engine(
    cluster_config: ET.Element, engine: dict[str, Any]
) -> None:
    settings = set(engine["settings"])
    for profile in merged_clickhouse(CLUSTER_USERS_D).findall("profiles/*"):
        unknown = {s.tag for s in profile} - settings
        assert not unknown, f"profile {profile.tag}: no such settings {sorted(unknown)}"
    leaves = {
        e.tag
        for e in merged_clickhouse(CLUSTER_CONFIG_D)
        if len(e) == 0 and not e.tag.endswith("_port")
    }
    unknown = leaves - set(engine["server_settings"])
    assert not unknown, f"cluster config.d: no such server settings {sorted(unknown)}"
