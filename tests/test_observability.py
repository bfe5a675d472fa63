"""Metrics, request ids and JSON logs that never carry a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from service import logs
from service.logs import JsonFormatter, Redactor, TextFormatter, request_id, setup_logging
from tests.live import AGE_BY_A_TTL, jira_settings, serve
from tests.payloads import SECRET, encode, event, headers
from tests.pgproxy import PgProxy
from tests.test_cli import COMMAND, JIRA, free_port, wait_healthy

METRIC_NAMES = [
    "jsc_webhooks_total",
    "jsc_webhook_signature_failures_total",
    "jsc_poll_runs_total",
    "jsc_poll_run_seconds_bucket",
    "jsc_issues_refreshed_total",
    "jsc_jira_requests_total",
    "jsc_jira_rate_limited_total",
    "jsc_jira_rate_limit_wait_seconds_total",
    "jsc_jira_circuit_state",
    "jsc_tracked_issues",
    "jsc_due_issues",
    "jsc_stale_issues",
    "jsc_cache_oldest_age_seconds",
    "jsc_http_request_seconds_bucket",
    "jsc_db_pool_in_use",
]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, or 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_what_happened(sim, settings, db) -> None:
    """After webhooks, a bad signature, a poll and reads, /metrics shows each of them."""
    keys = sim.seed(3, ["ALPHA"])
    async with serve(jira_settings(settings, sim)) as url, httpx.AsyncClient(base_url=url) as http:
        for key in keys:
            await http.put(f"/api/v1/projects/p/jira/{key}")  # reads it at once
            sim.edit_summary(key, "changed since")  # no webhook is wired: the poll sees it
        await db.execute(AGE_BY_A_TTL)
        await http.get("/api/v1/cron/jira-refresh")
        body = encode(event())
        await http.post("/api/v1/webhooks/jira", content=body, headers=headers(body))
        await http.post("/api/v1/webhooks/jira", content=body, headers={"X-Hub-Signature": "x"})
        await http.get(f"/api/v1/issues/{keys[0]}")
        text = (await http.get("/metrics")).text
    assert [name for name in METRIC_NAMES if name not in text] == []
    assert sample(text, "jsc_webhooks_total", event="jira:issue_updated", outcome="applied") == 1
    assert sample(text, "jsc_webhook_signature_failures_total", reason="invalid_signature") == 1
    assert sample(text, "jsc_issues_refreshed_total", source="poll", outcome="refreshed") == 3
    assert sample(text, "jsc_issues_refreshed_total", source="refresh", outcome="refreshed") == 3
    assert sample(text, "jsc_tracked_issues") == 3
    assert sample(text, "jsc_jira_circuit_state", state="closed") == 1
    route = 'route="/api/v1/issues/{key}"'
    assert route in text and 'route="/api/v1/projects/{project_id}/jira/{key}"' in text


async def test_request_id_is_returned_and_kept(client) -> None:
    """Each answer carries X-Request-ID: the caller's when it is plain, a new one otherwise."""
    mine = await client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    bad = await client.get("/healthz", headers={"X-Request-ID": "x" * 100})
    none = await client.get("/healthz")
    assert mine.headers["X-Request-ID"] == "trace-42"
    assert len(bad.headers["X-Request-ID"]) == 16 and len(none.headers["X-Request-ID"]) == 16


def test_json_line_has_the_event_its_context_and_request_id() -> None:
    """A record becomes one JSON object with time, level, logger, event, extras, request id."""
    record = logging.makeLogRecord(
        {"name": "service.poller", "levelname": "INFO", "msg": "poll run", "count": 3}
    )
    token = request_id.set("abc")
    Redactor([]).filter(record)
    request_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "poll run" and line["count"] == 3 and line["request_id"] == "abc"
    assert line["level"] == "info" and line["logger"] == "service.poller" and "time" in line


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
async def test_a_request_path_cannot_forge_a_log_line(client, formatter) -> None:
    """A path with %0A and a terminal escape is logged on one line, in either LOG_FORMAT."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        await client.get("/api/v1/issues/PRJ-1%0AINFO    service.access: forged%1B[2J")
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "\x1b" not in lines[0]
    assert not any(line.startswith("INFO    service.access: forged") for line in lines)


async def test_access_lines_written_the_short_way_are_whole_and_redacted(
    client, monkeypatch
) -> None:
    """Under serve's JSON logging, each request's line is one object with its id, redacted."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging._srcfile
    setup_logging("INFO", "json", ["path-secret-123"])
    try:
        await client.get("/api/v1/issues/PRJ-1%0Aforged%1B[2J%C2%85")
        await client.get("/api/v1/issues/path-secret-123", headers={"X-Request-ID": "trace-7"})
        await client.get("/api/v1/issues/token=abc%C3%A9")
    finally:
        root.handlers[:], level, logging._srcfile = saved
        root.setLevel(level)
        logs._installed.clear()
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == 3
    assert set(requests[1]) == {
        *("time", "level", "logger", "event", "method", "path", "route", "status"),
        *("duration_ms", "request_id"),
    }
    assert requests[0]["path"] == "/api/v1/issues/PRJ-1\nforged\x1b[2J\x85"
    assert requests[1]["request_id"] == "trace-7"
    assert requests[1]["path"] == "/api/v1/issues/[redacted]"
    assert requests[2]["path"] == "/api/v1/issues/token=[redacted]"
    for leaked in ("\x1b", "\x85", "path-secret-123", "abc"):
        assert leaked not in text


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer tok-12345 sent",
        "X-Hub-Signature sha256=0123456789abcdef0123456789abcdef",
        "GET /api/v1/webhooks/jira?secret=abc123xyz",
        "postgresql://cache:pw-hunter2@db:5432/cache",
        "the configured secret verysecretvalue leaked",
    ],
)
def test_redactor_removes_credentials(text: str) -> None:
    """Configured secrets and credential-looking text are replaced in messages and extras."""
    redactor = Redactor(["verysecretvalue"])
    record = logging.makeLogRecord({"msg": text, "detail": {"nested": text}})
    redactor.filter(record)
    for leaked in ("tok-12345", "0123456789abcdef", "abc123xyz", "hunter2", "verysecretvalue"):
        assert leaked not in record.getMessage() and leaked not in json.dumps(record.detail)


def test_serve_logs_json_lines_without_secrets(database_url: str) -> None:
    """A real serve process logs one JSON object per line, and no secret, token or signature."""
    port = free_port()
    token, cron = "api-token-abcdef", "cron-secret-abcdef"
    env = {
        **os.environ,
        **JIRA,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "API_TOKENS": token,
        "CRON_SECRET": cron,
        "JIRA_WEBHOOK_SECRET": SECRET,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    process = subprocess.Popen(
        [*COMMAND, "serve"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/healthz", process)
        body = encode(event())
        httpx.post(f"{base}/api/v1/webhooks/jira", content=body, headers=headers(body))
        httpx.post(f"{base}/api/v1/webhooks/jira?secret={SECRET}", content=body)
        httpx.get(f"{base}/api/v1/issues/PRJ-7", headers={"Authorization": f"Bearer {token}"})
        httpx.get(f"{base}/api/v1/cron/jira-refresh", headers={"Authorization": f"Bearer {cron}"})
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert any(line.get("event") == "request" and line.get("request_id") for line in parsed)
    assert "jira-token-for-tests" not in stderr and "token-for-tests" not in stderr
    for secret in (token, cron, SECRET, headers(body)["X-Hub-Signature"].split("=")[1]):
        assert secret not in stderr


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path) -> None:
    """A port already in use stops serve at once: one JSON line naming it, exit 1, and no
    PostgreSQL started first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**JIRA, "DATABASE_URL": "", "DATA_DIR": str(tmp_path), "PORT": str(port)}
        result = subprocess.run(
            [*COMMAND, "serve"],
            env={**os.environ, **env, "LOG_FORMAT": "json"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0]["event"]
    assert "address already in use" in lines[0]["event"].lower()
    assert not (tmp_path / "postgres").exists()


def test_times_are_written_one_way() -> None:
    """Log lines, /healthz's last delivery and `webhook status` write UTC times with `Z`."""
    from datetime import UTC, datetime, timedelta, timezone

    from service.cli.display import since
    from service.sync.health import Verdict

    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    record = logging.makeLogRecord({"msg": "x", "created": moment.timestamp()})
    logged = json.loads(JsonFormatter().format(record))["time"]
    healthz = Verdict("ok", last_delivery=moment).as_json()["last_delivery_at"]
    status = since(moment, now=moment.astimezone(UTC)).split()[0]
    assert logged == healthz == status == "2026-01-02T01:04:05.678Z"


async def test_metrics_answer_with_the_database_down(sim, settings) -> None:
    """With PostgreSQL unreachable, /metrics still answers: jsc_database_up 0, the process."""
    proxy = PgProxy(settings.database_url or "")
    dsn = await proxy.start()
    wired = jira_settings(settings, sim, database_url=dsn)
    async with serve(wired) as url, httpx.AsyncClient(base_url=url) as http:
        await proxy.cut()
        down = await http.get("/metrics")
    assert down.status_code == 200
    assert sample(down.text, "jsc_database_up") == 0.0
    assert sample(down.text, "process_cpu_seconds_total") > 0
