"""Settings, read once from the environment at start-up into one frozen dataclass."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

Flavor = Literal["cloud", "dc"]


class ConfigError(ValueError):
    """A missing or malformed environment variable, named in the message."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: int = 8000
    api_tokens: frozenset[str] = field(default=frozenset(), repr=False)
    allow_anonymous: bool = False
    cache_ttl: float = 3600.0
    max_body_bytes: int = 1024 * 1024
    max_batch_keys: int = 500
    jira_base_url: str | None = None
    jira_flavor: Flavor = "cloud"
    jira_email: str | None = None
    jira_api_token: str | None = field(default=None, repr=False)
    jira_pat: str | None = field(default=None, repr=False)
    jira_max_concurrency: int = 4
    jira_batch_size: int = 100
    jira_timeout: float = 30.0
    jira_connect_timeout: float = 5.0
    jira_max_rps: float | None = None
    jira_max_retries: int = 4
    jira_backoff_base: float = 2.0
    jira_backoff_cap: float = 30.0
    jira_max_wait: float = 60.0
    jira_breaker_threshold: int = 5
    jira_breaker_cool_off: float = 30.0
    negative_ttl: float = 300.0
    read_timeout: float = 10.0
    memo_size: int = 20000
    memo_ttl: float = 30.0
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_max_body_bytes: int = 1024 * 1024
    webhook_dedupe_days: float = 7.0
    poll_interval: float = 60.0
    poll_batch_size: int = 1000
    poll_budget: float = 50.0
    lease_seconds: float = 120.0
    not_found_recheck: float = 86400.0
    cron_secret: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    sync_interval: float = 60.0
    sync_overlap: float = 60.0
    sync_recheck: float = 86400.0
    webhook_grace: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Reader(env)
        return cls(
            database_url=read.text("DATABASE_URL"),
            data_dir=Path(read.text("DATA_DIR") or ".data"),
            host=read.text("HOST") or "127.0.0.1",
            port=read.number("PORT", int, 8000, low=0, high=65535),
            api_tokens=read.tokens("API_TOKENS"),
            allow_anonymous=read.flag("ALLOW_ANONYMOUS"),
            cache_ttl=read.number("JIRA_CACHE_TTL", float, 3600.0, low=1),
            max_body_bytes=read.number("MAX_BODY_BYTES", int, 1024 * 1024, low=1024),
            jira_base_url=read.url("JIRA_BASE_URL"),
            jira_flavor=read.choice("JIRA_FLAVOR", ("cloud", "dc"), "cloud"),  # type: ignore[arg-type]
            jira_email=read.text("JIRA_EMAIL"),
            jira_api_token=read.text("JIRA_API_TOKEN"),
            jira_pat=read.text("JIRA_PAT"),
            jira_max_concurrency=read.number("JIRA_MAX_CONCURRENCY", int, 4, low=1, high=64),
            jira_batch_size=read.number("JIRA_BATCH_SIZE", int, 100, low=1, high=100),
            jira_timeout=read.number("JIRA_TIMEOUT", float, 30.0, low=0.1),
            jira_connect_timeout=read.number("JIRA_CONNECT_TIMEOUT", float, 5.0, low=0.1),
            jira_max_rps=read.optional_number("JIRA_MAX_RPS", low=0.01),
            jira_max_retries=read.number("JIRA_MAX_RETRIES", int, 4, low=0, high=20),
            jira_backoff_base=read.number("JIRA_BACKOFF_BASE", float, 2.0, low=0.001),
            jira_backoff_cap=read.number("JIRA_BACKOFF_CAP", float, 30.0, low=0.001),
            jira_max_wait=read.number("JIRA_MAX_WAIT", float, 60.0, low=0),
            jira_breaker_threshold=read.number("JIRA_BREAKER_THRESHOLD", int, 5, low=1),
            jira_breaker_cool_off=read.number("JIRA_BREAKER_COOL_OFF", float, 30.0, low=0.01),
            negative_ttl=read.number("JIRA_NEGATIVE_TTL", float, 300.0, low=0),
            read_timeout=read.number("READ_THROUGH_TIMEOUT", float, 10.0, low=0.1),
            memo_size=read.number("MEMO_SIZE", int, 20000, low=0),
            memo_ttl=read.number("MEMO_TTL", float, 30.0, low=0.1),
            webhook_secret=read.text("JIRA_WEBHOOK_SECRET"),
            webhook_max_body_bytes=read.number(
                "WEBHOOK_MAX_BODY_BYTES", int, 1024 * 1024, low=1024
            ),
            webhook_dedupe_days=read.number("WEBHOOK_DEDUPE_DAYS", float, 7.0, low=0.01),
            poll_interval=read.number("JIRA_POLL_INTERVAL", float, 60.0, low=0),
            poll_batch_size=read.number("JIRA_POLL_BATCH_SIZE", int, 1000, low=1, high=10000),
            poll_budget=read.number("JIRA_POLL_BUDGET", float, 50.0, low=1),
            lease_seconds=read.number("JIRA_LEASE_SECONDS", float, 120.0, low=1),
            not_found_recheck=read.number("JIRA_NOT_FOUND_RECHECK", float, 86400.0, low=1),
            cron_secret=read.text("CRON_SECRET"),
            log_level=read.choice(
                "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
            ),
            log_format=read.choice("LOG_FORMAT", ("json", "text"), "json"),  # type: ignore[arg-type]
            sync_interval=read.number("JIRA_SYNC_INTERVAL", float, 60.0, low=0),
            sync_overlap=read.number("JIRA_SYNC_OVERLAP", float, 60.0, low=0),
            sync_recheck=read.number("JIRA_SYNC_RECHECK", float, 86400.0, low=1),
            webhook_grace=read.number("WEBHOOK_GRACE", float, 120.0, low=0),
        )

    @property
    def host_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_serving(self) -> None:
        """Refuse settings under which `serve` would be unsafe or useless."""
        if not self.host_is_loopback and not self.api_tokens and not self.allow_anonymous:
            raise ConfigError(
                "API_TOKENS",
                f"required when HOST={self.host} is not loopback "
                "(or set ALLOW_ANONYMOUS=true to serve without tokens)",
            )
        if self.jira_base_url is None:
            raise ConfigError(
                "JIRA_BASE_URL", "required by serve (e.g. https://acme.atlassian.net)"
            )
        if self.jira_flavor == "dc" and not self.jira_pat:
            raise ConfigError("JIRA_PAT", "required when JIRA_FLAVOR=dc")
        if self.jira_flavor == "cloud" and not (self.jira_email and self.jira_api_token):
            missing = "JIRA_EMAIL" if not self.jira_email else "JIRA_API_TOKEN"
            raise ConfigError(missing, "required when JIRA_FLAVOR=cloud (Basic auth)")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def flag(self, name: str) -> bool:
        value = (self.text(name) or "false").lower()
        if value not in {"1", "0", "true", "false", "yes", "no"}:
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value in {"1", "true", "yes"}

    def tokens(self, name: str) -> frozenset[str]:
        return frozenset(t.strip() for t in (self.text(name) or "").split(",") if t.strip())

    def url(self, name: str) -> str | None:
        value = self.text(name)
        if value is not None and not value.startswith(("http://", "https://")):
            raise ConfigError(name, "expected an http:// or https:// URL")
        return value.rstrip("/") if value else None

    def choice(self, name: str, options: tuple[str, ...], default: str, upper: bool = False) -> str:
        value = self.text(name) or default
        value = value.upper() if upper else value.lower()
        if value not in options:
            raise ConfigError(name, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def number(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        low: float | None = None,
        high: float | None = None,
    ) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {raw!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
            raise ConfigError(name, f"{raw} is outside {low} to {high}")
        return value

    def optional_number(self, name: str, low: float) -> float | None:
        if self.text(name) is None:
            return None
        return self.number(name, float, 0.0, low=low)
