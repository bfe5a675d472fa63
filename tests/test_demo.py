"""`jira-status-cache demo` as a person runs it: it starts, shows changes, and stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path

from tests.live import free_port

# A table row: key, status, assignee, then the source of the value and its age.
ROW = re.compile(r"^[A-Z]+-\d+ .* (webhook|poll|refresh) +[\d.]+s\b")


async def test_demo_shows_webhooks_and_polls_then_stops_on_sigint(tmp_path: Path) -> None:
    """The table shows values written by webhook and by poll; SIGINT stops it all with exit 0."""
    port = free_port()
    fast = ["--issues", "30", "--every", "0.1", "--poll-interval", "1", "--ttl", "1"]
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service", "demo", "--port", str(port), *fast],
        *["--data-dir", str(tmp_path), "--redraw", "0.3", "--rows", "40", "--drop", "0.3"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    seen: set[str] = set()
    text: list[str] = []
    deadline = time.monotonic() + 20
    try:
        while not seen >= {"webhook", "poll"} and time.monotonic() < deadline:
            line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
            if not line:
                break
            text.append(line)
            if match := ROW.match(line):
                seen.add(match[1])
    finally:
        process.send_signal(signal.SIGINT)
        rest, errors = await asyncio.wait_for(process.communicate(), 10)
    assert seen >= {"webhook", "poll"}, "".join(text) + errors.decode()
    assert f"curl -s localhost:{port}/api/v1/projects/checkout/jira" in "".join(text)
    assert process.returncode == 0, errors.decode()
    assert rest.decode().rstrip().endswith("Stopped.")
    assert "Traceback" not in errors.decode()
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()
