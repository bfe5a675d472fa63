"""py-spy around a measured run (with --profile): collapsed stacks, and what they add up to."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.procs import ROOT

PROFILES = ROOT / "bench" / "profiles"
ENABLED: list[bool] = [False]  # set by --profile


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
    return found


@contextlib.contextmanager
def profiled(pid: int, name: str | None) -> Iterator[None]:
    """Sample `pid` while the block runs, into bench/profiles/NAME.txt (collapsed stacks)."""
    if not ENABLED[0] or name is None:
        yield
        return
    PROFILES.mkdir(exist_ok=True)
    out = PROFILES / f"{name}.txt"
    argv = [py_spy(), "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    child = subprocess.Popen(  # noqa: S603 -- py-spy from our venv, fixed arguments
        [*argv, "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        child.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        child.wait(timeout=30)
        (PROFILES / f"{name}.summary.txt").write_text(summarize(out))


def summarize(path: Path, top: int = 25) -> str:
    """Share of samples per function: where the time was spent (self) and under (total)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_short(frame) for frame in stack.split(";") if frame]
        total += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            under[frame] += int(count)
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in under.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    # "function (path/to/module.py:line)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({file})"
