"""Generations of the Redis projection: key spaces that a replay builds beside the live one.

``<prefix>:active`` names the generation that readers and the live projection use. Without it
(never replayed, or Redis lost everything) the base generation is active, whose keys are
``<prefix>:job:<id>``, ``<prefix>:counts`` ...; generation N keeps the same keys under
``<prefix>:g<N>:``. A replay builds a new generation, switches ``active`` to it in one atomic
compare-and-set, then unlinks the old generation's keys in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, cast
from uuid import UUID

from redis.asyncio import Redis

from shared.domain.job import DEFAULT_TENANT

SWITCH = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return -1 end
local new_at = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[3] ~= '1' and new_at < tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class KeySpace:
    """The keys of one generation ("" is the base generation)."""

    prefix: str
    generation: str = ""

    @property
    def root(self) -> str:
        return f"{self.prefix}:g{self.generation}" if self.generation else self.prefix

    @property
    def active_key(self) -> str:
        return active_key(self.prefix)

    @property
    def counts_key(self) -> str:
        return f"{self.root}:counts"

    @property
    def position_key(self) -> str:
        return f"{self.root}:projection:position"

    @property
    def expiring_key(self) -> str:
        """Final jobs by the time their hash expires (see redis_scripts.PRUNE)."""
        return f"{self.root}:expiring"

    def job_key(self, job_id: UUID | str) -> str:
        return f"{self.root}:job:{job_id}"

    def index_key(self, kind: str = "", value: str = "", tenant: str = DEFAULT_TENANT) -> str:
        """A list index of ``tenant``: all its jobs, or those of one status or type (the default
        tenant's under the root, as before tenants; see redis_scripts.TENANT_KEYS)."""
        root = self.root if tenant == DEFAULT_TENANT else f"{self.root}:t:{tenant}"
        return f"{root}:index:{kind}:{value}" if kind else f"{root}:index"

    def patterns(self) -> list[str]:
        """SCAN patterns (or exact keys) that cover every key of this generation."""
        if self.generation:
            return [f"{self.root}:*"]
        return [
            f"{self.root}:job:*",
            f"{self.root}:index*",
            f"{self.root}:t:*",
            self.counts_key,
            self.position_key,
            self.expiring_key,
            f"{self.root}:forgotten",
        ]


class Switch(Enum):
    """What an attempted switch found."""

    SWITCHED = 1
    BEHIND = 0  # the new generation has applied less of the log than the active one
    MOVED = -1  # another replay switched first: the expected old generation is not active


def active_key(prefix: str) -> str:
    return f"{prefix}:active"


async def active(redis: Redis, prefix: str) -> KeySpace:
    """The generation readers use now."""
    return KeySpace(prefix, cast(str | None, await redis.get(active_key(prefix))) or "")


async def new_generation(redis: Redis, prefix: str) -> KeySpace:
    """A generation no one has used since Redis last lost its data."""
    return KeySpace(prefix, str(await redis.incr(f"{prefix}:generations")))


async def switch(redis: Redis, old: KeySpace, new: KeySpace, *, force: bool = False) -> Switch:
    """Makes ``new`` active if ``old`` still is and ``new`` has applied at least as much of the
    log as ``old`` (so no reader sees an older state after the switch); ``force`` skips the
    second check (for a new generation that has read to the end of the log)."""
    keys = [old.active_key, old.position_key, new.position_key]
    args = [old.generation, new.generation, "1" if force else "0"]
    found = await cast(Any, redis.eval(SWITCH, len(keys), *keys, *args))
    return Switch(int(found))


async def drop(redis: Redis, space: KeySpace, batch: int = 1000) -> int:
    """Unlinks every key of a generation, ``batch`` at a time; returns how many there were."""
    dropped = 0
    for pattern in space.patterns():
        if "*" not in pattern:
            dropped += int(await redis.unlink(pattern))
            continue
        chunk: list[str] = []
        async for key in redis.scan_iter(match=pattern, count=batch):
            chunk.append(key)
            if len(chunk) >= batch:
                dropped += int(await redis.unlink(*chunk))
                chunk = []
        if chunk:
            dropped += int(await redis.unlink(*chunk))
    return dropped
