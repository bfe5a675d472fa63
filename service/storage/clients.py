"""SQL over clients: the named holders of API tokens, kept as a hash of the token."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.storage.pool import Executor

# What a scope opens (the README's token table): `admin` opens everything.
SCOPES = ("read", "subscribe", "refresh", "admin")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Names the service gives to the tokens of its settings; a stored client cannot take them.
RESERVED = ("anonymous", "api-token-", "admin-token-")


class ClientExistsError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a client named {name!r} exists, or existed (names are never reused)")


class InvalidClientError(ValueError):
    """A name or scope list that cannot be a client; the message says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A client's own limits; None: the setting's default."""

    subscriptions: int | None = None
    streams: int | None = None
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    scopes: frozenset[str]
    limits: Limits = Limits()
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    # A client of API_TOKENS: it also sees the subscriptions made before clients existed.
    legacy: bool = False

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_client(name: str, scopes: Iterable[str]) -> frozenset[str]:
    """The scopes, if `name` and they make a client; else InvalidClientError."""
    if not NAME.fullmatch(name) or name.startswith(RESERVED):
        raise InvalidClientError(
            f"{name!r}: a name is 1 to 64 of a-z, 0-9 and ._- (not anonymous, api-token-*,"
            " admin-token-*)"
        )
    chosen = frozenset(scopes)
    if not chosen or not chosen <= set(SCOPES):
        raise InvalidClientError(f"scopes must be some of {', '.join(SCOPES)}")
    return chosen


async def add(
    executor: Executor, name: str, scopes: Iterable[str], token: str, limits: Limits = Limits()
) -> Client:
    chosen = check_client(name, scopes)
    try:
        rows = await executor.fetch(
            "INSERT INTO clients (name, token_sha256, scopes, max_subscriptions, max_streams,"
            " rate) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            name,
            token_hash(token),
            sorted(chosen),
            limits.subscriptions,
            limits.streams,
            limits.rate,
        )
    except asyncpg.UniqueViolationError:
        raise ClientExistsError(name) from None
    return _client(rows[0])


async def listed(executor: Executor) -> list[Client]:
    """Every client, revoked ones too, by name."""
    return [_client(row) for row in await executor.fetch("SELECT * FROM clients ORDER BY name")]


async def live(executor: Executor) -> dict[bytes, Client]:
    """The clients not revoked, by the hash of their token."""
    rows = await executor.fetch("SELECT * FROM clients WHERE revoked_at IS NULL")
    return {bytes(row["token_sha256"]): _client(row) for row in rows}


async def revoke(executor: Executor, name: str) -> bool:
    """Revoke a live client; False when there is none of that name."""
    done = await executor.fetchval(
        "UPDATE clients SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL"
        " RETURNING name",
        name,
    )
    return done is not None


def _client(row: asyncpg.Record) -> Client:
    return Client(
        name=row["name"],
        scopes=frozenset(row["scopes"]),
        limits=Limits(row["max_subscriptions"], row["max_streams"], row["rate"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
