"""Settings read from the environment (prefix ``JOBTRAIL_``), validated by pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from psycopg.conninfo import make_conninfo
from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.domain.backoff import Backoff
from shared.failover import amqp_hosts


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split)]
"""A list read from the environment as ``a,b,c``."""


class StoreSettings(BaseSettings):
    """Where the event log lives and how the store talks to it."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/jobtrail"
    postgres_schema: str = "public"
    postgres_pool_size: int = Field(default=6, ge=1, le=100)
    postgres_max_overflow: int = Field(default=2, ge=0, le=100)
    postgres_lock_timeout_s: int = Field(default=10, ge=0)
    postgres_idle_in_transaction_timeout_s: int = Field(default=5, ge=0)
    store_max_batch: int = Field(default=256, ge=1, le=10_000)
    store_max_inflight_batches: int = Field(default=2, ge=1, le=32)
    store_max_waiting: int = Field(
        default=10_000,
        ge=1,
        description="commands waiting for a group commit per process; past it a command (or "
        "a whole batch) is refused at once (503 + Retry-After at the API)",
    )
    store_conflict_retries: int = Field(default=5, ge=0, le=100)
    store_retry_budget_s: float = Field(
        default=4.0, gt=0, description="a command gives up (503 at the API) after this long"
    )
    postgres_connect_timeout_s: int = Field(
        default=2,
        ge=1,
        description="the connect timeout of every PostgreSQL connection: the log's pool and "
        "every other one (shared/postgres.py); it wins over a connect_timeout in the URL",
    )
    postgres_create_schema: bool = Field(
        default=True,
        description="create tables and triggers at start; false for a role that may not "
        "(run `jobtrail db init` as the owner instead)",
    )

    @field_validator("postgres_url")
    @classmethod
    def _postgres_scheme(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("postgres", "postgresql"):
            raise ValueError("JOBTRAIL_POSTGRES_URL must start with postgresql://")
        return url

    @property
    def max_connections(self) -> int:
        return self.postgres_pool_size + self.postgres_max_overflow

    def postgres_options(self) -> str:
        """The query options of JOBTRAIL_POSTGRES_URL (``sslmode``, ``sslrootcert``, ``sslcert``,
        ``sslkey``, ``sslcrl``, ``target_session_attrs``, ``application_name``,
        ``connect_timeout``, ``options`` ...) as a libpq conninfo string. Connections built from
        host, port, user and password (eventsourcing's pool, the schema lock) pass it as their
        conninfo, so they honour the same options as those opened with the URL itself; the
        explicit arguments win where both name a key."""
        query = urlsplit(self.postgres_url).query
        return make_conninfo(**dict(parse_qsl(query, keep_blank_values=True)))

    def eventsourcing_env(self) -> dict[str, str]:
        """The environment that configures eventsourcing's PostgreSQL infrastructure."""
        url = urlsplit(self.postgres_url)
        return {
            "PERSISTENCE_MODULE": "shared.eventstore.pool:PostgresFactory",
            "POSTGRES_CONNINFO_OPTIONS": self.postgres_options(),
            "APPLICATION_RECORDER_TOPIC": "shared.eventstore.recorder:JobRecorder",
            "POSTGRES_DBNAME": (url.path or "/jobtrail").lstrip("/") or "jobtrail",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_SCHEMA": self.postgres_schema,
            "POSTGRES_POOL_SIZE": str(self.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.postgres_max_overflow),
            "POSTGRES_LOCK_TIMEOUT": str(self.postgres_lock_timeout_s),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(
                self.postgres_idle_in_transaction_timeout_s
            ),
            "POSTGRES_PRE_PING": "y",
            "POSTGRES_CONNECT_TIMEOUT": str(self.postgres_connect_timeout_s),
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            "CREATE_TABLE": "y" if self.postgres_create_schema else "n",
            "IS_SNAPSHOTTING_ENABLED": "n",
        }


class BusSettings(BaseSettings):
    """RabbitMQ: where it is and under which prefix jobtrail names its exchanges and queues."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ; a cluster's nodes as one URL with several hosts, "
        "amqp://user:pw@host1:5672,host2:5672,host3:5672/ (a lost connection moves to the next "
        "node: shared/failover.py)",
    )
    topology_prefix: str = "jobtrail"
    queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="the work queues' type: classic (one node, with priorities 0-9) or quorum "
        "(replicated on every node of a cluster; RabbitMQ 3.x quorum queues ignore priorities); "
        "the other queues are always quorum queues. Set it alike on every service, before the "
        "queues are first declared (a queue's type cannot change: docs/deployment.md)",
    )
    queues: CommaList = Field(default_factory=lambda: ["default", "cpu", "io"])
    publish_timeout_s: float = Field(default=10.0, gt=0)
    delivery_limit: int = Field(default=5, ge=1)
    hold_s: float = Field(
        default=600.0,
        gt=0,
        description="how long a consumer holds a delivery while the database is away before "
        "parking it at the back of its queue (keep well under RabbitMQ's consumer_timeout, "
        "30 min by default)",
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_hosts(cls, url: str) -> str:
        amqp_hosts(url)  # raises ValueError on an empty host or a bad port
        return url


class PublishSettings(BaseSettings):
    """Who publishes committed events: the writer at once, the relay as the backstop
    (shared/publishing.py). Set them alike on every service."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    publish_on_commit: bool = Field(
        default=True,
        description="each writer publishes the events it has just committed; the relay then "
        "publishes only what no writer had confirmed within relay_grace_s (false: the relay "
        "publishes everything at once, one hop more)",
    )
    publish_max_pending: int = Field(
        default=10_000,
        ge=1,
        description="a writer's messages waiting or in flight; past it, the relay publishes them",
    )
    relay_grace_s: float = Field(
        default=2.0,
        ge=0,
        description="how long the relay leaves an event no writer has marked as published",
    )
    relay_check_s: float = Field(
        default=0.25, gt=0, description="how often the relay looks again at unmarked events"
    )
    relay_marks_max: int = Field(
        default=100_000,
        ge=1,
        description="marks of published events kept in Redis (<prefix>:relayed) for the relay",
    )


class RedisSettings(BaseSettings):
    """Redis, the status cache; it can always be rebuilt from the log."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "jobtrail"
    final_ttl_s: int = Field(default=7 * 24 * 3600, ge=0, description="0 keeps final jobs")
    redis_timeout_s: float = Field(default=2.0, gt=0)


class JobSettings(BaseSettings):
    """Which modules declare job types (comma-separated module paths). None by default: a
    deployment names its own; ``jobtrail up``/``demo`` and the tests name ``examples.jobs``."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    job_modules: CommaList = Field(default_factory=list)


class RetrySettings(BaseSettings):
    """Retry backoff: base * factor**(attempt-1), capped, jittered (prefix JOBTRAIL_RETRY_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_RETRY_", extra="ignore")

    base_s: float = Field(default=1.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    cap_s: float = Field(default=300.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)

    def backoff(self) -> Backoff:
        return Backoff(base_s=self.base_s, factor=self.factor, cap_s=self.cap_s, jitter=self.jitter)


class AuditSettings(BaseSettings):
    """Checkpoints of the log head and archives (see docs/audit.md)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    checkpoint_interval_s: float = Field(
        default=60.0, ge=0, description="how often the projector checkpoints the log head; 0 = off"
    )
    checkpoint_key: SecretStr | None = Field(
        default=None, description="HMAC key that signs checkpoints; keep it out of the database"
    )
    checkpoint_file: Path | None = Field(
        default=None, description="append every checkpoint to this file too (keep it elsewhere)"
    )
    archive_dir: Path = Field(default=Path(".jobtrail/archive"))

    @property
    def key(self) -> bytes | None:
        return self.checkpoint_key.get_secret_value().encode() if self.checkpoint_key else None


class RuntimeSettings(BaseSettings):
    """How a service process runs its interpreter (shared.runtime ``tune_runtime``)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    uvloop: bool = Field(default=True, description="run the event loop on uvloop (libuv)")


class LimitSettings(BaseSettings):
    """Per-key rate limits and the per-tenant cap on pending jobs (shared/ratelimit.py): the
    submitter answers 429 + Retry-After past them."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_", extra="ignore")

    rate_limit_per_s: int = Field(
        default=1_000,
        ge=0,
        description="requests a second per API key, in each submitter process (N submitters "
        "allow N times this); 0 = off",
    )
    rate_limit_burst: int = Field(
        default=2_000, ge=1, description="requests a key may send at once before the rate applies"
    )
    rate_limit_max_keys: int = Field(
        default=10_000,
        ge=1,
        description="keys a submitter remembers (least recently seen forgotten first)",
    )
    tenant_max_pending: int = Field(
        default=100_000, ge=0, description="jobs not yet final per tenant; 0 = no cap"
    )
