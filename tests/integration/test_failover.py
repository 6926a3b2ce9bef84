"""A URL naming several RabbitMQ hosts connects to the first one that answers (the
reconnection to another node is tests/chaos/test_scenarios_cluster.py's)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from shared import failover
from shared.messaging import make_broker
from shared.settings import BusSettings
from tests.processes import free_port


def test_a_dead_first_host_is_skipped(amqp_url: str) -> None:
    # Given a URL whose first host refuses connections and whose second is the real server
    live = urlsplit(amqp_url)
    dead = f"127.0.0.1:{free_port()}"
    url = amqp_url.replace(f"@{live.hostname}:{live.port}", f"@{dead},{live.hostname}:{live.port}")
    assert url != amqp_url

    async def connect() -> tuple[bool, str]:
        broker = make_broker(BusSettings(amqp_url=url))
        await broker.connect()
        try:
            pinged = await broker.ping(timeout=5)
            connection = await failover.connect(url)
            async with connection:
                return pinged, str(connection)
        finally:
            await broker.stop()

    # When a broker and a CLI connection are opened with it
    pinged, cli = asyncio.run(connect())

    # Then both reach the live one
    assert pinged
    assert f":{live.port}" in cli
