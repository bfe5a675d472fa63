"""The jira-status-cache command as a user runs it: real processes, real PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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


def test_migrate_against_database_url(database_url: str) -> None:
    """`migrate` on an up-to-date database applies nothing and says so."""
    result = run(["migrate"], DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert "none pending" in result.stdout


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


def test_serve_on_embedded_postgres_then_sigterm(tmp_path: Path) -> None:
    """With no DATABASE_URL, serve starts its own PostgreSQL, answers, and exits 0 on SIGTERM."""
    port = free_port()
    env = {**os.environ, **JIRA, "DATA_DIR": str(tmp_path), "PORT": str(port)}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [*COMMAND, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        health = wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert health.status_code == 200 and ready.status_code == 200
    assert process.returncode == 0, stderr
    assert (tmp_path / "postgres" / "PG_VERSION").exists()
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()
