"""What the services may do on RabbitMQ (one user per service) and on Redis (one ACL user), and
the files the compose brokers load at boot: RabbitMQ's definitions (users, permissions,
topology) and Redis's ACL file.

Why a module: the permission patterns follow from the topology in shared/messaging.py and from
what each service's subscribers and publishers touch; written next to each other and generated
into ``compose/rabbitmq/definitions.json`` (``python -m shared.access``), they cannot drift
(tests/unit/test_compose.py checks the committed files are the generated ones).

What every service does at start (``declare_topology`` and FastStream's subscribers): declares
every exchange and queue of the prefix (configure) and binds each queue to its exchange (write on
the queue, read on the exchange). Then:

- projector (the relay): publishes events (write ``<prefix>.events``); consumes nothing;
- scheduler: publishes events; consumes ``<prefix>.scheduler`` and the dead-letter ledger
  ``<prefix>.dlq.ledger``; parks held deliveries on the default exchange (``amq.default``);
- worker: publishes events; consumes ``<prefix>.work.*``;
- submitter: publishes events; consumes ``<prefix>.commands.submit`` / ``.cancel``; parks.

No service publishes to ``<prefix>.commands`` (clients do) or ``<prefix>.dlx`` (RabbitMQ
dead-letters), and none reads ``<prefix>.dlq`` (operators do, with ``jobtrail dlq``).

RabbitMQ checks read on the queue and write on the dead-letter exchange only when a queue with
``x-dead-letter-exchange`` is *created*; re-declaring an existing one needs configure alone. The
topology is therefore created before the services start: by these definitions in compose, by an
administrator elsewhere (``docs/operations.md``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.names import Topology
from shared.messaging import SCHEDULER_KEYS, Routes

SERVICES = ("projector", "scheduler", "worker", "submitter")
COMPOSE = Path(__file__).resolve().parent.parent / "compose"
DEFINITIONS = COMPOSE / "rabbitmq" / "definitions.json"
REDIS_ACL = COMPOSE / "redis" / "users.acl"
REDIS_USER = "jobtrail"
REDIS_COMMANDS = (
    "-@all +@read +@write +@scripting +@transaction +@connection +time -@dangerous -@admin"
    " -script|flush -script|kill"
)
"""What the services send Redis: reads and writes of their keys, Lua scripts (EVALSHA, SCRIPT
LOAD; TIME inside them), MULTI/EXEC pipelines, HELLO/PING. Nothing dangerous or administrative
(no KEYS, FLUSH*, CONFIG, DEBUG, ACL, ...): the projector's maxmemory-policy check (CONFIG GET)
is refused and it logs that it cannot read the policy, which compose sets (allkeys-lru)."""
PLACEHOLDER = "change-me-{service}"
"""The password the committed definitions hash, per service: a placeholder to replace (see
docs/operations.md); ``python -m shared.access`` hashes ``JOBTRAIL_AMQP_PASSWORD_<SERVICE>``
from the environment instead when set."""


@dataclass(frozen=True)
class Permission:
    """RabbitMQ's three regular expressions for one user on one virtual host."""

    configure: str
    write: str
    read: str


def permissions(prefix: str) -> dict[str, Permission]:
    """Each service's patterns, for the topology under ``prefix``."""
    p = re.escape(Topology(prefix).prefix)
    queues = r"dlq|dlq\.ledger|scheduler|commands\.submit|commands\.cancel|work\.[^.]+"
    exchanges = r"events|commands|dlx"
    configure = rf"^{p}\.({exchanges}|{queues})$"
    bind_and_publish = rf"{p}\.(events|{queues})"
    consumed = {
        "projector": "",
        "scheduler": r"scheduler|dlq\.ledger",
        "worker": r"work\.[^.]+",
        "submitter": r"commands\.submit|commands\.cancel",
    }
    parks = {"scheduler", "submitter"}
    result = {}
    for service in SERVICES:
        write = bind_and_publish + (r"|amq\.default" if service in parks else "")
        read = rf"{p}\.({exchanges})" + (
            rf"|{p}\.({consumed[service]})" if consumed[service] else ""
        )
        result[service] = Permission(configure, f"^({write})$", f"^({read})$")
    return result


def redis_acl(prefix: str, password_rule: str, user: str = REDIS_USER) -> str:
    """An ``ACL SETUSER`` rule list (also an ACL file line after ``user <name>``): the user may
    touch only keys under ``<prefix>:`` and no Pub/Sub channel. ``password_rule``: ``>secret``
    or ``#<sha256 hex>``."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
        raise ValueError(f"redis prefix {prefix!r}: letters, digits, '_', '.', '-' only")
    return f"on {password_rule} resetkeys ~{prefix}:* resetchannels {REDIS_COMMANDS}"


def user_name(service: str) -> str:
    return f"jobtrail_{service}"


def password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _topology(routes: Routes, queues: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    exchanges = [routes.events, routes.commands, routes.dlx]
    bindings: list[tuple[str, str, str]] = [
        (routes.dlx.name, routes.dlq.name, ""),
        (routes.dlx.name, routes.ledger.name, ""),
        *((routes.events.name, routes.scheduler.name, key) for key in SCHEDULER_KEYS),
        (routes.commands.name, routes.submit.name, routes.submit.routing_key),
        (routes.commands.name, routes.cancel.name, routes.cancel.routing_key),
    ]
    declared = [routes.dlq, routes.ledger, routes.scheduler, routes.submit, routes.cancel]
    for name in queues:
        work = routes.work(name)
        declared.append(work)
        bindings.append((routes.events.name, work.name, work.routing_key))
    return {
        "exchanges": [
            {
                "name": e.name,
                "vhost": "/",
                "type": str(e.type.value),
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": "/",
                "durable": True,
                "auto_delete": False,
                "arguments": dict(q.arguments or {}),
            }
            for q in declared
        ],
        "bindings": [
            {
                "source": source,
                "vhost": "/",
                "destination": queue,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for source, queue, key in bindings
        ],
    }


def definitions(
    prefix: str = "jobtrail",
    queues: Iterable[str] = ("cpu", "default", "io"),
    passwords: Mapping[str, str] | None = None,
    queue_type: str = "classic",
) -> dict[str, Any]:
    """Users (one per service, no guest), their permissions, and the topology (work queues of
    ``queue_type``, as the services declare them with ``JOBTRAIL_QUEUE_TYPE``)."""
    passwords = passwords or {}
    users, grants = [], []
    for service, permission in permissions(prefix).items():
        salt = hashlib.sha256(f"jobtrail/{service}".encode()).digest()[:4]
        password = passwords.get(service) or PLACEHOLDER.format(service=service)
        users.append(
            {
                "name": user_name(service),
                "password_hash": password_hash(password, salt),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        grants.append({"user": user_name(service), "vhost": "/", **permission.__dict__})
    return {
        "rabbit_version": "3.13.0",
        "users": users,
        "vhosts": [{"name": "/"}],
        "permissions": grants,
        **_topology(Routes(Topology(prefix), queue_type=queue_type), queues),
    }


def main(environ: Mapping[str, str]) -> None:
    passwords = {
        service: environ[f"JOBTRAIL_AMQP_PASSWORD_{service.upper()}"]
        for service in SERVICES
        if environ.get(f"JOBTRAIL_AMQP_PASSWORD_{service.upper()}")
    }
    target = Path(environ.get("JOBTRAIL_RABBITMQ_DEFINITIONS") or DEFINITIONS)
    target.parent.mkdir(parents=True, exist_ok=True)
    queue_type = environ.get("JOBTRAIL_QUEUE_TYPE") or "classic"
    document = definitions(passwords=passwords, queue_type=queue_type)
    target.write_text(json.dumps(document, indent=2) + "\n")
    acl = Path(environ.get("JOBTRAIL_REDIS_ACL") or REDIS_ACL)
    acl.parent.mkdir(parents=True, exist_ok=True)
    acl.write_text(acl_file(environ.get("JOBTRAIL_REDIS_PASSWORD")))
    print(f"wrote {target} and {acl}", file=sys.stderr)


def acl_file(password: str | None = None) -> str:
    """Redis's ACL file: the default user off, the services' user on ``jobtrail:*`` keys."""
    secret = password or PLACEHOLDER.format(service="redis")
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return (
        "user default off resetkeys resetchannels -@all\n"
        f"user {REDIS_USER} {redis_acl('jobtrail', '#' + digest)}\n"
    )


if __name__ == "__main__":
    import os

    main(os.environ)
