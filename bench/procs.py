"""The processes under test: `serve`, the simulator, the bare app and the load generator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs in the venv; only bench uses it
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".data" / "bench" / "logs"
COMMAND = [sys.executable, "-m", "service"]
# Children see only these of the caller's environment: no setting of ours a developer's
# shell carries (LOG_LEVEL, JIRA_*, ...) changes what is measured.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")


class ProcessFailedError(RuntimeError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}; its output is in {LOGS / (name + '.log')}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A child process, its port and its log; stopped by `stop()`."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    return {**env, **extra}


def spawn(name: str, argv: list[str], port: int, env: Mapping[str, str] | None = None) -> Proc:
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("wb") as log:
        popen = subprocess.Popen(  # noqa: S603 -- our own interpreter, fixed arguments
            argv, cwd=ROOT, env=clean_env(env or {}), stdout=log, stderr=subprocess.STDOUT
        )
    return Proc(name, port, popen)


async def wait_ready(proc: Proc, path: str, within: float = 60.0) -> None:
    """Poll `path` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise ProcessFailedError(proc.name, f"exited with {proc.popen.returncode}")
            try:
                async with session.get(proc.url + path) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise ProcessFailedError(proc.name, f"did not answer {path} within {within:.0f} s")


async def start_serve(name: str, settings: Mapping[str, str]) -> Proc:
    port = int(settings["PORT"])
    proc = spawn(name, [*COMMAND, "serve"], port, settings)
    await wait_ready(proc, "/readyz")
    return proc


async def start_simulator(name: str, port: int, args: list[str]) -> Proc:
    argv = [*COMMAND, "simulate", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = spawn(name, argv, port)
    await wait_ready(proc, "/_sim/options", within=120)
    return proc


async def start_bare() -> Proc:
    port = free_port()
    proc = spawn("bare", [sys.executable, "-m", "bench.bare", str(port)], port)
    await wait_ready(proc, "/readyz")
    return proc


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator in its own process; answer its summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(spec, file)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", file.name, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        timeout = spec.get("warmup", 0) + spec["duration"] + 120
        out, err = await asyncio.wait_for(child.communicate(), timeout)
    finally:
        os.unlink(file.name)
    if child.returncode != 0:
        raise ProcessFailedError("load", f"failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


@dataclass
class RssSampler:
    """Samples a process's resident memory every `every` seconds in a thread."""

    pid: int
    every: float = 0.01
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        process = psutil.Process(self.pid)

        def sample() -> None:
            while not self._stop.is_set():
                self.samples.append(process.memory_info().rss)
                time.sleep(self.every)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max(self.samples, default=0) / 2**20


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def receiving_at(path: str, handler: Handler) -> AsyncIterator[str]:
    """An aiohttp app on loopback answering POSTs to `path`; yields its base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
