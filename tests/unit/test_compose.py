"""The compose deployment, checked on the files without Docker (none runs here).

Valid against the Compose Specification's JSON schema (committed: tests/unit/schemas/); one
container per service from one multi-stage image running as a non-root user; each service
healthy only once its own /readyz answers; every service waits for healthy dependencies and for
the one-shot init; one dedicated network, an overlay with compose.swarm.yaml; only the submitter
publishes a port; least privilege (no PostgreSQL owner but in init, no RabbitMQ guest, one
RabbitMQ user per service from the definitions shared/access.py generates, a Redis ACL user);
Redis evicts (allkeys-lru under maxmemory); every secret comes from a compose secret, a file.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from shared import access

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
SERVICES = ("projector", "scheduler", "worker", "submitter")
READY_PORTS = {"submitter": 8080, "scheduler": 8081, "worker": 8082, "projector": 8083}
"""Where each service answers /readyz: the submitter on its API port, the others on their
health port (JOBTRAIL_HEALTH_PORT's default for each)."""
INFRASTRUCTURE = ("postgres", "rabbitmq", "redis")


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text())
    return loaded


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, for mappings (the only kind the override holds)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return copy.deepcopy(override)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("compose.yaml")


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    lines = (COMPOSE / "example.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """The files a service's secrets are mounted as (/run/secrets/<target>) -> the secret."""
    targets = {}
    for entry in service.get("secrets") or []:
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        targets[f"/run/secrets/{target}"] = source
    return targets


def secret_value(
    compose: dict[str, Any], example_env: dict[str, str], service: str, variable: str
) -> str:
    """What JOBTRAIL_<variable> is in ``service`` with the example values: the secret its
    ``_FILE`` variable names, read from the variable the secret comes from."""
    target = environment(compose["services"][service])[f"{variable}_FILE"]
    source = secret_targets(compose["services"][service])[target]
    return example_env[compose["secrets"][source]["environment"]]


def url_user(url: str) -> str:
    return urlsplit(url).username or ""


def test_the_files_follow_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    swarm = load("compose.swarm.yaml")
    for name, document in (
        ("compose.yaml", compose),
        ("compose.swarm.yaml", swarm),
        ("both", merge(compose, swarm)),
    ):
        errors = [
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)
        ]
        assert not errors, f"{name}: {errors}"
    # the schema does refuse what compose would refuse (a misspelt key, a wrong type)
    broken = merge(compose, {"services": {"worker": {"healthcheck": {"tset": ["CMD", "true"]}}}})
    assert not validator.is_valid(broken)
    assert not validator.is_valid(merge(compose, {"services": {"worker": {"ports": "8080"}}}))


def test_one_multi_stage_image_runs_every_service_as_a_non_root_user(
    compose: dict[str, Any],
) -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text().splitlines()
    stages = [line for line in dockerfile if line.startswith("FROM ")]
    assert len(stages) >= 2, "one stage builds, the last one runs"
    assert any(line.startswith("COPY --from=") for line in dockerfile)
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    last_stage = dockerfile.index(stages[-1])
    assert any(line.startswith("USER ") for line in dockerfile[last_stage:])
    for name in (*SERVICES, "init"):
        service = compose["services"][name]
        assert "image" not in service, name
        assert service["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}, name
    # one container per service: each runs its own module
    for name in SERVICES:
        assert compose["services"][name]["command"] == ["python", "-m", f"services.{name}"]


@pytest.fixture
def ready_server() -> Iterator[tuple[int, list[int]]]:
    """A local HTTP server answering /readyz with the status at the head of ``answers``."""
    answers = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answers[0] if self.path == "/readyz" else 404)
            self.end_headers()
            self.wfile.write(b'{"status": "..."}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], answers
    finally:
        server.shutdown()


def test_each_service_is_healthy_when_its_own_readyz_is(
    compose: dict[str, Any], ready_server: tuple[int, list[int]]
) -> None:
    port, answers = ready_server
    for name, ready_port in READY_PORTS.items():
        service = compose["services"][name]
        if name != "submitter":
            assert environment(service)["JOBTRAIL_HEALTH_PORT"] == str(ready_port), name
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: python's urllib, no curl"
        code = test[3]
        assert f"http://127.0.0.1:{ready_port}/readyz" in code, name
        # the probe itself: exit 0 on a 200, non-zero on a 503 (run against a local server)
        probe = code.replace(f":{ready_port}/", f":{port}/")
        for status, healthy in ((200, True), (503, False)):
            answers[0] = status
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20)
            assert (done.returncode == 0) == healthy, (name, status, done.stderr[-300:])


def test_services_wait_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in INFRASTRUCTURE:
        assert services[name]["healthcheck"]["test"], name
    assert services["init"]["restart"] == "no"
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if dependency == "init":  # the one-shot: finished, and successfully
                assert condition == {"condition": "service_completed_successfully"}, name
            else:
                assert condition == {"condition": "service_healthy"}, (name, dependency)
                assert services[dependency].get("healthcheck"), (name, dependency)
    for name in SERVICES:
        assert set(services[name]["depends_on"]) == {"init", *INFRASTRUCTURE}, name
    assert set(services["init"]["depends_on"]) == {"postgres"}


def test_one_dedicated_network_an_overlay_in_a_swarm(compose: dict[str, Any]) -> None:
    (network,) = compose["networks"]
    assert compose["networks"][network]["driver"] == "bridge"
    for name, service in compose["services"].items():
        assert service["networks"] == [network], name
        assert "network_mode" not in service, name
    swarm = load("compose.swarm.yaml")
    assert set(swarm) == {"networks"}, "the override changes the network only"
    merged = merge(compose, swarm)["networks"][network]
    assert merged["driver"] == "overlay" and merged["attachable"] is True
    assert "compose.swarm.yaml" in (ROOT / "docs" / "deployment.md").read_text()


def test_only_the_submitter_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"submitter"}
    assert compose["services"]["submitter"]["ports"] == ["8080:8080"]


def test_no_service_connects_as_the_owner_or_guest(
    compose: dict[str, Any], example_env: dict[str, str]
) -> None:
    for name in SERVICES:
        env = environment(compose["services"][name])
        postgres = secret_value(compose, example_env, name, "JOBTRAIL_POSTGRES_URL")
        assert url_user(postgres) == "jobtrail_service", name
        assert env["JOBTRAIL_POSTGRES_CREATE_SCHEMA"] == "false", name
        amqp = secret_value(compose, example_env, name, "JOBTRAIL_AMQP_URL")
        assert url_user(amqp) == access.user_name(name), name
        redis = secret_value(compose, example_env, name, "JOBTRAIL_REDIS_URL")
        assert url_user(redis) == access.REDIS_USER, name
    assert "guest" not in json.dumps(compose) + json.dumps(example_env)
    # ... and the owner only in the one-shot init, which runs `db init` and `db grant`
    init = compose["services"]["init"]
    assert url_user(secret_value(compose, example_env, "init", "JOBTRAIL_POSTGRES_URL")) == (
        "postgres"
    )
    assert "db init" in " ".join(init["command"]) and "db grant" in " ".join(init["command"])
    owners = {
        name
        for name in compose["services"]
        if "postgres_owner_url" in secret_targets(compose["services"][name]).values()
    }
    assert owners == {"init"}


def test_every_secret_comes_from_a_compose_secret(
    compose: dict[str, Any], example_env: dict[str, str]
) -> None:
    for name, secret in compose["secrets"].items():
        assert set(secret) & {"environment", "file"}, name
        assert secret.get("environment", "") in example_env or "file" in secret, name
    for name, service in compose["services"].items():
        targets = secret_targets(service)
        for key, value in environment(service).items():
            assert "@" not in value and "PASSWORD=" not in value, f"{name} {key}: a literal"
            if key.endswith("_FILE"):
                assert value in targets, f"{name} {key}: {value} is not one of its secrets"
            else:
                assert not re.search(r"PASSWORD$|_URL$", key), f"{name} {key}: not a secret"
    # the example passwords fit together: PostgreSQL's URLs and password variables, RabbitMQ's
    # URLs and the hashes of the committed definitions, Redis's URL and the ACL file
    assert (
        urlsplit(example_env["JOBTRAIL_POSTGRES_OWNER_URL"]).password
        == (example_env["JOBTRAIL_POSTGRES_OWNER_PASSWORD"])
    )
    assert (
        urlsplit(example_env["JOBTRAIL_POSTGRES_SERVICE_URL"]).password
        == (example_env["JOBTRAIL_SERVICE_ROLE_PASSWORD"])
    )
    hashes = {
        u["name"]: u["password_hash"] for u in json.loads(access.DEFINITIONS.read_text())["users"]
    }
    for service in SERVICES:
        url = urlsplit(example_env[f"JOBTRAIL_{service.upper()}_AMQP_URL"])
        salt = base64.b64decode(hashes[url.username or ""])[:4]
        assert access.password_hash(url.password or "", salt) == hashes[url.username or ""]
    redis_password = urlsplit(example_env["JOBTRAIL_REDIS_SERVICE_URL"]).password
    assert redis_password == example_env["JOBTRAIL_REDIS_PASSWORD"]
    assert access.acl_file(redis_password) == (COMPOSE / "redis" / "users.acl").read_text()


def test_the_entry_point_reads_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "amqp_url"
    secret.write_text("amqp://u:p@rabbit-1,rabbit-2/\n")
    env = {"PATH": "/usr/bin:/bin", "JOBTRAIL_AMQP_URL_FILE": str(secret)}
    script = str(COMPOSE / "entrypoint.sh")
    done = subprocess.run(["sh", script, "env"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "JOBTRAIL_AMQP_URL=amqp://u:p@rabbit-1,rabbit-2/\n" in done.stdout
    assert "_FILE" not in done.stdout
    env["JOBTRAIL_AMQP_URL_FILE"] = str(tmp_path / "missing")
    done = subprocess.run(["sh", script, "env"], env=env, capture_output=True, text=True)
    assert done.returncode == 64 and "cannot be read" in done.stderr


def test_redis_needs_its_acl_user_and_evicts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert re.fullmatch(r"[0-9]+[kmg]b", command[command.index("--maxmemory") + 1])
    assert "--aclfile" in command
    acl = (COMPOSE / "redis" / "users.acl").read_text()
    assert "user default off" in acl
    assert acl == access.acl_file()


def test_rabbitmq_loads_the_generated_definitions(compose: dict[str, Any]) -> None:
    volumes = " ".join(compose["services"]["rabbitmq"]["volumes"])
    assert "definitions.json" in volumes and "rabbitmq.conf" in volumes
    assert "load_definitions" in (COMPOSE / "rabbitmq" / "rabbitmq.conf").read_text()
    committed = json.loads(access.DEFINITIONS.read_text())
    assert committed == json.loads(json.dumps(access.definitions()))
    assert {u["name"] for u in committed["users"]} == {access.user_name(s) for s in SERVICES}
    assert all(u["tags"] == [] for u in committed["users"])  # no administrator among them


def test_the_permissions_are_as_tight_as_the_topology_allows() -> None:
    """Read (consume) only the queues a service's subscribers use; write only what it binds,
    publishes or parks to; commands and dead letters are for clients and operators."""
    topology = {
        "events": "jobtrail.events",
        "commands": "jobtrail.commands",
        "submit": "jobtrail.commands.submit",
        "cancel": "jobtrail.commands.cancel",
        "scheduler": "jobtrail.scheduler",
        "work": "jobtrail.work.cpu",
        "dlq": "jobtrail.dlq",
        "ledger": "jobtrail.dlq.ledger",
    }
    consumes = {
        "projector": set(),
        "scheduler": {"scheduler", "ledger"},
        "worker": {"work"},
        "submitter": {"submit", "cancel"},
    }
    queues = {"submit", "cancel", "scheduler", "work", "dlq", "ledger"}
    for service, permission in access.permissions("jobtrail").items():
        read = {k for k, v in topology.items() if re.fullmatch(permission.read, v)}
        assert read & queues == consumes[service], service
        write = {k for k, v in topology.items() if re.fullmatch(permission.write, v)}
        assert "commands" not in write, service
        assert "events" in write, service
        assert not re.fullmatch(permission.configure, "other.events"), service
        assert bool(re.fullmatch(permission.write, "amq.default")) == (
            service in ("scheduler", "submitter")
        )


def test_the_services_load_the_example_job_types_by_name(compose: dict[str, Any]) -> None:
    # production loads none by default: compose names them, and the image holds them
    for name in SERVICES:
        modules = environment(compose["services"][name])["JOBTRAIL_JOB_MODULES"]
        assert "examples.jobs" in modules, name
    assert "COPY examples ./examples" in (COMPOSE / "Dockerfile").read_text()
