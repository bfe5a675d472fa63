"""`jira-status-cache demo` as a person runs it: it starts, shows changes, and stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

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
    # Generous bounds: on a loaded machine the embedded PostgreSQL alone may take seconds.
    deadline = time.monotonic() + 120
    try:
        while not seen >= {"webhook", "poll"} and time.monotonic() < deadline:
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            if not line:
                break
            text.append(line)
            if match := ROW.match(line):
                seen.add(match[1])
    finally:
        process.send_signal(signal.SIGINT)
        rest, errors = await asyncio.wait_for(process.communicate(), 60)
    assert seen >= {"webhook", "poll"}, "".join(text) + errors.decode()
    assert f"curl -s localhost:{port}/api/v1/projects/checkout/jira" in "".join(text)
    assert process.returncode == 0, errors.decode()
    assert rest.decode().rstrip().endswith("Stopped.")
    assert "Traceback" not in errors.decode()
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


async def test_demo_heals_a_dropped_webhook_early_in_80_columns(tmp_path: Path) -> None:
    """With its default timings the demo drops a webhook at once and shows it healed soon
    after its first frame (a sync every 3 s: within seconds on a quiet machine; the bound here
    is generous, for a loaded one); every line fits 80 columns, the simulator's address whole."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service", "demo", "--port", str(port)],
        *["--data-dir", str(tmp_path), "--redraw", "0.3", "--rows", "20"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    text: list[str] = []
    first_frame: float | None = None
    try:
        while not any(line.startswith("healed: ") for line in text):
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            if not line:
                break
            text.append(line)
            if first_frame is None and line.startswith("  the Jira simulator: "):
                first_frame = time.monotonic()
            if first_frame is not None and time.monotonic() - first_frame > 90:
                break
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), 60)
    shown = "".join(text)
    # Whether a frame caught it behind Jira ("! Jira: ...") depends on how fast the sync was.
    assert "(webhook dropped)" in shown, shown
    assert any(line.startswith("healed: ") for line in text), shown
    assert [line for line in text if len(line.rstrip("\n")) > 80] == []
    assert re.search(r"the Jira simulator: http://127\.0\.0\.1:\d+ ", shown)


def test_board_lines_fit_80_columns() -> None:
    """The widest row, footer and move still fit 80 columns, with a five-digit port."""
    from cache_demo.board import WIDTH, Healed, Row, View, render

    view = View("http://127.0.0.1:65535", "http://127.0.0.1:65535", ("checkout",), 0.25, 10.5, 5)
    long = "x" * 40
    rows = [Row("ALPHA-9999", long, long, "refresh", 99999.9, long)] * 6
    team = SimpleNamespace(
        moves=[SimpleNamespace(at=datetime.now(), key="GAMMA-9999", what=long, dropped=True)]
    )
    sim = SimpleNamespace(hooks=SimpleNamespace(dropped=[0] * 9999, events=[0] * 99999))
    healed = [Healed("GAMMA-9999", "webhook", 99999.0)]
    lines = render(rows, view, team, sim, 5, healed)  # type: ignore[arg-type]
    assert [line for line in lines if len(line) > WIDTH] == []
    assert "http://127.0.0.1:65535 " in "\n".join(lines)


def test_footer_names_the_sync_once() -> None:
    """With a sync interval, the footer says "a sync every 3s" once, not twice."""
    from cache_demo.board import View, footer

    view = View("http://127.0.0.1:8000", "http://127.0.0.1:8900", ("checkout",), 2, 10, 5, 3)
    sim = SimpleNamespace(hooks=SimpleNamespace(dropped=[], events=[]))
    lines = footer([], view, sim, [])  # type: ignore[arg-type]
    assert [line for line in lines if "a sync every 3s" in line] == [
        "a sync every 3s asks Jira what changed"
    ]


def test_make_demo_serves_on_port() -> None:
    """`make demo PORT=8123` gives the demo that port (DEMO_ARGS may still override it)."""
    root = Path(__file__).resolve().parent.parent
    planned = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "demo", "PORT=8123"],  # noqa: S607 -- as a user runs it
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "demo --port 8123" in planned
