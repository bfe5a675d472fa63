"""Every request to Jira goes through here: auth, the concurrency cap, the rate-limit gate,
retries with backoff, and the circuit breaker. Failures come out as service.jira.errors."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from yarl import URL

from service.config import JiraSettings
from service.jira.errors import (
    CircuitOpenError,
    JiraAuthError,
    JiraError,
    JiraRateLimitedError,
    JiraUnavailableError,
    message,
)
from service.jira.pacing import CircuitBreaker, RateLimiter, ThrottledError, parse_retry_after

USER_AGENT = "jira-status-cache/0.1"
_LOGIN_FAILED = frozenset({"AUTHENTICATED_FAILED", "AUTHENTICATION_DENIED"})
logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Stats:
    """Plain counters for metrics: requests by (route, status), 429s, seconds held at the gate."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    rate_limited: int = 0
    rate_limit_wait: float = 0.0


def open_session(settings: JiraSettings) -> aiohttp.ClientSession:
    """The one session of the process; call inside the running loop (the app's lifespan)."""
    timeout = aiohttp.ClientTimeout(total=settings.timeout, connect=settings.connect_timeout)
    headers = {
        "Accept": "application/json",
        "Authorization": _authorization(settings),
        "User-Agent": USER_AGENT,
    }
    return aiohttp.ClientSession(timeout=timeout, headers=headers)


def _authorization(settings: JiraSettings) -> str:
    # JiraSettings is complete by construction: the flavor's credentials are there.
    if settings.flavor == "dc":
        return f"Bearer {settings.pat}"
    # Encoded by hand: aiohttp 3.14 deprecates BasicAuth, and its replacement is new in 3.14.
    pair = f"{settings.email}:{settings.api_token}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


class Transport:
    """Calls one Jira site, sharing one concurrency cap, gate and breaker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: JiraSettings,
        *,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._session = session
        self._base = settings.base_url.rstrip("/")
        self._flavor = settings.flavor
        self._api = "/rest/api/2" if settings.flavor == "dc" else "/rest/api/3"
        self._batch = settings.batch_size
        self._retries = settings.max_retries
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._limiter = limiter or RateLimiter(
            max_rps=settings.max_rps,
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            max_wait=settings.max_wait,
        )
        self._breaker = breaker or CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cool_off
        )
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={URL(self._base).host!r}, flavor={self._flavor!r})"

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    @property
    def health(self) -> Literal["ok", "degraded"]:
        breaker = self._breaker
        return "ok" if breaker.state == "closed" and breaker.failures == 0 else "degraded"

    async def check_credentials(self) -> dict[str, Any]:
        """Return who Jira thinks we are; raise JiraAuthError when it does not know us."""
        call = Call("GET", f"{self._api}/myself")
        _, body = await self._send(call)
        if not isinstance(body, dict):
            raise JiraError(call.endpoint, 200, "the user is not a JSON object")
        return body

    async def request(
        self, method: str, path: str, accept: tuple[int, ...] = (200,), body: Any = None
    ) -> tuple[int, Any]:
        """One call to any endpoint through the gate, retries and breaker; for other modules."""
        return await self._send(Call(method, path, accept=accept, body=body))

    @property
    def flavor(self) -> str:
        return self._flavor

    @property
    def api(self) -> str:
        """The REST API root: `/rest/api/3` on Cloud, `/rest/api/2` on Data Center."""
        return self._api

    async def call(
        self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = (200,)
    ) -> tuple[int, Any]:
        """One request under the REST API root (e.g. "/search/jql"), with every safeguard."""
        return await self.request(method, f"{self._api}{path}", accept, body)

    async def _send(self, call: Call) -> tuple[int, Any]:
        """One logical request: the breaker, then attempts with retries; never raises _Retry."""
        if (wait := self._breaker.admit()) is not None:
            raise CircuitOpenError(call.endpoint, wait)
        try:
            answer = await self._retry(call)
        except ThrottledError as exc:
            # Nothing was sent, so this says nothing about Jira's health.
            raise JiraRateLimitedError(call.endpoint, exc.retry_after, None) from None
        except (JiraUnavailableError, JiraRateLimitedError):
            self._fail()
            raise
        except JiraError:
            self._breaker.record_success()  # Jira answered, if not as we wished: it is up
            raise
        self._breaker.record_success()
        return answer

    async def _retry(self, call: Call) -> tuple[int, Any]:
        attempt = 0
        while True:
            try:
                return await self._attempt(call)
            except _Retry as failure:
                delay = self._delay(failure, attempt)
                if attempt >= self._retries:
                    raise failure.error(call.endpoint, delay) from failure.__cause__
                logger.warning("Jira %s %s; retry in %.1fs", call.endpoint, failure.problem, delay)
                if not failure.shared:
                    await self._limiter.wait(delay)
                attempt += 1

    def _delay(self, failure: _Retry, attempt: int) -> float:
        delay = failure.retry_after
        delay = self._limiter.backoff(attempt) if delay is None else delay
        if failure.shared:
            # Jira limits the whole site, not one request: hold every request of the process,
            # the next attempt of this one included, even when this one gives up.
            self._limiter.pause(delay)
        return delay

    async def _attempt(self, call: Call) -> tuple[int, Any]:
        async with self._slots:
            self.stats.rate_limit_wait += await self._limiter.acquire()
            try:
                async with self._session.request(
                    call.method, self._base + call.path, json=call.body, params=call.params
                ) as response:
                    self.stats.requests[call.route, str(response.status)] += 1
                    return await self._answer(call, response)
            except TimeoutError as exc:
                self.stats.requests[call.route, "timeout"] += 1
                raise _Retry(None, None, "timed out") from exc
            except aiohttp.ClientError as exc:
                self.stats.requests[call.route, "connection_error"] += 1
                problem = f"could not be reached: {_reason(exc)}"
                if _refused(exc):
                    # Nothing listens there: retries would only hold a reader for nothing.
                    raise JiraUnavailableError(call.endpoint, None, problem) from exc
                raise _Retry(None, None, problem) from exc

    async def _answer(self, call: Call, response: aiohttp.ClientResponse) -> tuple[int, Any]:
        status = response.status
        _check_auth(call.endpoint, response)
        if status == 429 or status >= 500:
            if status == 429:
                self.stats.rate_limited += 1
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retry(status, retry_after, f"answered {status}")
        body = await _read_json(response)
        if status not in call.accept:
            raise JiraError(call.endpoint, status, message(body))
        if body is None and status != 204:  # 204: a DELETE's empty answer
            # Jira always answers JSON, even for 404; HTML means a proxy or a wrong base URL,
            # and must not be read as "no such issue".
            raise JiraUnavailableError(
                call.endpoint, status, "answered with a body that is not JSON"
            )
        return status, body

    def _fail(self) -> None:
        was = self._breaker.state
        self._breaker.record_failure()
        if self._breaker.state == "open" and was != "open":
            logger.error("Jira circuit opened after %d failures", self._breaker.failures)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    template: str | None = None  # the endpoint with any issue key templated out
    accept: tuple[int, ...] = (200,)
    body: Any = None
    params: dict[str, str] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def route(self) -> str:
        """What the counters count by, so that they stay few."""
        return self.template or self.endpoint


class _Retry(Exception):
    """A transient failure the retry loop handles; callers see a public error instead."""

    def __init__(self, status: int | None, retry_after: float | None, problem: str) -> None:
        super().__init__(problem)
        self.status, self.retry_after, self.problem = status, retry_after, problem

    @property
    def shared(self) -> bool:
        """Whether the pause it asks for holds every request, not just this one."""
        return self.status in (429, 503)

    def error(self, endpoint: str, delay: float) -> JiraError:
        if self.status == 429:
            return JiraRateLimitedError(endpoint, delay)
        return JiraUnavailableError(endpoint, self.status, self.problem, self.retry_after)


def _check_auth(endpoint: str, response: aiohttp.ClientResponse) -> None:
    # Jira may answer bad credentials with a 200 as an anonymous user; only this header tells.
    seraph = response.headers.get("X-Seraph-LoginReason", "")
    failed = [word.strip() for word in seraph.split(",") if word.strip() in _LOGIN_FAILED]
    # e.g. "CAPTCHA_CHALLENGE; login-url=...": after too many failed logins on Data Center.
    denied = response.headers.get("X-Authentication-Denied-Reason", "").split(";")[0].strip()
    if failed or response.status in (401, 403):
        raise JiraAuthError(endpoint, response.status, failed[0] if failed else denied or None)


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    try:
        return json.loads(await response.read())
    except ValueError:  # also UnicodeDecodeError
        return None


def _refused(exc: aiohttp.ClientError) -> bool:
    cause = getattr(exc, "os_error", None)
    return isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
    )


def _reason(exc: aiohttp.ClientError) -> str:
    """What went wrong, for an operator: e.g. "Connect call failed ('10.0.0.5', 443)"."""
    # aiohttp's own text names host and port, never the URL's path, query or credentials.
    cause = getattr(exc, "os_error", None) or exc
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # The resolver's own text ("Name or service not known") does not say which name.
        return f"{type(exc).__name__}: cannot resolve {exc.host}:{exc.port} ({str(cause)[:200]})"
    return f"{type(exc).__name__}: {str(cause)[:200]}"
