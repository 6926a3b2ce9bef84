"""jobtrail on a real three-node RabbitMQ cluster: the node holding the quorum queues' leaders is
killed (SIGKILL) under load; the services move to the other nodes and nothing is lost or
duplicated.

The cluster is private (tests/chaos/cluster.py: its own node names, ports 5681-5683, cookie and
directories, stopped and removed in a ``finally``); the shared RabbitMQ on 5672 is not touched.
Every queue is a quorum queue (``JOBTRAIL_QUEUE_TYPE=quorum``) with a member on each node, and
the services are given one URL naming the three nodes (shared/failover.py).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from shared.domain import Job
from tests.chaos.cluster import rabbitmq_cluster
from tests.chaos.harness import Load, mixed_jobs, scenario
from tests.chaos.test_scenarios import assert_clean

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

QUEUES = ("dlq", "dlq.ledger", "scheduler", "commands.submit", "commands.cancel")
WORK = ("default", "cpu", "io")


def test_cluster_node_holding_the_leaders_killed(
    postgres_server: str, redis_url: str, tmp_path: Path
) -> None:
    with rabbitmq_cluster(tmp_path / "rabbit") as cluster:
        name = "RabbitMQ cluster: node holding the quorum leaders SIGKILLed under load"
        quorum = {"JOBTRAIL_QUEUE_TYPE": "quorum"}
        with scenario(
            name, postgres_server, cluster.url, redis_url, tmp_path, extra_env=quorum
        ) as s:
            # Given every queue of the system is a quorum queue replicated on the three nodes
            names = {f"{s.prefix}.{q}" for q in QUEUES} | {f"{s.prefix}.work.{q}" for q in WORK}
            leaders = cluster.leaders(s.prefix)
            assert set(leaders) == names, f"not all quorum queues: {sorted(leaders)}"
            everyone = sorted(n.name for n in cluster.nodes)
            for queue in names:
                assert sorted(cluster.members(queue)) == everyone, queue
            # ... and the node holding the leaders (the services connect to the first node
            # first, and a quorum queue's leader starts on its declaring client's node)
            target, held = Counter(leaders.values()).most_common(1)[0]
            assert held == len(names), leaders

            # When that node is killed with SIGKILL while jobs are submitted and run
            load = Load(s.system, mixed_jobs(600)).start()
            time.sleep(4)
            cluster.by_name(target).kill()
            s.faults += 1
            load.wait()

            # Then the leaders moved to the surviving nodes ...
            moved = cluster.leaders(s.prefix)
            assert set(moved) == names and target not in moved.values(), moved
            # ... and the history checker finds nothing lost, duplicated or illegal
            assert_clean(s, load, settle_s=180)
            expired = 0
            for job_id in load.acked.values():
                history = s.store.history(job_id)
                assert sum(isinstance(e, Job.Submitted) for e in history) == 1
                expired += sum(isinstance(e, Job.LeaseExpired) for e in history)
            print(
                f"leaders on {target}, then {dict(Counter(moved.values()))}; {expired} LeaseExpired"
            )
