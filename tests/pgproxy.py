"""A TCP proxy in front of PostgreSQL that a test can cut, to make the database unreachable."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class PgProxy:
    """Tests that cut it run without the memo: the memo's listener connection, broken by
    the cut, leaves asyncio a socket it reports as an unclosed transport. The memo's own
    outage is tested by terminating its backend instead (tests/test_memo.py)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> str:
        """Listen on loopback and answer a DSN that goes through the proxy."""
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        parts = urlsplit(self.dsn)
        user = parts.username or "postgres"
        # No SSL negotiation: asyncpg's SSLRequest step leaks its socket when a cut
        # breaks it, and the leak would fail the test as an unclosed transport.
        netloc = f"{user}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc, query="sslmode=disable"))

    async def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
            # Let connections accepted just before the close reach _accept and close there.
            await asyncio.sleep(0.05)
        for pipe in list(self.pipes):
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        # A pipe cancelled before it ever ran closes nothing itself.
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        upstream_reader, upstream_writer = await self._connect_upstream()
        self.writers.add(upstream_writer)
        if self.server is None:  # cut while this connection was being set up
            writer.close()
            upstream_writer.close()
            return
        pipes = [
            asyncio.create_task(_pump(reader, upstream_writer)),
            asyncio.create_task(_pump(upstream_reader, writer)),
        ]
        self.pipes.update(pipes)
        for pipe in pipes:
            pipe.add_done_callback(self.pipes.discard)

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.dsn)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        if socket_dir:
            port = parts.port or 5432
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(parts.hostname, parts.port or 5432)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
