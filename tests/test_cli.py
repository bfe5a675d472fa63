"""The jira-status-cache command as a user runs it: real processes, real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from service.cli.main import setting_names
from tests.payloads import SECRET, encode, event, headers

COMMAND = [sys.executable, "-m", "service"]
# Enough Jira configuration for `serve` to start; with polling off it never calls Jira.
JIRA = {
    "JIRA_BASE_URL": "http://127.0.0.1:9",
    "JIRA_EMAIL": "cache@example.com",
    "JIRA_API_TOKEN": "token-for-tests",
    "JIRA_POLL_INTERVAL": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        COMMAND + args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def wait_healthy(url: str, process: subprocess.Popen[str], seconds: float = 30) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.communicate()}")
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("serve did not answer in time")


def test_help_lists_commands() -> None:
    """--help names serve and migrate, and each has its own --help."""
    top = run(["--help"])
    serve = run(["serve", "--help"])
    assert top.returncode == 0 and "serve" in top.stdout and "migrate" in top.stdout
    assert serve.returncode == 0 and "usage" in serve.stdout


def listed_settings(help_text: str) -> set[str]:
    """The names a --help lists under "settings read from the environment"."""
    block = help_text.split("settings read from the environment")[1].split("\n\n")[0]
    return set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", block.split(":", 1)[1]))


@pytest.mark.parametrize(
    ("command", "reads", "not_read"),
    [
        (["serve"], {"PORT", "API_TOKENS", "JIRA_BASE_URL", "WEB_CONCURRENCY"}, set()),
        (["check"], {"PORT", "JIRA_WEBHOOK_SECRET", "DATABASE_URL"}, set()),
        (["migrate"], {"DATABASE_URL", "DATA_DIR", "LOG_FORMAT"}, {"JIRA_BASE_URL", "PORT"}),
        (["dead-letters"], {"DATABASE_URL", "LOG_LEVEL"}, {"JIRA_BASE_URL", "API_TOKENS"}),
        (["refresh"], {"DATABASE_URL", "JIRA_BASE_URL", "JIRA_PAT"}, {"PORT", "API_TOKENS"}),
        (["sync"], {"JIRA_BASE_URL", "JIRA_SYNC_OVERLAP"}, {"PORT", "JIRA_WEBHOOK_SECRET"}),
        (["webhook", "install"], {"JIRA_WEBHOOK_SECRET", "JIRA_EMAIL"}, {"PORT", "MEMO_SIZE"}),
        (["webhook", "status"], {"JIRA_WEBHOOK_MANAGE", "DATABASE_URL"}, {"API_TOKENS"}),
        (["changes"], {"DATABASE_URL"}, {"JIRA_BASE_URL"}),
    ],
)
def test_help_lists_the_settings_each_command_reads(
    command: list[str], reads: set[str], not_read: set[str]
) -> None:
    """Each command's --help names the environment variables it reads, only those, and shows
    an example of it."""
    shown = run([*command, "--help"]).stdout
    listed = listed_settings(shown)
    assert listed <= set(setting_names())
    assert reads <= listed and not (not_read & listed), listed
    if command[0] in {"serve", "check"}:
        assert listed == set(setting_names())
    example = shown.split("example:\n")[1]
    assert f"jira-status-cache {' '.join(command)}" in example.replace("\\\n   ", "")


def test_simulate_help_describes_every_flag() -> None:
    """`simulate --help` names the command, describes each flag, and shows an example."""
    shown = run(["simulate", "--help"]).stdout
    assert shown.startswith("usage: jira-status-cache simulate")
    options = shown.split("options:\n")[1].split("\n\n")[0]
    entries = re.split(r"\n(?=  -)", options)  # an entry: its flag, then its text, wrapped
    flags = [re.match(r"\s*(-[-\w]+(?:, --[-\w]+)?(?: [A-Z_{},]+)?)(.*)", e, re.S) for e in entries]
    assert len(flags) > 15 and [m[1] for m in flags if m and not m[2].strip()] == []
    assert "example:\n  jira-status-cache simulate --port" in shown


def test_migrate_against_database_url(database_url: str) -> None:
    """`migrate` on an up-to-date database applies nothing and says which version it is at."""
    result = run(["migrate"], DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert "none pending" in result.stdout and "the schema is at 0" in result.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"JIRA_BASE_URL": ""}, "JIRA_BASE_URL"),
        ({"JIRA_API_TOKEN": ""}, "JIRA_API_TOKEN"),
        ({"JIRA_FLAVOR": "dc"}, "JIRA_PAT"),
        ({"JIRA_CACHE_TTL": "-1"}, "JIRA_CACHE_TTL"),
        ({"HOST": "0.0.0.0"}, "API_TOKENS"),
    ],
)
def test_bad_configuration_stops_start_up(env: dict[str, str], named: str) -> None:
    """A malformed or unsafe setting stops `serve` with a message naming the variable."""
    result = run(["serve"], **{**JIRA, **env})
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve"],
        env={**os.environ, **JIRA, "PORT": str(port), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(f"{base}/healthz", process)
    return process, base


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    return stderr


def embedded(data_dir: Path) -> dict[str, str]:
    return {"DATA_DIR": str(data_dir), "DATABASE_URL": "", "LOG_FORMAT": "json"}


def test_serve_on_embedded_postgres_then_sigterm(tmp_path: Path) -> None:
    """With no DATABASE_URL, serve starts its own PostgreSQL, says where it listens once it
    does, answers, and exits 0 on SIGTERM."""
    process, base = start_serve(embedded(tmp_path))
    try:
        ready = httpx.get(f"{base}/readyz", timeout=5)
    finally:
        stderr = stop(process)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert ready.status_code == 200
    assert process.returncode == 0, stderr
    assert [line["url"] for line in lines if line["event"] == "listening"] == [base]
    events = [line["event"] for line in lines]
    # After the migrations and the bind, not before; APScheduler's job runs are debug chatter.
    assert events.index("listening") > max(i for i, e in enumerate(events) if "migration" in e)
    assert [line for line in lines if line["logger"].startswith("apscheduler")] == []
    assert (tmp_path / "postgres" / "PG_VERSION").exists()
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def test_last_serve_stops_postgres_after_an_earlier_one_was_killed(tmp_path: Path) -> None:
    """A serve killed with SIGKILL leaves PostgreSQL running; the next serve to exit stops it."""
    killed, _ = start_serve(embedded(tmp_path))
    killed.kill()
    killed.communicate(timeout=30)
    postmaster = tmp_path / "postgres" / "postmaster.pid"
    assert postmaster.exists()
    process, base = start_serve(embedded(tmp_path))
    try:
        ready = httpx.get(f"{base}/readyz", timeout=5)
    finally:
        stderr = stop(process)
    assert ready.status_code == 200 and process.returncode == 0, stderr
    assert not postmaster.exists()


def test_workers_share_one_port_and_agree_on_changes(database_url: str) -> None:
    """With WEB_CONCURRENCY=2, a change written through one worker is what every read sees."""
    env = {
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": "2",
        "API_TOKENS": "api-token-workers",
        "JIRA_WEBHOOK_SECRET": SECRET,
    }
    auth = {"Authorization": "Bearer api-token-workers"}
    process, base = start_serve(env)
    try:
        before = deliver(base, "To Do", "new", "2026-11-26T05:00:00.000-0600")
        seen = {read_status(base, auth) for _ in range(20)}
        after = deliver(base, "Done", "done", "2026-11-26T06:00:00.000-0600")
        everyone_agrees = poll(lambda: {read_status(base, auth) for _ in range(20)} == {"Done"})
        workers = count_workers(process)
    finally:
        stderr = stop(process)
    assert before == after == 200 and seen == {"To Do"}
    assert everyone_agrees, "a worker kept serving the old status"
    assert workers == 2 and process.returncode == 0, stderr


def deliver(base: str, status: str, category: str, updated: str) -> int:
    payload = event(id=770001, key="WORKERS-1", status=status, category=category, updated=updated)
    body = encode(payload)
    answer = httpx.post(f"{base}/api/v1/webhooks/jira", content=body, headers=headers(body, status))
    return answer.status_code


def read_status(base: str, auth: dict[str, str]) -> str:
    # A new connection each time, so that reads land on either worker.
    answer = httpx.get(f"{base}/api/v1/issues/WORKERS-1", headers=auth, timeout=10)
    name: str = answer.json()["status"]["name"]
    return name


def poll(check: Callable[[], bool], seconds: float = 5) -> bool:
    """Whether check turns true within seconds: well inside MEMO_TTL's 30 s."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
    return True


def count_workers(process: subprocess.Popen[str]) -> int:
    """serve's worker processes: multiprocessing children, not its resource tracker."""
    children = psutil.Process(process.pid).children()
    return sum("spawn_main" in " ".join(child.cmdline()) for child in children)
