"""Settings, each declared once (variable, parser, bounds, help), read from the environment."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

T = TypeVar("T")
Flavor = Literal["cloud", "dc"]
# A parser turns one variable's raw text into its value, or raises ConfigError naming it.
Parser = Callable[[str, str], T]

HOUR, DAY = 3600, 86400
YEAR = 365 * DAY
MiB = 1024 * 1024


class ConfigError(ValueError):
    """A missing or malformed environment variable, named in the message."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable, for `--help` and the docs."""

    name: str
    help: str
    default: str  # as a person would write it; "unset" for none


def setting(env: str, default: Any, parse: Parser[T], help: str, *, secret: bool = False) -> T:
    """Declare a field read from the variable `env` (unset or blank: `default`)."""
    meta = {"env": env, "parse": parse, "help": help}
    return cast(T, dataclasses.field(default=default, repr=not secret, metadata=meta))


# Parsers


def text(name: str, raw: str) -> str:
    return raw


def path(name: str, raw: str) -> Path:
    return Path(raw)


def tokens(name: str, raw: str) -> frozenset[str]:
    return frozenset(t.strip() for t in raw.split(",") if t.strip())


PORT = re.compile(r"[1-9][0-9]{0,4}")  # as written in a URL or an entry: no leading zero


ANY_PORT = 0  # an entry `host:*`: every port of the host, for an operator who means it


def split_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `host:*`, `[v6]` or `[v6]:port` into the host and its port (None:
    bare, ports 80 and 443; ANY_PORT for `*`)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, None
    if port == "*":
        return host.lower(), ANY_PORT
    if not host or (port is not None and (not PORT.fullmatch(port) or int(port) > 65535)):
        raise ValueError(f"{entry!r} is not host, host:port (a port from 1 to 65535) or host:*")
    return host.lower(), None if port is None else int(port)


def host_entries(name: str, raw: str) -> frozenset[str]:
    """Comma-separated `host[:port]` entries, each checked at start-up."""
    entries = tokens(name, raw)
    for entry in entries:
        try:
            split_entry(entry)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
    return entries


def flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in {"1", "0", "true", "false", "yes", "no"}:
        raise ConfigError(name, f"expected true or false, got {raw!r}")
    return value in {"1", "true", "yes"}


def url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(name, f"expected an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def choice(*options: str, upper: bool = False) -> Parser[Any]:
    """One of `options`; typed Any, since the field declares its Literal."""

    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ConfigError(name, f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def whole(low: int, high: int) -> Parser[int]:
    """A whole number from `low` to `high`."""

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            problem = f"expected a whole number {_range(low, high)}, got {raw!r}"
            raise ConfigError(name, problem) from None
        return _within(name, raw, value, low, high)

    return parse


def real(low: float, high: float) -> Parser[float]:
    """A finite number from `low` to `high`: `nan`, `inf` and `1e400` are refused."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number {_range(low, high)}, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(name, f"expected a finite number {_range(low, high)}, got {raw!r}")
        return _within(name, raw, value, low, high)

    return parse


def _within(name: str, raw: str, value: T, low: float, high: float) -> T:
    if not low <= cast(float, value) <= high:
        raise ConfigError(name, f"expected a number {_range(low, high)}, got {raw}")
    return value


def _range(low: float, high: float) -> str:
    return f"from {low:g} to {high:g}"


@dataclass(frozen=True, slots=True)
class JiraSettings:
    """Where Jira is and how to talk to it; built only when JIRA_BASE_URL is set, and complete."""

    base_url: str = setting(
        "JIRA_BASE_URL", dataclasses.MISSING, url, "your Jira, e.g. https://acme.atlassian.net"
    )
    flavor: Flavor = setting(
        "JIRA_FLAVOR", "cloud", choice("cloud", "dc"), "cloud (Basic auth) or dc (Data Center, PAT)"
    )
    email: str | None = setting("JIRA_EMAIL", None, text, "Cloud account email (Basic auth)")
    api_token: str | None = setting(
        "JIRA_API_TOKEN", None, text, "Cloud API token (Basic auth)", secret=True
    )
    pat: str | None = setting(
        "JIRA_PAT", None, text, "Data Center personal access token", secret=True
    )
    max_concurrency: int = setting(
        "JIRA_MAX_CONCURRENCY", 4, whole(1, 64), "Jira requests in flight at once"
    )
    batch_size: int = setting("JIRA_BATCH_SIZE", 100, whole(1, 100), "keys per bulk request")
    timeout: float = setting("JIRA_TIMEOUT", 30.0, real(0.1, 600), "seconds per Jira request")
    connect_timeout: float = setting(
        "JIRA_CONNECT_TIMEOUT", 5.0, real(0.1, 600), "seconds to connect to Jira"
    )
    max_rps: float | None = setting(
        "JIRA_MAX_RPS", None, real(0.01, 10000), "steady cap on requests per second to Jira"
    )
    max_retries: int = setting(
        "JIRA_MAX_RETRIES", 4, whole(0, 20), "retries of a read after 429, 5xx, timeouts"
    )
    backoff_base: float = setting(
        "JIRA_BACKOFF_BASE", 2.0, real(0.001, HOUR), "first backoff, in seconds"
    )
    backoff_cap: float = setting(
        "JIRA_BACKOFF_CAP", 30.0, real(0.001, HOUR), "longest backoff, in seconds"
    )
    max_wait: float = setting(
        "JIRA_MAX_WAIT", 60.0, real(0, HOUR), "longest Retry-After waited for, in seconds"
    )
    breaker_threshold: int = setting(
        "JIRA_BREAKER_THRESHOLD", 5, whole(1, 1000), "failed calls that open the breaker"
    )
    breaker_cool_off: float = setting(
        "JIRA_BREAKER_COOL_OFF", 30.0, real(0.01, HOUR), "seconds before the breaker probes"
    )

    def __post_init__(self) -> None:
        if self.flavor == "dc" and not self.pat:
            raise ConfigError("JIRA_PAT", "required when JIRA_FLAVOR=dc")
        if self.flavor == "cloud" and not (self.email and self.api_token):
            missing = "JIRA_EMAIL" if not self.email else "JIRA_API_TOKEN"
            raise ConfigError(missing, "required when JIRA_FLAVOR=cloud (Basic auth)")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JiraSettings | None:
        """None when JIRA_BASE_URL is unset; every variable is checked either way."""
        values = _read(cls, env)
        if "base_url" not in values:
            return None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment, once, at start-up."""

    # Append new settings at the end: one `setting(...)` line declares, parses and documents.
    database_url: str | None = setting(
        "DATABASE_URL", None, text, "PostgreSQL DSN; unset: embedded under DATA_DIR", secret=True
    )
    data_dir: Path = setting("DATA_DIR", Path(".data"), path, "embedded PostgreSQL's data")
    host: str = setting("HOST", "127.0.0.1", text, "address to listen on")
    port: int = setting("PORT", 8000, whole(0, 65535), "port to listen on")
    api_tokens: frozenset[str] = setting(
        "API_TOKENS", frozenset(), tokens, "comma-separated bearer tokens", secret=True
    )
    allow_anonymous: bool = setting(
        "ALLOW_ANONYMOUS", False, flag, "serve a non-loopback HOST without tokens"
    )
    cache_ttl: float = setting(
        "JIRA_CACHE_TTL", 3600.0, real(1, YEAR), "seconds until a cached issue is stale"
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", MiB, whole(1024, 100 * MiB), "largest request body"
    )
    max_batch_keys: int = 500
    # The JIRA_* variables of the client; None when JIRA_BASE_URL is unset.
    jira: JiraSettings | None = dataclasses.field(default=None, metadata={"nested": JiraSettings})
    negative_ttl: float = setting(
        "JIRA_NEGATIVE_TTL", 300.0, real(0, YEAR), "seconds a 404 from Jira is remembered"
    )
    read_timeout: float = setting(
        "READ_THROUGH_TIMEOUT", 10.0, real(0.1, 600), "longest a read waits on Jira for a miss"
    )
    memo_size: int = setting(
        "MEMO_SIZE", 20000, whole(0, 10_000_000), "issues kept in memory; 0 turns the memo off"
    )
    memo_ttl: float = setting("MEMO_TTL", 30.0, real(0.1, DAY), "seconds a memo entry may live")
    webhook_secret: str | None = setting(
        "JIRA_WEBHOOK_SECRET", None, text, "the webhook secret; unset: webhooks off", secret=True
    )
    webhook_max_body_bytes: int = setting(
        "WEBHOOK_MAX_BODY_BYTES", MiB, whole(1024, 100 * MiB), "largest webhook body"
    )
    webhook_dedupe_days: float = setting(
        "WEBHOOK_DEDUPE_DAYS", 7.0, real(0.01, 365), "days delivery ids are kept for dedupe"
    )
    poll_interval: float = setting(
        "JIRA_POLL_INTERVAL", 60.0, real(0, DAY), "seconds between polls; 0: no poll"
    )
    poll_batch_size: int = setting(
        "JIRA_POLL_BATCH_SIZE", 1000, whole(1, 10000), "keys claimed per lease"
    )
    poll_budget: float = setting(
        "JIRA_POLL_BUDGET", 50.0, real(1, DAY), "seconds one poll run may spend"
    )
    lease_seconds: float = setting(
        "JIRA_LEASE_SECONDS",
        120.0,
        real(1, DAY),
        "longest lease on poll keys or sync projects; each is one interval, renewed",
    )
    not_found_recheck: float = setting(
        "JIRA_NOT_FOUND_RECHECK", 86400.0, real(1, YEAR), "seconds before an unknown key is asked"
    )
    cron_secret: str | None = setting(
        "CRON_SECRET", None, text, "bearer token for the cron route", secret=True
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "log level"
    )
    log_format: Literal["json", "text"] = setting(
        "LOG_FORMAT", "json", choice("json", "text"), "json (one object per line) or text"
    )
    admin_tokens: frozenset[str] = setting(
        "ADMIN_TOKENS",
        frozenset(),
        tokens,
        "bearer tokens that also open dead letters",
        secret=True,
    )
    metrics_token: str | None = setting(
        "METRICS_TOKEN", None, text, "bearer token /metrics needs; unset: open", secret=True
    )
    dead_letter_retention_days: float = setting(
        "DEAD_LETTER_RETENTION_DAYS", 14.0, real(0.01, 36500), "days dead letters are kept"
    )
    web_concurrency: int = setting(
        "WEB_CONCURRENCY", 1, whole(1, 64), "serve's worker processes on the one port"
    )
    refresh_timeout: float = setting(
        "REFRESH_TIMEOUT", 25.0, real(0.1, 600), "longest a refresh route waits before answering"
    )
    webhook_manage: bool = setting(
        "JIRA_WEBHOOK_MANAGE",
        True,
        flag,
        "keep the filter of the webhook `webhook install` registered on the tracked projects",
    )
    track_reads_for: float = setting(
        "TRACK_READS_FOR", 604800.0, real(3600, 10 * YEAR), "seconds a key only read stays tracked"
    )
    db_acquire_timeout: float = setting(
        "DB_ACQUIRE_TIMEOUT", 5.0, real(0.1, 600), "longest wait for a database connection"
    )
    changes_retention_days: float = setting(
        "CHANGES_RETENTION", 7.0, real(0.001, 3650), "days the change log is kept"
    )
    sync_interval: float = setting(
        "JIRA_SYNC_INTERVAL", 60.0, real(0, DAY), "seconds between changed-since syncs; 0: off"
    )
    sync_overlap: float = setting(
        "JIRA_SYNC_OVERLAP", 60.0, real(0, DAY), "seconds each sync round reaches back further"
    )
    sync_recheck: float = setting(
        "JIRA_SYNC_RECHECK", 86400.0, real(1, YEAR), "seconds before a synced issue is read by key"
    )
    webhook_grace: float = setting(
        "WEBHOOK_GRACE", 120.0, real(0, DAY), "seconds after which a change sync found is missed"
    )
    subscription_allowed_hosts: frozenset[str] = setting(
        "SUBSCRIPTION_ALLOWED_HOSTS",
        frozenset(),
        host_entries,
        "host[:port] entries (names, * patterns, IPs) subscriptions may POST to; unset: none",
    )
    subscriptions_deliver: bool = setting(
        "SUBSCRIPTIONS_DELIVER", True, flag, "serve delivers to subscribers (false: another does)"
    )
    subscription_pause_after: float = setting(
        "SUBSCRIPTION_PAUSE_AFTER", 3600.0, real(0.01, YEAR), "seconds of failure that pause one"
    )
    subscription_timeout: float = setting(
        "SUBSCRIPTION_TIMEOUT", 10.0, real(0.1, 600), "seconds a subscriber has to answer"
    )
    subscription_backoff: float = setting(
        "SUBSCRIPTION_BACKOFF", 1.0, real(0.001, HOUR), "first retry delay, doubling, in seconds"
    )
    subscription_lease: float = setting(
        "SUBSCRIPTION_LEASE", 10.0, real(0.1, HOUR), "seconds a replica holds a subscription"
    )
    client_max_subscriptions: int = setting(
        "CLIENT_MAX_SUBSCRIPTIONS", 20, whole(0, 100_000), "subscriptions one client may hold"
    )
    client_max_streams: int = setting(
        "CLIENT_MAX_STREAMS", 50, whole(0, 100_000), "change streams one client may hold open"
    )
    client_rate: float = setting(
        "CLIENT_RATE", 1000.0, real(0.01, 1_000_000), "API requests per second per client"
    )
    client_subscribe_rate: float = setting(
        "CLIENT_SUBSCRIBE_RATE", 10.0, real(0.01, 1_000_000), "subscriptions made per minute"
    )
    subscription_connections: int = setting(
        "SUBSCRIPTION_CONNECTIONS", 3, whole(1, 64), "database connections delivery may hold"
    )
    clients_reload: float = setting(
        "CLIENTS_RELOAD", 5.0, real(0.05, HOUR), "seconds between reloads of the clients"
    )
    subscription_secret_overlap: float = setting(
        "SUBSCRIPTION_SECRET_OVERLAP", 86400.0, real(0, YEAR), "seconds an old secret still signs"
    )
    database_listen_url: str | None = setting(
        "DATABASE_LISTEN_URL",
        None,
        text,
        "direct DSN for LISTEN and the migrations' lock; unset: DATABASE_URL",
        secret=True,
    )
    database_pooler: Literal["none", "transaction"] = setting(
        "DATABASE_POOLER",
        "none",
        choice("none", "transaction"),
        "transaction: DATABASE_URL goes through a transaction pooler (PgBouncer)",
    )
    database_pool_size: int = setting(
        "DATABASE_POOL_SIZE", 10, whole(1, 1000), "connections each process may open"
    )

    def __post_init__(self) -> None:
        if self.database_pooler == "transaction" and not self.database_listen_url:
            # LISTEN through a transaction pooler lands on a server connection other clients
            # then use: the memo would never hear a change, and serve stale reads.
            raise ConfigError(
                "DATABASE_LISTEN_URL",
                "required when DATABASE_POOLER=transaction: LISTEN and the migrations' lock "
                "need PostgreSQL itself, not the pooler",
            )

    stream_limit: int = setting(
        "STREAM_LIMIT", 500, whole(1, 100_000), "change streams one process serves at once"
    )
    stream_buffer: int = setting(
        "STREAM_BUFFER", 1000, whole(1, 1_000_000), "entries queued for a slow stream; then dropped"
    )
    header_timeout: float = setting(
        "HEADER_TIMEOUT", 10.0, real(0.1, 600), "seconds a client has to send a request's headers"
    )
    body_timeout: float = setting(
        "BODY_TIMEOUT", 30.0, real(0.1, 3600), "seconds a client has to send a request's body"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        own = _read(cls, env)  # first: a malformed value is reported before missing credentials
        return cls(jira=JiraSettings.from_env(env), **own)

    @property
    def host_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def require_jira(self, command: str) -> JiraSettings:
        """The Jira settings, or a ConfigError saying `command` needs them."""
        if self.jira is None:
            raise ConfigError(
                "JIRA_BASE_URL", f"required by {command} (e.g. https://acme.atlassian.net)"
            )
        return self.jira

    def check_serving(self) -> None:
        """Refuse settings under which `serve` would be unsafe or useless."""
        tokens = self.api_tokens or self.admin_tokens
        if not self.host_is_loopback and not tokens and not self.allow_anonymous:
            raise ConfigError(
                "API_TOKENS",
                f"required when HOST={self.host} is not loopback "
                "(or set ALLOW_ANONYMOUS=true to serve without tokens)",
            )
        self.require_jira("serve")

    def secrets(self) -> list[str]:
        """Every configured secret, so that no log line can carry one."""
        found: list[str] = []
        for owner in (self, self.jira):
            for spec in _fields(type(owner)) if owner is not None else ():
                value = getattr(owner, spec.name)
                if not spec.repr and value:
                    found += sorted(value) if isinstance(value, frozenset) else [value]
        return found


def variables(of: type = Settings) -> list[Variable]:
    """Every variable the service (or a part of its settings) reads, in the README's order."""
    return [
        Variable(spec.metadata["env"], spec.metadata["help"], _shown(spec.default))
        for spec in _specs(of)
    ]


def _shown(default: object) -> str:
    if default in (None, dataclasses.MISSING) or default == frozenset():
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    return f"{default:g}" if isinstance(default, float) else str(default)


def _specs(cls: type) -> Iterator[dataclasses.Field[Any]]:
    for spec in _fields(cls):
        if "nested" in spec.metadata:
            yield from _specs(spec.metadata["nested"])
        elif "env" in spec.metadata:
            yield spec


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cast(Any, cls))


def _read(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """The values of `cls`'s own variables that are set, parsed (blank counts as unset)."""
    values: dict[str, Any] = {}
    for spec in _fields(cls):
        name = spec.metadata.get("env")
        raw = env.get(name, "").strip() if name else ""
        if raw:
            values[spec.name] = spec.metadata["parse"](name, raw)
    return values
