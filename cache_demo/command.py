"""The demo's wiring: embedded PostgreSQL, the simulator and the service in one event loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import uvicorn

from jira_simulator import ENGLISH_CATEGORIES, SimOptions, Simulator
from service.config import JiraSettings, Settings
from service.http.app import WEBHOOK_PATH, create_app
from service.storage.embedded import start_embedded

from .board import Board, View
from .team import Team

HOST = "127.0.0.1"
DATABASE = "jira_status_cache_demo"
EMAIL, TOKEN, SECRET = "demo@example.com", "demo-jira-token", "demo-webhook-secret"
# The projects of calling services, each linking the issues of one Jira project.
PROJECTS = {"checkout": "ALPHA", "billing": "BETA", "search": "GAMMA"}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The demo handles SIGINT and SIGTERM itself, and stops the server in its turn.
        yield


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jira-status-cache demo",
        description="Run the cache against a simulated Jira whose team keeps moving issues, "
        "with some webhooks dropped, and show the cache live. Needs no configuration.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--port", type=int, default=8000, help="the service's port")
    add("--sim-port", type=int, default=0, help="the simulator's port; 0 picks a free one")
    add("--data-dir", type=Path, default=Path(".data/demo"), help="embedded PostgreSQL's home")
    add("--issues", type=int, default=200, help="issues in the simulated Jira")
    add("--every", type=float, default=1.0, help="seconds between the team's moves")
    add("--drop", type=float, default=0.2, help="share of webhooks dropped, the first at once")
    add("--poll-interval", type=float, default=2.0, help="JIRA_POLL_INTERVAL, seconds")
    add("--ttl", type=float, default=10.0, help="JIRA_CACHE_TTL, seconds")
    add("--sync-interval", type=float, default=3.0, help="JIRA_SYNC_INTERVAL, seconds; 0: off")
    add("--redraw", type=float, default=1.0, help="seconds between redraws of the table")
    add("--rows", type=int, default=0, help="rows in the table; 0 fits the terminal")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not port_free(args.port):
        print(f"demo: port {args.port} is in use; pick another with --port", file=sys.stderr)
        return 1
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    print("Starting PostgreSQL, a Jira simulator and the cache...", flush=True)
    dsn = await fresh_database(args.data_dir)
    names = dict(ENGLISH_CATEGORIES)
    sim = Simulator(
        SimOptions(email=EMAIL, token=TOKEN, webhook_secret=SECRET, category_names=names)
    )
    keys = sim.seed(args.issues, PROJECTS.values())
    await sim.start(HOST, args.sim_port)
    try:
        return await serve(args, sim, keys, dsn, stop)
    finally:
        await sim.stop()


async def fresh_database(data_dir: Path) -> str:
    """The embedded server under data_dir, with the demo's database made anew."""
    server = await asyncio.to_thread(start_embedded, data_dir)
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(server)._replace(path=f"/{DATABASE}"))


async def serve(
    args: argparse.Namespace, sim: Simulator, keys: list[str], dsn: str, stop: asyncio.Event
) -> int:
    settings = Settings(
        database_url=dsn,
        host=HOST,
        port=args.port,
        cache_ttl=args.ttl,
        jira=JiraSettings(base_url=sim.base_url, email=EMAIL, api_token=TOKEN),
        webhook_secret=SECRET,
        poll_interval=args.poll_interval,
        sync_interval=args.sync_interval,
        log_level="WARNING",
    )
    config = uvicorn.Config(
        create_app(settings), host=HOST, port=args.port, log_level="warning", lifespan="on"
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                print("demo: the service did not start (see above)", file=sys.stderr)
                return 1
            await asyncio.sleep(0.02)
        url = f"http://{HOST}:{args.port}"
        sim.options.webhook_url = url + WEBHOOK_PATH
        await show(args, sim, keys, url, stop)
        return 0
    finally:
        server.should_exit = True
        await serving


async def show(
    args: argparse.Namespace, sim: Simulator, keys: list[str], url: str, stop: asyncio.Event
) -> None:
    """Link the issues, fill the cache, then let the team work and redraw until stopped."""
    async with aiohttp.ClientSession(base_url=url) as http:
        await link_all(http, sim)
        team = Team(sim, keys, args.every, args.drop)
        view = View(
            url,
            sim.base_url,
            tuple(PROJECTS),
            args.poll_interval,
            args.ttl,
            args.rows,
            args.sync_interval,
        )
        board = Board(http, sim, team, view, sys.stdout)
        tasks = [asyncio.create_task(team.run()), asyncio.create_task(board.run(args.redraw))]
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in [stopped, *tasks]:
            task.cancel()
        await asyncio.gather(stopped, *tasks, return_exceptions=True)
        # The team and the board end before the stop only when they failed: say why.
        for task in tasks:
            if not task.cancelled():
                task.result()
    print("\nStopped.", flush=True)


async def link_all(http: aiohttp.ClientSession, sim: Simulator) -> None:
    """Each project links its Jira project's issues; each link reads its issue at once."""
    puts = [
        put(http, f"/api/v1/projects/{project}/jira/{issue.key}")
        for project, jira_project in PROJECTS.items()
        for issue in sim.site.issues.values()
        if issue.project == jira_project
    ]
    await asyncio.gather(*puts)


async def put(http: aiohttp.ClientSession, path: str) -> None:
    async with http.put(path) as response:
        response.raise_for_status()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn does: connections of an earlier run in TIME_WAIT do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True
