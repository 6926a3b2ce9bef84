"""A TCP fault proxy: put it between a service and PostgreSQL or RabbitMQ, then break the link.

Modes: pass-through, added latency, blackhole (connections stay open, bytes stop flowing, as on a
dead network path), reset (every open connection is closed at once) and refuse (reset, and every
new connection is closed at once too, as when the server is down). Runs its own event loop
in a thread so a test can drive it from plain code.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.latency_s = 0.0
        self.blackholed = False
        self.refusing = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")

    def start(self) -> Proxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refusing:
            self._abort(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        if self.refusing:  # refused while this one was connecting
            self._abort(client_w)
            self._abort(server_w)
            return
        self._writers.update((client_w, server_w))
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.blackholed:  # noqa: ASYNC110 (hold the bytes: nothing passes, nothing closes)
                    await asyncio.sleep(0.05)
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            fn()  # type: ignore[operator]
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def blackhole(self) -> None:
        self.blackholed = True

    def heal(self) -> None:
        self.blackholed = False
        self.refusing = False
        self.latency_s = 0.0

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        writer.close()

    def reset(self) -> None:
        """Closes every open connection with a TCP RST."""

        def reset_all() -> None:
            for writer in list(self._writers):
                self._abort(writer)
            self._writers.clear()

        self._call(reset_all)

    def refuse(self) -> None:
        """The server is down: open connections are reset, new ones are reset at once."""
        self.refusing = True
        self.reset()

    def stop(self) -> None:
        self.heal()
        self.reset()
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
