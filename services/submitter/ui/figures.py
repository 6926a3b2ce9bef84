"""The figures of the dashboard's overview, read cheaply and cached for a few seconds.

- Counts by status: the projection's per-tenant counters (one HMGET); by job type: the size of the
  tenant's own type indexes (one ZCARD per registered type), the jobs the projection holds.
- Throughput and failures per minute over the last ``MINUTES`` minutes: from the log, the durable
  record (a restart forgets nothing), so the figures of every submitter agree. The query reads
  only the newest ``SCAN_EVENTS`` notifications (a bounded scan on the primary key), keeps the
  final events (Completed, Failed) and failed attempts stamped within the window, and finds each
  one's tenant in its job's first event (a primary-key lookup). One query serves every tenant,
  and its answer is kept ``THROUGHPUT_CACHE_S``: however many dashboards poll, the log is read
  at most once per ``THROUGHPUT_CACHE_S`` per submitter, and never while no dashboard asks.
  When the window holds more than ``SCAN_EVENTS`` events, the answer says so (``partial``: the
  oldest event read is newer than the window's start).
- Lag: how many notifications of the log the relay and the projection have not handled yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic
from psycopg import sql

from shared.domain import DEFAULT_TENANT
from shared.domain.job import Job
from shared.eventstore import JobStore

MINUTES = 15
"""How many minutes the throughput chart covers."""

SCAN_EVENTS = 50_000
"""The newest notifications the throughput query reads at most."""

CACHE_S = 3.0
"""How long the lag figures are reused."""

THROUGHPUT_CACHE_S = 10.0
MAX_TENANTS_CACHED = 1000
"""How long the throughput figures are reused: the query reads up to ``SCAN_EVENTS`` events
(about 0.5 s on the 2-core machine when all of them fall in the window: benchmarks/overview.py),
and the chart counts whole minutes."""

KINDS = {
    get_topic(Job.Completed): "completed",
    get_topic(Job.Failed): "failed",
    get_topic(Job.AttemptFailed): "attempts_failed",
}

_THROUGHPUT = """
WITH recent AS (
    SELECT originator_id, topic,
           (convert_from(state, 'UTF8')::json #>> '{{timestamp,_data_}}')::timestamptz AS at
    FROM {events}
    WHERE notification_id > %(floor)s AND topic = ANY(%(topics)s)
)
SELECT coalesce(convert_from(s.state, 'UTF8')::json ->> 'tenant', %(default)s) AS tenant,
       date_trunc('minute', r.at) AS minute, r.topic, count(*) AS n, min(r.at) AS first
FROM recent r
JOIN {events} s ON s.originator_id = r.originator_id AND s.originator_version = 1
WHERE r.at >= %(since)s
GROUP BY 1, 2, 3
"""

_OLDEST = """
SELECT (convert_from(state, 'UTF8')::json #>> '{{timestamp,_data_}}')::timestamptz AS at
FROM {events} WHERE notification_id > %(floor)s ORDER BY notification_id LIMIT 1
"""


def throughput(store: JobStore, now: datetime) -> dict[str, Any]:
    """Per tenant and minute, how many jobs completed, failed for good and attempts failed
    within the last ``MINUTES`` minutes (see the module docstring); the minutes are those of
    ``now`` (UTC), oldest first."""
    head = store.max_notification_id()
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
    query = sql.SQL(_THROUGHPUT).format(events=store.table)
    floor = max(head - SCAN_EVENTS, 0)
    params = {
        "floor": floor,
        "topics": list(KINDS),
        "default": DEFAULT_TENANT,
        "since": since,
    }
    with store.connection() as conn:
        rows = conn.execute(query, params).fetchall()
        oldest = None
        if floor:  # the scan starts inside the log: does it reach back to the window's start?
            found = conn.execute(
                sql.SQL(_OLDEST).format(events=store.table), {"floor": floor}
            ).fetchone()
            oldest = found["at"] if found else None
    tenants: dict[str, dict[datetime, dict[str, int]]] = {}
    for row in rows:
        minute = row["minute"].astimezone(UTC)
        counts = tenants.setdefault(row["tenant"], {}).setdefault(minute, {})
        counts[KINDS[row["topic"]]] = int(row["n"])
    return {
        "since": since,
        "partial": oldest is not None and oldest > since,
        "tenants": tenants,
    }


def minutes_of(found: dict[str, Any], tenant: str) -> list[dict[str, Any]]:
    """The chart's rows for one tenant: every minute of the window, oldest first."""
    counts = found["tenants"].get(tenant, {})
    rows = []
    for i in range(MINUTES):
        minute = found["since"] + timedelta(minutes=i)
        row = counts.get(minute, {})
        rows.append(
            {
                "minute": minute.isoformat(),
                "completed": row.get("completed", 0),
                "failed": row.get("failed", 0),
                "attempts_failed": row.get("attempts_failed", 0),
            }
        )
    return rows


def lag(store: JobStore) -> dict[str, int]:
    """The log's head and the relay's saved position (one connection)."""
    return {"head": store.max_notification_id(), "relay": store.position("relay")}


@dataclass
class Cached:
    """An answer kept ``ttl_s`` seconds; callers arriving together share one read."""

    ttl_s: float = CACHE_S
    _value: tuple[float, Any] | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def get(self, read: Callable[[], Awaitable[Any]]) -> Any:
        async with self._lock:
            if self._value is not None and time.monotonic() - self._value[0] < self.ttl_s:
                return self._value[1]
            value = await read()
            self._value = (time.monotonic(), value)
            return value


@dataclass
class Figures:
    """The caches of one submitter (kept in ``app.state``)."""

    throughput: Cached = field(default_factory=lambda: Cached(THROUGHPUT_CACHE_S))
    lag: Cached = field(default_factory=Cached)
    dead_letters: dict[str, Cached] = field(default_factory=dict)
    """Per tenant: its dead letters are found by reading their jobs from the log, so each
    tenant's figure is read at most every THROUGHPUT_CACHE_S, however many tabs poll."""

    def dead_letters_of(self, tenant: str) -> Cached:
        if tenant not in self.dead_letters and len(self.dead_letters) >= MAX_TENANTS_CACHED:
            self.dead_letters.clear()  # bounded: a burst of tenants starts the cache afresh
        return self.dead_letters.setdefault(tenant, Cached(THROUGHPUT_CACHE_S))
