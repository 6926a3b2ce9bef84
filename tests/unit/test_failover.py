"""A cluster behind one AMQP URL: the host list is parsed, single-host clients get the first host,
and the work queues become quorum queues (without priorities) when asked."""

from __future__ import annotations

import pytest
from aio_pika import RobustConnection
from faststream.rabbit import QueueType

from contracts.names import Topology
from shared.failover import (
    FailoverBroker,
    FailoverConnection,
    amqp_hosts,
    connection_class,
    first_url,
)
from shared.messaging import Routes, make_broker
from shared.settings import BusSettings

CLUSTER = "amqp://user:p%40ss@rabbit-1:5681,rabbit-2:5682,rabbit-3/vhost?heartbeat=10"


def test_a_url_names_several_hosts() -> None:
    assert amqp_hosts(CLUSTER) == [("rabbit-1", 5681), ("rabbit-2", 5682), ("rabbit-3", None)]
    assert first_url(CLUSTER) == "amqp://user:p%40ss@rabbit-1:5681/vhost?heartbeat=10"
    assert amqp_hosts("amqp://guest:guest@127.0.0.1:5672/") == [("127.0.0.1", 5672)]
    assert amqp_hosts("amqp://[::1]:5672,h/") == [("::1", 5672), ("h", None)]


@pytest.mark.parametrize("url", ["amqp://u@h1,,h2/", "amqp://h1:port/", "not a url"])
def test_a_bad_host_list_is_refused_by_the_settings(url: str) -> None:
    with pytest.raises(ValueError, match="AMQP URL"):
        BusSettings(amqp_url=url)


def test_several_hosts_get_the_failover_connection() -> None:
    assert connection_class("amqp://guest:guest@127.0.0.1:5672/") is None
    cls = connection_class(CLUSTER)
    assert cls is not None and issubclass(cls, FailoverConnection)
    assert cls.HOSTS == (("rabbit-1", 5681), ("rabbit-2", 5682), ("rabbit-3", None))
    # the step it overrides is still aio-pika's (a name-mangled private method of 10.2)
    assert callable(getattr(RobustConnection, "_RobustConnection__connect_transport", None))
    assert isinstance(make_broker(BusSettings(amqp_url=CLUSTER)), FailoverBroker)
    assert not isinstance(make_broker(BusSettings()), FailoverBroker)


def test_quorum_work_queues_drop_the_priorities() -> None:
    classic = Routes(Topology("jt")).work("cpu")
    assert classic.arguments and classic.arguments.get("x-queue-type") in (None, "classic")
    assert classic.arguments["x-max-priority"] == 9
    settings = BusSettings(topology_prefix="jt", queue_type="quorum")
    quorum = Routes.from_settings(settings).work("cpu")
    assert quorum.arguments and quorum.arguments["x-queue-type"] == QueueType.QUORUM.value
    assert "x-max-priority" not in quorum.arguments
    assert quorum.arguments["x-dead-letter-exchange"] == "jt.dlx"
