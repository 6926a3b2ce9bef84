"""The PostgreSQL role ``jobtrail up`` and ``jobtrail demo`` run the services as.

The services never run as the owner of the log: as the owner (``JOBTRAIL_POSTGRES_URL``) this
module does what ``jobtrail db init`` does, creates the login role ``JOBTRAIL_SERVICE_ROLE``
(default ``jobtrail_service``) when it is missing, grants it what ``jobtrail db grant`` grants
(append and read the log, no UPDATE/DELETE/TRUNCATE on it, the key table read only), and returns
the environment of the services: the same URL with that role, and schema creation off.

The role's password: ``JOBTRAIL_SERVICE_ROLE_PASSWORD`` when set (the operator manages it);
otherwise a fresh random one is set on the role at every start and handed to the child processes
only through their environment (never printed).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_ROLE = "jobtrail_service"
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RoleError(RuntimeError):
    """The service role cannot be set up; the message says what to do (it holds no secret)."""


def with_role(url: str, role: str, password: str | None) -> str:
    """``url`` connecting as ``role`` (with ``password`` when given) instead of its own user."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def ensure_role(conn: psycopg.Connection[Any], role: str, password: str | None) -> str:
    """Creates ``role`` (LOGIN, nothing else) when missing and grants it the services' rights;
    sets a random password unless ``password`` is given for an existing role. Returns the
    password to connect with."""
    from shared.eventstore.schema import grant

    row = conn.execute(
        "SELECT rolsuper OR rolname = current_user AS owner FROM pg_roles WHERE rolname = %s",
        [role],
    ).fetchone()
    if row is not None and row["owner"]:
        raise RoleError(f"JOBTRAIL_SERVICE_ROLE {role!r} is the owner or a superuser: name another")
    exists = row is not None
    secret = password or secrets.token_urlsafe(24)
    try:
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(secret)
                )
            )
        elif password is None:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(secret)
                )
            )
    except psycopg.errors.DuplicateObject:
        # another `jobtrail up` created it meanwhile: set our password on it
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(secret))
        )
    except psycopg.errors.InsufficientPrivilege:
        raise RoleError(
            f"the owner may not create or alter role {role!r}: create it yourself "
            "(CREATE ROLE ... LOGIN PASSWORD ...) and set JOBTRAIL_SERVICE_ROLE_PASSWORD"
        ) from None
    grant(conn, role)
    return secret


def role_name(env: Mapping[str, str]) -> str:
    """The service role's name (``JOBTRAIL_SERVICE_ROLE``, default ``jobtrail_service``)."""
    role = env.get("JOBTRAIL_SERVICE_ROLE") or DEFAULT_ROLE
    if not _ROLE.fullmatch(role):
        raise RoleError(f"JOBTRAIL_SERVICE_ROLE: {_ROLE.pattern} expected")
    return role


def service_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Sets up the schema and the service role as the owner; returns ``env`` (default: this
    process's environment) with the services' URL and ``JOBTRAIL_POSTGRES_CREATE_SCHEMA=false``."""
    from shared.eventstore import JobStore, ensure_database
    from shared.keys import create_table
    from shared.postgres import connect
    from shared.settings import StoreSettings

    env = dict(os.environ if env is None else env)
    role = role_name(env)
    settings = StoreSettings()
    ensure_database(settings.postgres_url)
    JobStore(settings.model_copy(update={"postgres_create_schema": True})).close()
    with connect(settings) as conn:
        create_table(conn)
        password = ensure_role(conn, role, env.get("JOBTRAIL_SERVICE_ROLE_PASSWORD") or None)
    return env | {
        "JOBTRAIL_POSTGRES_URL": with_role(settings.postgres_url, role, password),
        "JOBTRAIL_POSTGRES_CREATE_SCHEMA": "false",
    }
