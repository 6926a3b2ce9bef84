"""The status projection in Redis: one hash per job, counters, and indexes for listing.

Keys under ``<prefix>:``: ``job:<id>`` (hash), ``counts`` (hash: ``status:<S>``,
``type:<T>:<S>``), ``index`` and ``index:status:<S>`` / ``index:type:<T>`` (sorted sets by creation
time), ``projection:position`` (the last notification id applied). An update applies only when
its version is newer than the hash's (an atomic compare in Lua), so re-applying is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import project_aggregate
from redis.asyncio import Redis

from shared.domain.job import Job
from shared.domain.status import TRANSITIONS, Move, Status
from shared.settings import RedisSettings

MAX_RESULT_BYTES = 65_536
MOVE_TARGET: dict[Move, Status] = {move: to for (_, move), to in TRANSITIONS.items()}
assert len({(m, t) for (_, m), t in TRANSITIONS.items()}) == len(MOVE_TARGET), "move target unique"

APPLY = """
local key, counts = KEYS[1], KEYS[2]
local version, full, ttl = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local prefix, jid = ARGV[4], ARGV[5]
local fields = cjson.decode(ARGV[6])
local cur = redis.call('HMGET', key, 'version', 'status', 'type', 'created_ms')
if cur[1] then
  if tonumber(cur[1]) >= version then return 0 end
elseif not full then
  return -1
end
local status = fields['status']
local jtype = fields['type'] or cur[3]
local created = fields['created_ms'] or cur[4]
local flat = {}
for f, v in pairs(fields) do
  flat[#flat + 1] = f
  flat[#flat + 1] = v
end
redis.call('HSET', key, 'version', ARGV[1], unpack(flat))
if not cur[1] then
  redis.call('ZADD', prefix .. ':index', created, jid)
  redis.call('ZADD', prefix .. ':index:type:' .. jtype, created, jid)
end
if status and status ~= cur[2] then
  if cur[2] then
    redis.call('HINCRBY', counts, 'status:' .. cur[2], -1)
    redis.call('HINCRBY', counts, 'type:' .. jtype .. ':' .. cur[2], -1)
    redis.call('ZREM', prefix .. ':index:status:' .. cur[2], jid)
  end
  redis.call('HINCRBY', counts, 'status:' .. status, 1)
  redis.call('HINCRBY', counts, 'type:' .. jtype .. ':' .. status, 1)
  redis.call('ZADD', prefix .. ':index:status:' .. status, created, jid)
  if ttl > 0 and (status == 'COMPLETED' or status == 'CANCELLED' or status == 'FAILED') then
    redis.call('EXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end
return 1
"""


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def _json(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    if len(text) > MAX_RESULT_BYTES:
        return json.dumps({"truncated": True, "bytes": len(text)})
    return text


def full_view(job: Job) -> dict[str, str]:
    """Every field of a job's hash, from the job folded from its events."""
    return {
        "id": str(job.id),
        "type": job.job_type,
        "status": str(job.status),
        "attempt": str(job.attempt),
        "max_attempts": str(job.max_attempts),
        "queue": job.queue,
        "priority": str(job.priority),
        "created_at": _iso(job.created_on),
        "created_ms": str(int(job.created_on.timestamp() * 1000)),
        "updated_at": _iso(job.last_event_at),
        "run_at": _iso(job.run_at),
        "due_at": _iso(job.due_at),
        "worker": job.worker_id or "",
        "result": _json(job.result),
        "error": _json(job.error),
        "cancel_requested": "1" if job.cancel_requested else "0",
    }


def delta_view(event: Job.Event) -> dict[str, str] | None:
    """The fields one event changes, or None when only a full refold can tell (Requeued)."""
    if isinstance(event, (Job.Submitted, Job.Requeued)):
        return None
    move = event.move()
    assert move is not None
    fields = {"status": str(MOVE_TARGET[move]), "updated_at": _iso(event.timestamp)}
    if isinstance(event, Job.Scheduled):
        fields["due_at"] = ""
    elif isinstance(event, Job.Started):
        fields |= {"attempt": str(event.attempt), "worker": event.worker_id}
    elif isinstance(event, Job.Completed):
        fields["result"] = _json(event.result)
    elif isinstance(event, (Job.AttemptFailed, Job.Failed)):
        fields["error"] = _json({"type": event.error_type, "message": event.error_message})
        if isinstance(event, Job.AttemptFailed):
            fields |= {"due_at": _iso(event.retry_at), "worker": ""}
    elif isinstance(event, Job.LeaseExpired):
        message = f"lease of {event.worker_id} expired"
        fields |= {
            "error": _json({"type": "LeaseExpired", "message": message}),
            "due_at": _iso(event.retry_at),
            "worker": "",
        }
    elif isinstance(event, Job.CancelRequested):
        fields["cancel_requested"] = "1"
    return fields


class RedisView:
    """Reads and writes the projection; every key lives under the configured prefix."""

    def __init__(self, settings: RedisSettings, client: Redis | None = None) -> None:
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.redis = client or Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        self._apply = self.redis.register_script(APPLY)
        self.position_key = f"{self.prefix}:projection:position"
        self.counts_key = f"{self.prefix}:counts"

    def job_key(self, job_id: UUID | str) -> str:
        return f"{self.prefix}:job:{job_id}"

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def position(self) -> int:
        return int(await self.redis.get(self.position_key) or 0)

    async def set_position(self, position: int) -> None:
        await self.redis.set(self.position_key, position)

    def _args(self, job_id: UUID, version: int, fields: dict[str, str], full: bool) -> list[Any]:
        # One JSON argument instead of 2 per field: packing arguments dominated the cost.
        ttl = self.settings.final_ttl_s
        encoded = json.dumps(fields, separators=(",", ":"))
        return [version, "1" if full else "0", ttl, self.prefix, str(job_id), encoded]

    async def apply_events(self, events: Sequence[Job.Event]) -> set[UUID]:
        """Applies events in one pipeline; returns the jobs that need a full refold."""
        refold: set[UUID] = set()
        pipe = self.redis.pipeline(transaction=False)
        sent: list[UUID] = []
        for event in events:
            job_id = event.originator_id
            full = isinstance(event, Job.Submitted)
            if full:  # the first event holds everything the view needs
                first = cast(Job, project_aggregate(None, [event]))
                fields: dict[str, str] | None = full_view(first)
            else:
                fields = delta_view(event)
            if fields is None:
                refold.add(job_id)
                continue
            keys = [self.job_key(job_id), self.counts_key]
            await self._apply(
                keys, self._args(job_id, event.originator_version, fields, full), pipe
            )
            sent.append(job_id)
        results = await pipe.execute() if sent else []
        refold.update(job_id for job_id, r in zip(sent, results, strict=True) if int(r) == -1)
        return refold

    async def put_jobs(self, jobs: Sequence[Job]) -> None:
        """Writes whole jobs (after a refold), still only over older versions."""
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            keys = [self.job_key(job.id), self.counts_key]
            await self._apply(keys, self._args(job.id, job.version, full_view(job), True), pipe)
        if jobs:
            await pipe.execute()

    async def get(self, job_id: UUID) -> dict[str, str] | None:
        data = cast(dict[str, str], await self.redis.hgetall(self.job_key(job_id)))
        return data or None

    async def page(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[dict[str, str]]:
        """Jobs newest first, created before ``before`` (ms), filtered by status and type."""
        index = f"{self.prefix}:index"
        if status:
            index = f"{self.prefix}:index:status:{status}"
        elif job_type:
            index = f"{self.prefix}:index:type:{job_type}"
        top = f"({before}" if before is not None else "+inf"
        found: list[dict[str, str]] = []
        offset = 0
        while len(found) < limit:
            ids = cast(
                list[str],
                await self.redis.zrevrangebyscore(index, top, "-inf", start=offset, num=limit * 2),
            )
            if not ids:
                break
            offset += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.job_key(job_id))
            for view in await pipe.execute():
                type_ok = not job_type or view.get("type") == job_type
                if view and type_ok and (not status or view.get("status") == status):
                    found.append(view)
        return found[:limit]

    def progress_key(self, job_id: UUID | str) -> str:
        return f"{self.prefix}:progress:{job_id}"

    async def set_progress(self, job_id: UUID, fraction: float, message: str) -> None:
        """Progress is telemetry, kept beside the projection and never written to the log."""
        key = self.progress_key(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"fraction": f"{fraction:.4f}", "message": message})
        pipe.expire(key, 86_400)
        await pipe.execute()

    async def get_progress(self, job_id: UUID) -> dict[str, str] | None:
        data = cast(dict[str, str], await self.redis.hgetall(self.progress_key(job_id)))
        return data or None

    async def counts(self) -> dict[str, int]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.counts_key))
        return {k: int(v) for k, v in raw.items()}

    async def warn_if_noeviction(self) -> str | None:
        """Returns a warning when Redis would refuse writes instead of evicting when full."""
        config = await self.redis.config_get("maxmemory-policy")
        policy = config.get("maxmemory-policy", "")
        if policy == "noeviction":
            return (
                "Redis maxmemory-policy is noeviction: when Redis is full, projection writes "
                "fail instead of evicting; set allkeys-lru (status reads fall back to the log)"
            )
        return None
