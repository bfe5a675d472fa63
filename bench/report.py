"""Figures, each with its baseline, ratio and target; the table and bench/results.json."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.machine import one_line

Better = Literal["lower", "higher"]


@dataclass
class Figure:
    """One measured number next to the baseline measured in the same run.

    `ratio` is value / baseline; `gain` is how many times better than the baseline ours is
    (baseline / value where lower is better), which is what a speed-up target speaks of.
    """

    section: str
    metric: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    better: Better = "lower"
    target: str = ""
    met: bool | None = None
    note: str = ""
    ratio: float | None = field(init=False, default=None)
    gain: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.baseline and not math.isnan(self.value) and self.value:
            self.ratio = self.value / self.baseline
            self.gain = self.ratio if self.better == "higher" else 1 / self.ratio


@dataclass
class Results:
    machine: dict[str, Any]
    mode: str
    settings: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(f"  {figure.section}: {figure.metric} = {_number(figure.value)} {figure.unit}")
        return figure

    def write(self, path: Path) -> None:
        body = {
            "machine": self.machine,
            "mode": self.mode,
            "duration_s": round(self.duration_s, 1),
            "settings": self.settings,
            "figures": [asdict(figure) for figure in self.figures],
            "raw": self.raw,
        }
        path.write_text(json.dumps(body, indent=2, default=str) + "\n")


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _ratio(figure: Figure) -> str:
    """value / baseline; under 0.5 also said the other way round, which reads easier."""
    if figure.ratio is None:
        return "-"
    text = f"{figure.ratio:.3g}x"
    if figure.ratio < 0.5:
        word = "better" if figure.better == "lower" else "worse"
        text += f" ({1 / figure.ratio:,.0f}x {word})"
    return text


def _met(figure: Figure) -> str:
    return {True: "met", False: "**missed**", None: ""}[figure.met]


def table(results: Results) -> str:
    lines = [
        f"Machine: {one_line(results.machine)}. Mode: {results.mode}, "
        f"{results.duration_s:.0f} s in all.",
        "",
        "| # | metric | ours | baseline (same run) | ours / baseline | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in results.figures:
        ours = f"{_number(f.value)} {f.unit}"
        base = f"{_number(f.baseline)} {f.unit}: {f.baseline_name}" if f.baseline else "-"
        note = f" ({f.note})" if f.note else ""
        lines.append(
            f"| {f.section} | {f.metric}{note} | {ours} | {base} | {_ratio(f)} | {f.target} "
            f"| {_met(f)} |"
        )
    return "\n".join(lines)
