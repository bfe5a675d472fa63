"""The README's quick start works as written, against what `make run` starts."""

from __future__ import annotations

import asyncio
import json
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
    """Every command line of the quick start's shell blocks after `make run`, split as a shell
    would (the first block lists the make targets, each with a comment)."""
    return [command for command, _ in quick_start_steps()]


def quick_start_steps() -> list[tuple[list[str], str | None]]:
    """Each command with the output the README shows right after its block, if any."""
    blocks = re.findall(r"```(sh|json|text)\n(.*?)```", QUICK_START, re.DOTALL)
    steps: list[tuple[list[str], str | None]] = []
    for kind, text in blocks:
        if kind == "sh":
            lines = [line for line in text.splitlines() if line and not line.startswith("make ")]
            steps += [(shlex.split(line), None) for line in lines if not line.startswith(" ")]
        elif steps:
            steps[-1] = (steps[-1][0], text.strip())
    return steps


@pytest.fixture
async def make_run(db: object, database_url: str, tmp_path: Path) -> AsyncIterator[Run]:
    """`make run` on free ports over empty tables, another JIRA_BASE_URL exported, its output
    in a file; stopped as Ctrl-C would."""
    ports = {readme: str(free_port()) for readme in PORTS}
    names = {variable.name for variable in config.variables()}
    env = {k: v for k, v in os.environ.items() if k not in names and k != "SIM_PORT"}
    env |= {PORTS[p]: port for p, port in ports.items()}
    env |= {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    # As after `export JIRA_BASE_URL=...` for the CLI: make run still serves the simulator.
    env |= {"JIRA_BASE_URL": "https://jira.example.invalid"}
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


async def execute(args: list[str], run: Run, env: dict[str, str]) -> tuple[int, str]:
    """Run one README command on this run's ports: curl with its HTTP status; `eval "$(make -s
    env)"` into `env`; any other command with `env` (200 for exit 0)."""
    for readme, port in run.ports.items():
        args = [arg.replace(f"localhost:{readme}", f"localhost:{port}") for arg in args]
    if args[0] == "eval":
        env |= dict(re.findall(r'^export (\w+)="?(.*?)"?$', make_env(run), re.MULTILINE))
        env["PATH"] = env["PATH"].replace("$PATH", os.environ["PATH"])
        return 200, ""
    extra = ["-w", "\n%{http_code}"] if args[0] == "curl" else []
    process = await asyncio.create_subprocess_exec(
        *args, *extra, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT
    )
    out, _ = await process.communicate()
    if args[0] != "curl":
        return 200 if process.returncode == 0 else 500, out.decode()  # exit 0 counts as a 200
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


def make_env(run: Run) -> str:
    """What `make env` prints for this run's ports and interpreter."""
    ports = [f"{PORTS[readme]}={port}" for readme, port in run.ports.items()]
    command = ["make", "-s", "env", *ports, f"BIN={Path(sys.executable).parent}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def same_answer(shown: object, real: object) -> bool:
    """The README's answer has the real one's fields and values; times and ages only their type."""
    if isinstance(shown, dict) and isinstance(real, dict):
        return shown.keys() == real.keys() and all(
            same_answer(value, real[name])
            if not (name.endswith("_at") or name == "age_seconds")
            else type(value) is type(real[name])
            for name, value in shown.items()
        )
    if isinstance(shown, list) and isinstance(real, list):
        return len(shown) == len(real) and all(map(same_answer, shown, real))
    return shown == real


def verdicts(text: str) -> list[tuple[str, str]]:
    """check's lines as (check, verdict) pairs."""
    return [tuple(line.split()[:2]) for line in text.splitlines() if line.strip()]  # type: ignore[misc]


def test_quick_start_names_seeded_keys_and_ports() -> None:
    """The quick start documents PORT and SIM_PORT and asks only for keys the simulator seeds."""
    assert "`PORT`" in QUICK_START and "`SIM_PORT`" in QUICK_START
    keys = {
        key
        for command in quick_start_commands()
        for key in re.findall(r"[A-Z]+-\d+", " ".join(command))
    }
    assert keys and {key.split("-")[0] for key in keys} <= {"ALPHA", "BETA", "GAMMA"}


async def test_quick_start_commands_work_against_make_run(make_run: Run, database_url: str) -> None:
    """Each command of the quick start succeeds against `make run`, the simulator's change
    reaches the cache by webhook, `check` passes, and each answer shown is the real one."""
    steps = quick_start_steps()
    assert len(steps) >= 6
    env = {**os.environ, "DATABASE_URL": database_url}
    answers: list[tuple[int, str]] = []
    for command, shown in steps:
        answer = await execute(command, make_run, env)
        if shown is not None and shown.startswith("{"):
            answer = await until_same(command, make_run, env, shown, answer)
        answers.append(answer)
    assert [answer for answer in answers if not 200 <= answer[0] < 300] == [], answers
    for (command, shown), (_, real) in zip(steps, answers, strict=True):
        if shown is None:
            continue
        if shown.startswith("{"):
            assert same_answer(json.loads(shown), json.loads(real)), (command, real)
        else:
            assert verdicts(shown) == verdicts(real), real
    printed = text_of(make_run.output)
    sim = f"http://127.0.0.1:{make_run.ports['8900']}"
    assert f"at {sim}" in printed and "ALPHA-1 to ALPHA-67" in printed
    assert f"{sim}/_sim/issues/ALPHA-3/transition" in printed
    assert "JIRA_BASE_URL=https://jira.example.invalid is not used" in printed


async def until_same(
    command: list[str], run: Run, env: dict[str, str], shown: str, answer: tuple[int, str]
) -> tuple[int, str]:
    """The answer again until it is the one shown (a webhook lands within seconds), or 10 s."""
    deadline = time.monotonic() + 10
    while not same_answer(json.loads(shown), json.loads(answer[1] or "null")):
        if time.monotonic() > deadline or command[1:3] == ["-s", "-X"]:
            return answer  # a write is not repeated; the comparison then names the difference
        await asyncio.sleep(0.05)
        answer = await execute(command, run, env)
    return answer
