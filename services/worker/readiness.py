"""The worker's readiness: it is consuming, not merely connected.

Why a module: a worker whose consumer is gone (its channel closed, the consumer cancelled), or
whose deliveries stopped while slots are free, still answers and holds its connections, while
the jobs of its queues wait. A worker whose every slot is busy is *not* stalled: each attempt
ends within its job type's ``timeout_s`` (``asyncio.timeout`` in handlers.execute), and a
readiness probe that failed on long jobs would get a healthy worker restarted by an orchestrator
that reads it as health (compose, swarm), abandoning its attempts.

Readiness compares, without I/O, the last time a delivery took a slot (``WorkerState.took_at``,
set by the subscriber) with the depth and the consumer count of its queues as the service's
health monitor last read them
(``Service.depths``, ``Service.consumers``: a passive declare per queue every
``JOBTRAIL_HEALTH_CHECK_S``).
"""

from __future__ import annotations

import time

from services.worker.state import WorkerState
from shared.health import Check
from shared.service import Service


def consuming(service: Service, state: WorkerState, concurrency: int, stall_s: float) -> Check:
    """Not ready when RabbitMQ counts no consumer on one of the worker's queues (its consumer
    is gone: cancelled by the broker, its channel closed), when messages have waited in them
    for ``stall_s`` with no delivery taking a slot here while a slot was free, or when their
    depths could not be read for as long. Every slot busy is ready: busy, not stalled."""
    since = time.monotonic()

    def check() -> str | None:
        now = time.monotonic()
        unread = now - max(service.depths_at, since)
        if unread > stall_s:
            return f"queue depths not read for {unread:.0f} s: RabbitMQ does not answer"
        gone = sorted(queue for queue, n in service.consumers.items() if n == 0)
        if gone:  # this worker consumes them, so RabbitMQ should count it at least
            return f"not consuming: RabbitMQ counts no consumer on {', '.join(gone)}"
        waiting = {queue: n for queue, n in service.depths.items() if n}
        if len(state.running) >= concurrency:
            return None  # busy: each attempt ends within its timeout_s
        still = now - max(state.took_at, service.drained_at)
        if waiting and still > stall_s:
            queues = ", ".join(f"{queue} ({n})" for queue, n in sorted(waiting.items()))
            return (
                f"not consuming: messages wait in {queues} and no delivery took a slot for "
                f"{still:.0f} s (bound {stall_s:g} s; {len(state.running)} of {concurrency} "
                "slots busy)"
            )
        return None

    return check
