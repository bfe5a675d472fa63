"""`jira-status-cache simulate`: run the simulator as its own process until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from .options import ENGLISH_CATEGORIES, GERMAN_CATEGORIES, SimOptions
from .server import Simulator


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    projects = [name.strip().upper() for name in args.projects.split(",") if name.strip()]
    asyncio.run(_serve(_options(args), args.host, args.port, args.issues, projects))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate", description="Run a fake Jira site.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--issues", type=int, default=200, help="issues to seed")
    parser.add_argument("--projects", default="ALPHA,BETA,GAMMA", help="comma-separated keys")
    parser.add_argument("--flavor", choices=("cloud", "dc"), default="cloud")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=0.0, help="requests/s, 0 = off")
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--retry-after", type=float, help="fixed Retry-After seconds on 429")
    parser.add_argument("--omit-retry-after", action="store_true")
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-secret")
    parser.add_argument("--webhook-secret-in-query", action="store_true", help="DC-style ?secret=")
    parser.add_argument("--email")
    parser.add_argument("--token")
    parser.add_argument("--pat")
    parser.add_argument("--timezone", default="America/Chicago")
    parser.add_argument("--english", action="store_true", help="English category names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-lag", type=float, default=0.0, help="index lag, seconds")
    parser.add_argument(
        "--clock-offset", type=float, default=0.0, help="seconds Jira's clock is ahead (or -behind)"
    )
    parser.add_argument(
        "--minute-precision", action="store_true", help="JQL compares `updated` to the minute"
    )
    return parser


def _options(args: argparse.Namespace) -> SimOptions:
    names = ENGLISH_CATEGORIES if args.english else GERMAN_CATEGORIES
    return SimOptions(
        flavor=args.flavor,
        latency=args.latency_ms / 1000,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=args.retry_after,
        omit_retry_after=args.omit_retry_after,
        email=args.email,
        token=args.token,
        pat=args.pat,
        timezone=args.timezone,
        category_names=dict(names),
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        webhook_secret_in_query=args.webhook_secret_in_query,
        seed=args.seed,
        search_lag=args.search_lag,
        clock_offset=args.clock_offset,
        minute_precision=args.minute_precision,
    )


async def _serve(
    options: SimOptions, host: str, port: int, issues: int, projects: list[str]
) -> None:
    simulator = Simulator(options)
    keys = simulator.seed(issues, projects)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    url = await simulator.start(host, port)
    print(f"Jira simulator ({options.flavor}) serving {issues} issues at {url}", flush=True)
    print(welcome(url, keys), flush=True)
    await stop.wait()
    await simulator.stop()


def welcome(url: str, keys: list[str]) -> str:
    """Keys a newcomer can ask for, and how to change one (the README lists every route)."""
    if not keys:
        return f"  no issues yet: POST {url}/_sim/seed makes some (README: The Jira simulator)"
    last: dict[str, str] = {}
    for key in keys:
        last[key.rsplit("-", 1)[0]] = key
    ranges = ", ".join(f"{project}-1 to {key}" for project, key in last.items())
    return "\n".join(
        [
            f"  keys: {ranges}",
            "  change an issue (its webhook reaches the cache at once):",
            f"    curl -s -X POST {url}/_sim/issues/{keys[0]}/transition \\",
            "      -H 'Content-Type: application/json' -d '{\"status\": \"Done\"}'",
            f"  more admin routes under {url}/_sim/ (README: The Jira simulator)",
        ]
    )
