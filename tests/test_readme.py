"""The README's quick start works as written, against what `make run` starts."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service import config
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
QUICK_START = (ROOT / "README.md").read_text().split("## Quick start")[1].split("\n## ")[0]
# The ports the README's commands name, and the settings `make run` takes them from.
PORTS = {"8000": "PORT", "8900": "SIM_PORT"}


@dataclass(frozen=True)
class Run:
    ports: dict[str, str]  # README's port -> the port this run uses
    output: Path


def quick_start_commands() -> list[list[str]]:
    """Every `curl` line of the quick start's shell blocks, split as a shell would."""
    blocks = re.findall(r"```sh\n(.*?)```", QUICK_START, re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("curl ")]


@pytest.fixture
async def make_run(db: object, database_url: str, tmp_path: Path) -> AsyncIterator[Run]:
    """`make run` on free ports over empty tables, its output in a file; stopped as Ctrl-C would."""
    ports = {readme: str(free_port()) for readme in PORTS}
    names = {variable.name for variable in config.variables()}
    env = {k: v for k, v in os.environ.items() if k not in names and k != "SIM_PORT"}
    env |= {PORTS[p]: port for p, port in ports.items()}
    env |= {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    output = tmp_path / "make-run.log"
    # -o: the test's interpreter is installed already; BIN: run its commands, not .venv's.
    command = ["make", "-s", "-o", ".venv/.installed", "run", f"BIN={Path(sys.executable).parent}"]
    with output.open("w") as sink:
        process = subprocess.Popen(  # noqa: ASYNC220 -- a long-lived server, not awaited
            command,
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await wait_until_serving(process, ports, output)
        yield Run(ports, output)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # the group make runs in: make, sim, serve
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def wait_until_serving(
    process: subprocess.Popen[bytes], ports: dict[str, str], log: Path
) -> None:
    urls = [
        f"http://127.0.0.1:{ports['8000']}/healthz",
        f"http://127.0.0.1:{ports['8900']}/_sim/stats",
    ]
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"make run exited early:\n{text_of(log)}"
            try:
                answers = [await http.get(url) for url in urls]
                if all(answer.status_code == 200 for answer in answers):
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"make run did not start serving:\n{text_of(log)}")


def text_of(log: Path) -> str:
    return log.read_text()


async def curl(args: list[str], ports: dict[str, str]) -> tuple[int, str]:
    """Run one README command on this run's ports; its HTTP status and body."""
    for readme, port in ports.items():
        args = [arg.replace(f"localhost:{readme}", f"localhost:{port}") for arg in args]
    process = await asyncio.create_subprocess_exec(
        *args, "-w", "\n%{http_code}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


def test_quick_start_names_seeded_keys_and_ports() -> None:
    """The quick start documents PORT and SIM_PORT and asks only for keys the simulator seeds."""
    assert "`PORT`" in QUICK_START and "`SIM_PORT`" in QUICK_START
    keys = {
        key
        for command in quick_start_commands()
        for key in re.findall(r"[A-Z]+-\d+", " ".join(command))
    }
    assert keys and {key.split("-")[0] for key in keys} <= {"ALPHA", "BETA", "GAMMA"}


async def test_quick_start_commands_work_against_make_run(make_run: Run) -> None:
    """Each curl of the quick start answers 2xx, and the simulator's change reaches the cache."""
    commands = quick_start_commands()
    assert len(commands) >= 5
    answers = [await curl(command, make_run.ports) for command in commands]
    assert [status for status, _ in answers if not 200 <= status < 300] == [], answers
    last = commands[-1]
    deadline = time.monotonic() + 10
    while '"name":"Done"' not in (body := (await curl(last, make_run.ports))[1]).replace(" ", ""):
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    assert '"source":"webhook"' in body.replace(" ", "")
    printed = text_of(make_run.output)
    sim = f"http://127.0.0.1:{make_run.ports['8900']}"
    assert f"at {sim}" in printed and "ALPHA-1 to ALPHA-67" in printed
    assert f"{sim}/_sim/issues/ALPHA-1/transition" in printed
