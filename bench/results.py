"""Figures of one benchmark run: percentiles, ratios to the machine's raw limits, the table, the JSON file.

Every pipeline figure is also given as a ratio of the raw limit measured in the same run on the same
machine, so runs on machines of different speed (or on a busy one) compare:
- a throughput as `pipeline / raw` (0.25 = a quarter of what the raw parts manage);
- a latency as `pipeline / raw` too, where more is worse (5.0 = five times the raw hop).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def middle_rate(instants_s: list[float], share: float = 0.8) -> float:
    """Events per second over the middle `share` of them, by when each happened: a run's steady rate,
    without its start (the first pass finding its work) and its end (the last few in flight)."""
    ordered = sorted(instants_s)
    skip = round(len(ordered) * (1 - share) / 2)
    first, last = skip, len(ordered) - 1 - skip
    if last <= first or ordered[last] == ordered[first]:
        raise ValueError("too few events, or all at one instant")
    return (last - first) / (ordered[last] - ordered[first])


def summary_ms(samples_ms: list[float]) -> dict[str, float]:
    return {"count": len(samples_ms), "p50_ms": percentile(samples_ms, 50), "p99_ms": percentile(samples_ms, 99),
            "max_ms": max(samples_ms)}


@dataclass
class Figure:
    """One line of the table."""

    key: str
    label: str
    value: float
    unit: str
    raw: float | None = None  # the raw limit this figure compares with, in the same unit
    raw_label: str = ""
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable in this run
    note: str = ""  # e.g. that the value is a lower bound

    @property
    def ratio(self) -> float | None:
        if self.raw is None or self.raw == 0:
            return None
        return self.value / self.raw


@dataclass
class Run:
    """What one `payloop bench` run measured."""

    sizes: dict[str, Any]
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    host: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "sizes": self.sizes, "host": self.host,
                "figures": [{**asdict(f), "ratio": f.ratio} for f in self.figures],
                "skipped": self.skipped, "details": self.details}

    def write(self, folder: Path, suffix: str = "") -> Path:
        """bench/results/<date><suffix>.json; a second run on the same day replaces the first."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.started_at[:10]}{suffix}.json"
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False, default=str) + "\n")
        return path

    def table(self) -> str:
        rows = [("figure", "value", "raw limit (same run)", "ratio", "target", "note")]
        for f in self.figures:
            ratio = "" if f.ratio is None else f"{f.ratio:.2f}x" if f.ratio >= 10 else f"{f.ratio:.3f}"
            raw = "" if f.raw is None else f"{_num(f.raw)} {f.unit}" + (f" ({f.raw_label})" if f.raw_label else "")
            verdict = {True: "met", False: "NOT met", None: ""}[f.met]
            rows.append((f.label, f"{_num(f.value)} {f.unit}", raw, ratio, f"{f.target} {verdict}".strip(), f.note))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for part, reason in self.skipped.items():
            lines.append(f"(skipped {part}: {reason})")
        return "\n".join(lines)


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
