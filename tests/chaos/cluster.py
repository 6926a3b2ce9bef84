"""A private three-node RabbitMQ cluster on this machine, for the cluster fault scenario.

Each node has its own name (``jt-c<N>-<run>@localhost``), AMQP port (5681-5683), distribution
port, data and log directories under a temporary directory, no plugins (so no management
listener), and its own configuration file: the machine's /etc/rabbitmq files (which name the
shared node ``rabbit@localhost`` on 5672) are never read. The nodes share an Erlang cookie of
their own in a private ``HOME``: the shared node's cookie is neither read nor changed, and
``rabbitmqctl`` is always called with ``-n`` and that ``HOME``, so it can only reach these nodes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.services import answers

SBIN = Path("/usr/lib/rabbitmq/bin")
AMQP_PORTS = (5681, 5682, 5683)
DIST_PORTS = (25681, 25682, 25683)


@dataclass
class Node:
    """One node of the private cluster."""

    name: str
    amqp_port: int
    dist_port: int
    base: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    pid: int = 0  # the Erlang VM's OS process (beam.smp), for SIGKILL

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def ctl(self, *args: str, timeout: float = 120, tool: str = "rabbitmqctl") -> str:
        """Runs ``rabbitmqctl -n <this node> ...`` with the cluster's private cookie."""
        done = subprocess.run(
            [str(SBIN / tool), "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} -n {self.name} {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        log = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(SBIN / "rabbitmq-server")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def await_startup(self, timeout: float = 120) -> None:
        """Waits until the VM answers (the CLI refuses a node not yet registered), then until
        the broker has booted; notes the VM's process id."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                out = (self.base / "server.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited:\n{out}")
            try:
                self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.pid = int(self.ctl("eval", "list_to_integer(os:getpid()).").strip())

    def kill(self) -> None:
        """SIGKILL to the node's Erlang VM: no clean shutdown, its peers see it vanish."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    @property
    def alive(self) -> bool:
        return answers(self.url, timeout=1)


@dataclass
class Cluster:
    """Three nodes joined with ``rabbitmqctl join_cluster``; quorum queues span all three."""

    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One AMQP URL naming every node (jobtrail's multi-host syntax), first node first."""
        hosts = ",".join(f"127.0.0.1:{n.amqp_port}" for n in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def by_name(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def leaders(self, prefix: str) -> dict[str, str]:
        """Quorum queue name -> the node holding its leader (as the live nodes see it)."""
        live = next(n for n in self.nodes if n.alive)
        out = live.ctl("list_queues", "name", "type", "leader", "--no-table-headers", "-q")
        result = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith(prefix) and parts[1] == "quorum":
                result[parts[0]] = parts[2]
        return result

    def members(self, queue: str) -> list[str]:
        live = next(n for n in self.nodes if n.alive)
        out = live.ctl("list_queues", "name", "members", "--no-table-headers", "-q")
        for line in out.splitlines():
            name, _, rest = line.partition("\t")
            if name == queue:
                return [m.strip(" []") for m in rest.split(",") if m.strip(" []")]
        return []


def _env(base: Path, home: Path, name: str, amqp_port: int, dist_port: int) -> dict[str, str]:
    config = base / "rabbitmq.conf"
    config.write_text(f"listeners.tcp.local = 127.0.0.1:{amqp_port}\nloopback_users.guest = true\n")
    plugins = base / "enabled_plugins"
    plugins.write_text("[].\n")
    env_file = base / "rabbitmq-env.conf"
    env_file.write_text("")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    return keep | {
        "HOME": str(home),
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_CONF_ENV_FILE": str(env_file),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_ENABLED_PLUGINS": "",
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            # net_ticktime 10: a peer that stops answering (without closing its connections, as a
            # killed VM does) is declared down after about 10 s instead of 60
            "-kernel inet_dist_use_interface {127,0,0,1} -kernel net_ticktime 10"
        ),
        "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }


@contextlib.contextmanager
def rabbitmq_cluster(tmp: Path, size: int = 3) -> Iterator[Cluster]:
    """Starts ``size`` private nodes, joins them to the first, and always stops and removes
    them (SIGKILL to whatever is left, then the directory)."""
    run = secrets.token_hex(3)
    home = tmp / "home"
    home.mkdir(parents=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16))
    cookie.chmod(0o400)
    cluster = Cluster()
    for i in range(size):
        base = tmp / f"node{i + 1}"
        (base / "log").mkdir(parents=True)
        name = f"jt-c{i + 1}-{run}@localhost"
        env = _env(base, home, name, AMQP_PORTS[i], DIST_PORTS[i])
        cluster.nodes.append(Node(name, AMQP_PORTS[i], DIST_PORTS[i], base, env))
    try:
        for node in cluster.nodes:
            if answers(node.url, timeout=1):
                raise RuntimeError(f"port {node.amqp_port} is taken: another cluster runs")
            node.start()
        for node in cluster.nodes:
            node.await_startup()
        first = cluster.nodes[0]
        for node in cluster.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
            node.ctl("await_startup")
        running = first.ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        if running != str(size):
            raise RuntimeError(f"{running} of {size} nodes run in the cluster")
        yield cluster
    finally:
        for node in cluster.nodes:
            with contextlib.suppress(Exception):
                node.ctl("stop", timeout=30)
            node.kill()
        deadline = time.monotonic() + 10
        while any(n.alive for n in cluster.nodes) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(tmp, ignore_errors=True)
