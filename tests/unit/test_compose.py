"""The compose deployment runs with least privilege: checked on the files, without Docker.

No service connects as the PostgreSQL owner or as RabbitMQ's guest; each service has its own
RabbitMQ user; Redis requires its ACL user and evicts (allkeys-lru); only the submitter publishes
a port; the image runs as a non-root user; the broker files are the ones shared/access.py
generates (so the permission patterns tested end to end are the ones compose loads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared import access

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
SERVICES = ("projector", "scheduler", "worker", "submitter")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def url_user(url: str) -> str:
    """The user of a URL whose password may be a ``${VAR:-default}`` interpolation."""
    return urlsplit(re.sub(r"\$\{[^}]*\}", "x", url)).username or ""


def test_no_service_connects_as_the_owner_or_guest(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        env = environment(compose["services"][name])
        assert url_user(env["JOBTRAIL_POSTGRES_URL"]) == "jobtrail_service", name
        assert env["JOBTRAIL_POSTGRES_CREATE_SCHEMA"] == "false", name
        assert url_user(env["JOBTRAIL_AMQP_URL"]) == access.user_name(name), name
        assert url_user(env["JOBTRAIL_REDIS_URL"]) == access.REDIS_USER, name
    everything = json.dumps(compose)
    assert "guest" not in everything
    users = [url_user(u) for u in re.findall(r"postgresql://[^\s\"']+", everything)]
    assert set(users) == {"jobtrail_service", "postgres"}
    init = compose["services"]["init"]  # ... and the owner only in the one-shot init
    assert url_user(environment(init)["JOBTRAIL_POSTGRES_URL"]) == "postgres"
    assert "db init" in " ".join(init["command"]) and "db grant" in " ".join(init["command"])
    for name in SERVICES:
        assert compose["services"][name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }


def test_passwords_come_from_the_environment(compose: dict[str, Any]) -> None:
    for name in (*SERVICES, "init"):
        for key, value in environment(compose["services"][name]).items():
            if key.endswith("_URL") and "@" in value:
                password = urlsplit(re.sub(r"\$\{[^}]*\}", "x", value)).password
                assert password == "x", f"{name} {key}: a literal password"


def test_only_the_submitter_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"submitter"}


def test_redis_needs_its_acl_user_and_evicts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"
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


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [
        line.split()[1]
        for line in (COMPOSE / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users and users[-1] not in ("root", "0")


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
