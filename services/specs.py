"""Generates the committed AsyncAPI and OpenAPI documents of the whole system.

python -m services.specs          # writes contracts/asyncapi.json and contracts/openapi.json
python -m services.specs --check  # exits 1 when the committed documents differ from the code
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from faststream.specification import AsyncAPI

from services.scheduler import subscribers as scheduler_subscribers
from services.submitter import subscribers as submitter_subscribers
from services.submitter.app import create_app
from services.worker import subscribers as worker_subscribers
from services.worker.settings import WorkerSettings
from services.worker.state import WorkerState
from shared.publishing import declare_publishers
from shared.service import Service
from shared.settings import BusSettings, RedisSettings, RetrySettings, StoreSettings

ROOT = Path(__file__).resolve().parents[1]
ASYNCAPI = ROOT / "contracts" / "asyncapi.json"
OPENAPI = ROOT / "contracts" / "openapi.json"


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every service's channels (default names and queues): the
    routers the services run, built over services that are never opened (nothing connects)."""
    bus = BusSettings(amqp_url="amqp://guest:guest@localhost:5672/", topology_prefix="jobtrail")
    services = {
        name: Service(
            name,
            bus=bus,
            store=StoreSettings(),
            redis=RedisSettings(),
            job_modules=["examples.jobs"],
        )
        for name in ("submitter", "scheduler", "worker", "projector")
    }
    worker = services["worker"]
    settings = WorkerSettings(concurrency=1, queues=[])
    state = WorkerState("worker", settings.lease_s, RetrySettings().backoff(), worker.registry)
    routers = {
        "submitter": submitter_subscribers.router(services["submitter"]),
        "scheduler": scheduler_subscribers.router(services["scheduler"]),
        "worker": worker_subscribers.router(worker, state, settings, worker.queues),
    }
    for name, router in routers.items():
        services[name].broker.include_router(router)
    projector = services["projector"]
    declare_publishers(projector.broker, projector.routes, bus.publish_timeout_s)
    spec = AsyncAPI(
        *(service.broker for service in services.values()),
        title="jobtrail",
        version="0.1.0",
        description="Messages between the jobtrail services. Every job event is committed to "
        "the log first; the projector's relay publishes only the events a service consumes.",
    )
    return cast(dict[str, Any], spec.to_specification().to_jsonable())


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the submitter's HTTP API."""
    return create_app().openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for path, document in ((ASYNCAPI, asyncapi()), (OPENAPI, openapi())):
        text = render(document)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python -m services.specs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
