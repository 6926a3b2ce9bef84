"""What waiting for jobs costs the submitter: N clients held by ``GET /v1/jobs/{id}/wait``
against the same N clients polling ``GET /v1/jobs/{id}``.

Usage: python -m benchmarks.wait_cost [--waits 200] [--seconds 10] [--poll-every 0.5]

Starts the services on scratch names (benchmarks.scratch), submits N jobs due in an hour (they
stay PENDING: no worker runs, nothing ends), then measures the submitter's CPU (user + system,
from /proc) for ``--seconds`` each: idle; N long polls held at once (each asks for the whole
window); N clients each reading its job every ``--poll-every`` seconds (the freshness a
long poll's answer has at its slowest: the server rereads every 0.5 s at most). Prints CPU
seconds per second of each phase, the same per waiting client, and the requests sent (when
the polling clients sent fewer than were due, the machine could not keep up: compare per
request). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.procstat import CpuMeter
from benchmarks.scratch import Scratch


async def held(client: httpx.AsyncClient, ids: list[str], seconds: float) -> int:
    async def one(job_id: str) -> None:
        answer = await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": seconds})
        answer.raise_for_status()

    await asyncio.gather(*(one(job_id) for job_id in ids))
    return len(ids)


async def polled(client: httpx.AsyncClient, ids: list[str], seconds: float, every: float) -> int:
    sent = 0
    deadline = time.monotonic() + seconds

    async def one(job_id: str) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            (await client.get(f"/v1/jobs/{job_id}")).raise_for_status()
            sent += 1
            await asyncio.sleep(every)

    await asyncio.gather(*(one(job_id) for job_id in ids))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--poll-every", type=float, default=0.5)
    args = parser.parse_args()
    with Scratch(workers=1) as system:
        system.start()
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        jobs = [{"type": "noop", "payload": {}, "run_at": later} for _ in range(args.waits)]
        with httpx.Client(base_url=system.base_url, headers=system.headers, timeout=30) as http:
            answer = http.post("/v1/jobs/batch", json={"jobs": jobs})
            answer.raise_for_status()
            ids = [item["id"] for item in answer.json()]

        async def measure() -> list[tuple[str, float, int]]:
            limits = httpx.Limits(max_connections=args.waits + 10)
            timeout = httpx.Timeout(args.seconds + 30)
            async with httpx.AsyncClient(
                base_url=system.base_url, headers=system.headers, timeout=timeout, limits=limits
            ) as client:
                rows = []
                for phase in ("idle", "held waits", "polling"):
                    meter = CpuMeter(system.groups).start()
                    if phase == "idle":
                        await asyncio.sleep(args.seconds)
                        sent = 0
                    elif phase == "held waits":
                        sent = await held(client, ids, args.seconds)
                    else:
                        sent = await polled(client, ids, args.seconds, args.poll_every)
                    cpu = meter.stop()
                    rows.append((phase, cpu["submitter"] / cpu["wall"], sent))
                return rows

        rows = asyncio.run(measure())
    print(f"{args.waits} clients waiting {args.seconds:g} s for jobs that do not end")
    print(f"{'phase':<12} {'submitter CPU s/s':>18} {'ms/client/s':>12} {'requests':>9}")
    for phase, cpu_per_s, sent in rows:
        per_client = cpu_per_s * 1000 / args.waits
        print(f"{phase:<12} {cpu_per_s:>18.3f} {per_client:>12.2f} {sent:>9}")
    print(f"polling: {args.waits * args.seconds / args.poll_every:.0f} requests were due")


if __name__ == "__main__":
    main()
