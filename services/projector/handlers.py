"""The projector's own loop besides the relay and the projection: checkpoints of the log head.

The relay (relay.py) and the projection (projection.py) are the projector's other use cases;
it consumes no message, so it has no subscribers.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from shared import metrics
from shared.eventstore.checkpoints import CheckpointChainError, write_checkpoint
from shared.postgres import connect
from shared.settings import AuditSettings

log = logging.getLogger(__name__)


async def checkpoints(url: str, audit: AuditSettings) -> None:
    """Checkpoints the log head every interval (every projector may; a lock serialises them)."""
    if not audit.checkpoint_interval_s:
        return

    def once() -> None:
        with connect(url) as conn:
            mark = write_checkpoint(conn, key=audit.key, file=audit.checkpoint_file)
        if mark is not None:
            log.info("checkpoint at notification %d: %s", mark.notification_id, mark.head.hex())

    while True:
        await asyncio.sleep(audit.checkpoint_interval_s)
        try:
            await asyncio.to_thread(once)
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "checkpoint not written (%s); next try in %.0f s", exc, audit.checkpoint_interval_s
            )
        except CheckpointChainError as exc:  # tampering: keep refusing, loudly, and keep running
            metrics.CHECKPOINTS_REFUSED.inc()
            log.error("checkpoint refused: %s", exc)
