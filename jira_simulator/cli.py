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
    parser = argparse.ArgumentParser(
        prog="jira-status-cache simulate",
        description="Run a fake Jira site (Cloud or Data Center) with seeded issues, its REST "
        "routes and JSON admin routes under /_sim (README.md, The Jira simulator).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  jira-status-cache simulate --port 8900 --email dev@example.com "
        "--token dev-token \\\n    --webhook-url http://127.0.0.1:8000/api/v1/webhooks/jira "
        "--webhook-secret dev-secret",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=8900, help="port to listen on (default: %(default)s)")
    add("--issues", type=int, default=200, help="issues to seed (default: %(default)s)")
    add("--projects", default="ALPHA,BETA,GAMMA", help="comma-separated project keys to seed")
    add("--flavor", choices=("cloud", "dc"), default="cloud", help="Jira Cloud or Data Center")
    add("--latency-ms", type=float, default=0.0, help="added to every answer, in ms")
    add("--rate-limit", type=float, default=0.0, help="requests/s before 429s; 0: no limit")
    add("--burst", type=int, default=20, help="requests allowed at once above the rate")
    add("--retry-after", type=float, help="a fixed Retry-After (seconds) on 429 answers")
    add("--omit-retry-after", action="store_true", help="answer 429 without Retry-After")
    add("--webhook-url", help="where to deliver webhooks (as one webhook configured in Jira)")
    add("--webhook-secret", help="signs each delivery (X-Hub-Signature)")
    add("--webhook-secret-in-query", action="store_true", help="DC-style ?secret= in the URL")
    add("--email", help="Cloud Basic auth: the account email the simulator accepts")
    add("--token", help="Cloud Basic auth: the API token it accepts")
    add("--pat", help="Data Center: the personal access token it accepts")
    add("--timezone", default="America/Chicago", help="the site's zone (JQL's relative dates)")
    add("--english", action="store_true", help="English status category names (not German)")
    add("--seed", type=int, default=0, help="random seed of the seeded issues")
    add("--search-lag", type=float, default=0.0, help="seconds a change takes to be searchable")
    add(
        "--clock-offset", type=float, default=0.0, help="seconds Jira's clock is ahead (or -behind)"
    )
    add("--minute-precision", action="store_true", help="JQL compares `updated` to the minute")
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
    print(welcome(url, keys, simulator), flush=True)
    await stop.wait()
    await simulator.stop()


def welcome(url: str, keys: list[str], simulator: Simulator) -> str:
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
            f"    curl -s -X POST {url}/_sim/issues/{to_do(simulator, keys)}/transition \\",
            "      -H 'Content-Type: application/json' -d '{\"status\": \"Done\"}'",
            f"  more admin routes under {url}/_sim/ (README: The Jira simulator)",
        ]
    )


def to_do(simulator: Simulator, keys: list[str]) -> str:
    """The first key still to do, so that moving it to Done shows a change."""
    issues = {issue.key: issue for issue in simulator.site.issues.values()}
    return next((key for key in keys if issues[key].status.category == "new"), keys[0])
