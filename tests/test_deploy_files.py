"""The deployment files agree with the code: docker-compose.yml, deploy/ and the configuration docs.

No Docker needed: the files are parsed and checked against `payloop.services.SERVICES`,
`payloop.settings.PlatformSettings` and the event catalogue, so adding a service, a setting or an
event type without updating the deployment (or its documentation) fails here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from payloop.events.catalogue import CATALOGUE
from payloop.services import SERVICES, ServiceSpec
from payloop.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "initdb" / "10-payloop-databases.sh"

# Read with os.environ, not PlatformSettings (payloop/service.py `_flag`).
RUN_FLAGS = {"PAYLOOP_RUN_RELAY", "PAYLOOP_RUN_CONSUMERS"}
SETTING_VARS = {f"PAYLOOP_{name.upper()}": field for name, field in PlatformSettings.model_fields.items()}
DATABASE_URL_VARS = {spec.database_url_env for spec in SERVICES}
KNOWN_PAYLOOP_VARS = set(SETTING_VARS) | DATABASE_URL_VARS | RUN_FLAGS
# Values docker-compose.yml deliberately sets apart from the code's defaults.
DELIBERATE_DEFAULTS = {"PAYLOOP_ENV": "prod", "PAYLOOP_JWT_SECRET": ""}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+]([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _built_from_dockerfile(container: dict) -> bool:
    build = container.get("build")
    return isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"


def _serving(services: dict, spec: ServiceSpec) -> list[tuple[str, dict]]:
    """Containers running `serve` for a service: built with SERVICE=<name>, image CMD not overridden."""
    return [(name, c) for name, c in services.items()
            if _built_from_dockerfile(c) and c["build"].get("args", {}).get("SERVICE") == spec.name
            and "command" not in c]


def _migrating(services: dict, spec: ServiceSpec) -> list[tuple[str, dict]]:
    return [(name, c) for name, c in services.items()
            if c.get("command") == ["python", "-m", spec.module, "migrate"]]


def _env(container: dict) -> dict[str, str]:
    env = container.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _database_of(url: str) -> str:
    return url.rsplit("/", 1)[-1].split("?", 1)[0]


def _env_example() -> dict[str, str]:
    """KEY=value lines of deploy/env.example, commented-out ones included (documented, not set)."""
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            entries[match[1]] = match[2]
    return entries


def _as_env_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


# --- docker-compose.yml --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_every_service_has_one_container_built_from_the_dockerfile(services, spec):
    serving = _serving(services, spec)
    assert len(serving) == 1, f"{spec.name}: want one serving container built from deploy/Dockerfile " \
                              f"with build arg SERVICE={spec.name}, found {[n for n, _ in serving]}"
    _, container = serving[0]
    assert container["build"].get("context") in (".", "./")
    assert container.get("healthcheck", {}).get("test"), f"{spec.name} has no healthcheck"
    assert f":{spec.port}" in " ".join(str(p) for p in container.get("ports", [])), \
        f"{spec.name} should publish its port {spec.port}"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_every_service_gets_the_broker_and_only_its_own_database(services, spec):
    for name, container in _serving(services, spec) + _migrating(services, spec):
        env = _env(container)
        assert env.get("PAYLOOP_KAFKA_BOOTSTRAP"), f"{name} lacks PAYLOOP_KAFKA_BOOTSTRAP"
        url = env.get(spec.database_url_env, "")
        assert url.startswith("postgresql+asyncpg://"), f"{name}: {spec.database_url_env}={url!r}"
        assert _database_of(url) == spec.database, f"{name} must use its own database {spec.database}"
        others = (DATABASE_URL_VARS - {spec.database_url_env}) & set(env)
        assert not others, f"{name} can see other services' databases: {sorted(others)}"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_every_service_starts_after_its_migration_and_the_infrastructure(services, spec):
    migrating = _migrating(services, spec)
    assert len(migrating) == 1, f"{spec.name}: want one `python -m {spec.module} migrate` one-shot"
    migrate_name, migrate = migrating[0]
    (serve_name, serve), = _serving(services, spec)
    assert migrate["build"] == serve["build"] and migrate.get("image") == serve.get("image")
    assert migrate.get("restart") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    depends = serve["depends_on"]
    assert depends[migrate_name]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["kafka"]["condition"] == "service_healthy"


def test_topics_are_created_before_any_service_starts(services):
    assert services["topics"]["command"][:3] == ["payloop", "topics", "--create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for spec in SERVICES:
        (_, serve), = _serving(services, spec)
        assert serve["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_kafka_runs_in_kraft_mode_without_zookeeper(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9.")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] and env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["CLUSTER_ID"]
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name, container in services.items():
        assert "zookeeper" not in name.lower() and "zookeeper" not in str(container.get("image", "")).lower()
        assert not [k for k in _env(container) if "ZOOKEEPER" in k.upper()], f"{name} configures ZooKeeper"
    assert kafka.get("healthcheck", {}).get("test")


def test_postgres_is_16_and_its_init_script_creates_exactly_the_six_databases(services):
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:16(\.\d+)?(-[a-z0-9]+)?", postgres["image"])
    assert "./deploy/postgres/initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    script = INIT_SCRIPT.read_text()
    created = re.findall(r"^create_service_database\s+(\w+)\s*$", script, flags=re.M)
    assert sorted(created) == sorted(spec.name for spec in SERVICES)
    assert len(created) == len(set(created)) == 6
    assert 'CREATE DATABASE :"name" OWNER :"name"' in script
    assert INIT_SCRIPT.stat().st_mode & 0o111, "the init script must be executable"
    # The script reads one password per service; compose must hand each one to the container.
    env = _env(postgres)
    for spec in SERVICES:
        assert f"{spec.name.upper()}_DB_PASSWORD" in env


def test_every_payloop_variable_in_compose_is_read_by_the_code(services):
    named = set()
    for container in services.values():
        named |= {k for k in _env(container) if k.startswith("PAYLOOP_")}
    named |= {m[1] for m in INTERPOLATION.finditer(COMPOSE.read_text()) if m[1].startswith("PAYLOOP_")}
    unknown = named - KNOWN_PAYLOOP_VARS
    assert not unknown, f"docker-compose.yml sets variables no code reads: {sorted(unknown)}"
    assert {k for k in named if k.startswith("PAYLOOP_RUN_")} <= RUN_FLAGS


def test_compose_defaults_equal_the_code_defaults(services):
    """`PAYLOOP_X: ${PAYLOOP_X:-default}` must default to what the code would use anyway."""
    checked = 0
    for container in services.values():
        for key, value in _env(container).items():
            match = re.fullmatch(r"\$\{" + re.escape(key) + r":-([^}]*)\}", value)
            if key not in SETTING_VARS or not match:
                continue
            code_default = _as_env_text(SETTING_VARS[key].default)
            expected = DELIBERATE_DEFAULTS.get(key, code_default)
            assert match[1] == expected, \
                f"{key}: docker-compose.yml defaults to {match[1]!r}, the code to {expected!r}"
            checked += 1
    assert checked, "no ${PAYLOOP_X:-default} found in docker-compose.yml"


def test_every_interpolated_compose_variable_is_documented_in_env_example():
    documented = set(_env_example())
    used = {m[1] for m in INTERPOLATION.finditer(COMPOSE.read_text())}
    assert used <= documented, f"undocumented in deploy/env.example: {sorted(used - documented)}"


# --- deploy/env.example ----------------------------------------------------------------------------------

def test_env_example_lists_every_setting_and_nothing_unknown():
    documented = _env_example()
    missing = KNOWN_PAYLOOP_VARS - set(documented)
    assert not missing, f"deploy/env.example lacks {sorted(missing)}"
    unknown = {k for k in documented if k.startswith("PAYLOOP_")} - KNOWN_PAYLOOP_VARS
    assert not unknown, f"deploy/env.example documents variables no code reads: {sorted(unknown)}"


def test_env_example_defaults_equal_the_code_defaults():
    documented = _env_example()
    for key, field in SETTING_VARS.items():
        if key in DELIBERATE_DEFAULTS or field.default is None:
            continue
        assert documented[key] == _as_env_text(field.default), f"{key} in deploy/env.example"


# --- deploy/Dockerfile -----------------------------------------------------------------------------------

def test_dockerfile_builds_any_service_reproducibly_as_non_root():
    text = DOCKERFILE.read_text()
    assert "ARG SERVICE" in text
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    make_uv = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), flags=re.M)[1]
    assert f"ARG UV_VERSION={make_uv}" in text, "the image must use the Makefile's uv"
    package = r'--package "payloop-\$\(echo "\$\{SERVICE\}" \| tr _ -\)"'
    assert re.search(r"uv sync --frozen --no-dev .*" + package, text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, flags=re.M)
    cmd = r'^CMD exec python -m "payloop_\$\{SERVICE\}" serve --host 0\.0\.0\.0$'
    assert re.search(cmd, text, flags=re.M)
    assert (ROOT / "deploy" / "healthcheck.py").exists()


def test_dockerfile_copies_every_workspace_manifest():
    text = DOCKERFILE.read_text()
    for manifest in [ROOT / "libs" / "pyproject.toml", *sorted((ROOT / "services").glob("*/pyproject.toml"))]:
        relative = manifest.relative_to(ROOT).as_posix()
        assert f"COPY {relative} {relative}" in text, f"deploy/Dockerfile does not copy {relative}"


# --- docs that name configuration and topics ----------------------------------------------------------------

def test_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(v for v in SETTING_VARS | dict.fromkeys(RUN_FLAGS) if f"`{v}`" not in readme)
    assert not missing, f"README.md configuration table lacks {missing}"
    assert "`PAYLOOP_<SERVICE>_DATABASE_URL`" in readme


def test_architecture_doc_names_every_topic():
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    missing = [t for t in CATALOGUE.types() if t not in architecture]
    assert not missing, f"docs/architecture.md does not mention {missing}"
