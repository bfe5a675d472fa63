"""The README's Quick start and "Connect your Jira" work as written, against what `make run`
starts; its command line reference and module map match the code."""

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
from service.cli.main import build_parser
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README's `## title` section, up to the next `## ` heading."""
    return README.split(f"\n## {title}\n")[1].split("\n## ")[0]


QUICK_START = section("Quick start")
CONNECT = section("Connect your Jira")
# The ports the README's commands name, and the settings `make run` takes them from.
PORTS = {"8000": "PORT", "8900": "SIM_PORT"}
# "Connect your Jira" names your Jira and its credentials: the simulator and what `make env`
# prints for it stand in for them, and `make run`'s cache for the cache's public address.
STAND_INS = {
    "https://acme.atlassian.net": "JIRA_BASE_URL",
    "bot@acme.com": "JIRA_EMAIL",
    "your-api-token": "JIRA_API_TOKEN",
    "your-webhook-secret": "JIRA_WEBHOOK_SECRET",
}
PUBLIC_URL = "https://cache.example.com"


@dataclass(frozen=True)
class Run:
    ports: dict[str, str]  # README's port -> the port this run uses
    output: Path


def quick_start_commands() -> list[list[str]]:
    """Every command line of the quick start's shell blocks after `make run`, split as a shell
    would (the first block lists the make targets, each with a comment)."""
    return [command for command, _ in steps_of(QUICK_START)]


def steps_of(text: str) -> list[tuple[list[str], str | None]]:
    """Each command of a section's shell blocks, split as a shell would (comments dropped),
    with the output the README shows right after its block, if any. `make` lines start a
    server or list targets (the test runs `make run` itself); indented lines continue a comment."""
    blocks = re.findall(r"```(sh|json|text)\n(.*?)```", text, re.DOTALL)
    steps: list[tuple[list[str], str | None]] = []
    for kind, body in blocks:
        if kind == "sh":
            lines = [line for line in body.splitlines() if line and not line.startswith("make ")]
            commands = [line for line in lines if not line.startswith((" ", "#"))]
            steps += [(shlex.split(line, comments=True), None) for line in commands]
        elif steps:
            steps[-1] = (steps[-1][0], body.strip())
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
    env)"` and `export NAME=value` into `env`; any other command with `env` (200 for exit 0)."""
    named = " ".join(args)
    made = made_env(run) if any(shown in named for shown in STAND_INS) else {}
    args = [stand_in(arg, run, made) for arg in args]
    if args[0] == "eval":
        env |= made_env(run)
        env["PATH"] = env["PATH"].replace("$PATH", os.environ["PATH"])
        return 200, ""
    if args[0] == "export":
        for name, value in (arg.split("=", 1) for arg in args[1:]):
            env[name] = value.replace("$PATH", env["PATH"])
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


def stand_in(arg: str, run: Run, made: dict[str, str]) -> str:
    """The argument on this run's ports, with the simulator (`made`: what `make env` exports)
    standing in for your Jira."""
    for readme, port in run.ports.items():
        arg = arg.replace(f"localhost:{readme}", f"localhost:{port}")
    for shown, name in STAND_INS.items():
        arg = arg.replace(shown, made[name]) if shown in arg else arg
    arg = arg.replace(PUBLIC_URL, f"http://127.0.0.1:{run.ports['8000']}")
    # The CLI this test runs with, where `make install` puts it.
    return arg.replace("$PWD/.venv/bin", str(Path(sys.executable).parent))


def made_env(run: Run) -> dict[str, str]:
    """The variables `make env` exports for this run."""
    return dict(re.findall(r'^export (\w+)="?(.*?)"?$', make_env(run), re.MULTILINE))


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


async def run_steps(
    steps: list[tuple[list[str], str | None]], run: Run, env: dict[str, str]
) -> list[tuple[int, str]]:
    """Each step run in turn; every one succeeds and each answer shown is the real one."""
    answers: list[tuple[int, str]] = []
    for command, shown in steps:
        answer = await execute(command, run, env)
        if shown is not None and shown.startswith("{"):
            answer = await until_same(command, run, env, shown, answer)
        answers.append(answer)
    assert [answer for answer in answers if not 200 <= answer[0] < 300] == [], answers
    for (command, shown), (_, real) in zip(steps, answers, strict=True):
        if shown is None:
            continue
        if shown.startswith("{"):
            assert same_answer(json.loads(shown), json.loads(real)), (command, real)
        else:
            assert verdicts(shown) == verdicts(real), real
    return answers


async def test_quick_start_commands_work_against_make_run(make_run: Run, database_url: str) -> None:
    """Each command of the quick start succeeds against `make run`, the simulator's change
    reaches the cache by webhook, `check` passes, and each answer shown is the real one."""
    steps = steps_of(QUICK_START)
    assert len(steps) >= 6
    await run_steps(steps, make_run, {**os.environ, "DATABASE_URL": database_url})
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


async def test_connect_your_jira_works_against_make_run(make_run: Run, database_url: str) -> None:
    """Each command of "Connect your Jira" succeeds as written, the simulator standing in for
    your Jira: the credentials, `check`, a first link read back, `webhook install` filtering on
    the linked key's project, and the final `check` as shown, every line ok."""
    steps = steps_of(CONNECT)
    names = [" ".join(command[:3]) for command, _ in steps]
    assert "jira-status-cache check" in names and "jira-status-cache webhook install" in names
    assert any(command[0] == "curl" and "PUT" in command for command, _ in steps)
    outside = {variable.name for variable in config.variables()} - {"DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in outside}
    env["DATABASE_URL"] = database_url
    answers = await run_steps(steps, make_run, env)
    assert env["JIRA_BASE_URL"] == made_env(make_run)["JIRA_BASE_URL"]  # as exported
    linked = {key.split("-")[0] for key in re.findall(r"jira/([A-Z]+-\d+)", CONNECT)}
    final = answers[-1][1]
    assert verdicts(final) and {verdict for _, verdict in verdicts(final)} == {"ok"}, final
    assert f"filter {webhook_filter(linked)}" in final, final


def webhook_filter(projects: set[str]) -> str:
    return "project in (" + ", ".join(f'"{p}"' for p in sorted(projects)) + ")"


def test_command_line_section_names_every_command() -> None:
    """The README's command line reference has an entry for each command `--help` lists."""
    parser = build_parser()
    actions = parser._subparsers._group_actions  # type: ignore[union-attr]
    commands = {name for action in actions for name in action.choices}
    reference = section("Command line")
    entries = set(re.findall(r"^- `([a-z-]+)", reference, re.MULTILINE))
    assert commands <= entries, commands - entries
    for action in ("install", "status", "uninstall"):
        assert f"`webhook {action}" in reference


def test_module_map_names_every_module() -> None:
    """The module map in Development names every module of the package, and no other."""
    table = section("Development").split("- **Follow a webhook.**")[0]
    mapped: set[str] = set()
    folder = "service/"
    for row in re.findall(r"^\s*\| (.*)\|$", table, re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        folder = cells[0].strip("`") if cells[0].startswith("`") else folder
        for name in re.findall(r"`(\w+)`", cells[1]):
            package = ROOT / folder / name
            # A package of its own (shapes): its modules are named as `shapes.links`.
            found = re.findall(rf"`{name}\.(\w+)`", cells[2]) if package.is_dir() else []
            mapped |= {f"{folder}{name}/{part}.py" for part in found} or {f"{folder}{name}.py"}
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "service").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and "migrations" not in path.parts
    }
    assert mapped == modules, (mapped - modules, modules - mapped)


def test_contents_link_to_headings() -> None:
    """Each link of the contents leads to a heading (GitHub's anchors), and each section
    (`## `) is in the contents."""
    contents = README.split("**Contents**")[1].split("\n## ")[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    headings = re.findall(r"^(#{2,3}) (.+)$", README, re.MULTILINE)
    anchors = {anchor(text): level for level, text in headings}
    assert [link for link in links if link not in anchors] == []
    sections = [anchor(text) for level, text in headings if level == "##"]
    assert [name for name in sections if name not in links] == []


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
