"""`jira-status-cache client add|list|revoke`: the named clients of the API and their scopes.

A token is printed once, by `add`, and never stored: the database keeps its SHA-256 only.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import TextIO

from service.cli import common
from service.config import Settings
from service.model import render_time
from service.storage import clients
from service.storage.clients import SCOPES, Client, ClientExistsError, InvalidClientError, Limits

TOKEN_PREFIX = "jsc_"  # noqa: S105  (not a secret) so that a leaked token is recognisable to secret scanners


def add_command(subparsers: common.SubParsers[argparse.ArgumentParser]) -> None:
    client = subparsers.add_parser("client", help="add, list or revoke the API's named clients")
    actions = client.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make a client; prints its token, this once")
    add.add_argument("name", help="1 to 64 of a-z, 0-9 and ._-")
    add.add_argument(
        "--scopes",
        required=True,
        type=_scopes,
        help=f"comma-separated, some of {', '.join(SCOPES)}",
    )
    add.add_argument("--max-subscriptions", type=_whole, metavar="N", help="own limit")
    add.add_argument("--max-streams", type=_whole, metavar="N", help="own limit")
    add.add_argument("--rate", type=_rate, metavar="PER_S", help="own API requests a second")
    actions.add_parser("list", help="every client, revoked ones too")
    revoke = actions.add_parser("revoke", help="revoke a client's token (its name stays taken)")
    revoke.add_argument("name")


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if args.action == "add":
        limits = Limits(args.max_subscriptions, args.max_streams, args.rate)
        return common.run(add(settings, args.name, args.scopes, limits, out))
    if args.action == "revoke":
        return common.run(revoke(settings, args.name, out))
    return common.run(print_clients(settings, out))


async def add(
    settings: Settings, name: str, scopes: frozenset[str], limits: Limits, out: TextIO
) -> int:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        async with common.database(settings) as pool:
            client = await clients.add(pool, name, scopes, token, limits)
    except (ClientExistsError, InvalidClientError) as exc:
        print(f"jira-status-cache: {exc}", file=sys.stderr)
        return 1
    print(f"client {client.name} ({', '.join(sorted(client.scopes))}); its token, shown once:")
    print(token, file=out)
    return 0


async def revoke(settings: Settings, name: str, out: TextIO) -> int:
    async with common.database(settings) as pool:
        done = await clients.revoke(pool, name)
    if not done:
        print(f"jira-status-cache: no live client named {name!r}", file=sys.stderr)
        return 1
    print(f"revoked {name}: its token stops working within seconds on every replica", file=out)
    return 0


async def print_clients(settings: Settings, out: TextIO) -> int:
    async with common.database(settings) as pool:
        found = await clients.listed(pool)
    if not found:
        print("no clients (API_TOKENS and ADMIN_TOKENS, if set, still open the API)", file=out)
    for client in found:
        print(render_client(client), file=out)
    return 0


def render_client(client: Client) -> str:
    made = render_time(client.created_at) if client.created_at else "?"
    state = f"revoked {render_time(client.revoked_at)}" if client.revoked_at else "live"
    own = client.limits
    limits = [
        f"{what} {value:g}"
        for what, value in (
            ("subscriptions", own.subscriptions),
            ("streams", own.streams),
            ("rate", own.rate),
        )
        if value is not None
    ]
    shown = f"  limits: {', '.join(limits)}" if limits else ""
    return f"{client.name:<24}{','.join(sorted(client.scopes)):<26}made {made}  {state}{shown}"


def _scopes(text: str) -> frozenset[str]:
    chosen = frozenset(s.strip() for s in text.split(",") if s.strip())
    if not chosen or not chosen <= set(SCOPES):
        raise argparse.ArgumentTypeError(f"{text!r}: scopes are some of {', '.join(SCOPES)}")
    return chosen


def _whole(text: str) -> int:
    if not text.isdigit() or int(text) > 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 100000")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0.01 to 1000000")
    return value
