"""Shared pieces: the realistic event, percentiles, subprocess plumbing and the figures table."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS = (
    ("credit-risk", "2.3.0", ("approve", "review", "decline")),
    ("fraud-detector", "1.4.2", ("legit", "fraud")),
    ("churn-predictor", "0.9.1", ("stay", "churn")),
)
REGIONS = ("eu-west", "us-east", "ap-south")


@dataclass(frozen=True, slots=True)
class Call:
    """The arguments of one ``log_decision`` call (made before timing starts)."""

    model_name: str
    model_version: str
    inputs: dict[str, Any]
    prediction: str
    score: float
    request_id: str
    deployment_id: str

    def as_json_event(self) -> dict[str, Any]:
        """The same decision as a plain dict, for the JSON baselines."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "inputs": self.inputs,
            "prediction": self.prediction,
            "score": self.score,
            "request_id": self.request_id,
            "deployment_id": self.deployment_id,
        }


def features(rng: random.Random) -> dict[str, Any]:
    """Twenty features of mixed types (ints, floats, strings, bools, a null)."""
    return {
        "age": rng.randint(18, 90),
        "income": int(rng.lognormvariate(10.5, 0.6)),
        "debt": round(rng.random(), 3),
        "accts": rng.randint(0, 12),
        "late": rng.randint(0, 5),
        "emp_y": rng.randint(0, 40),
        "region": rng.choice(("eu", "us", "ap")),
        "chan": rng.choice(("web", "app", "branch")),
        "dev": rng.choice(("ios", "android", "web")),
        "cc": rng.choice(("DE", "FR", "US", "IN", "BR")),
        "util": round(rng.random(), 3),
        "inq": rng.randint(0, 9),
        "mortg": rng.random() < 0.4,
        "tenure": rng.randint(0, 240),
        "bal": rng.randint(-500, 25_000),
        "txn30": rng.randint(0, 300),
        "mcc": rng.choice(("grocery", "travel", "fuel")),
        "new": rng.random() < 0.1,
        "seg": rng.choice(("retail", "smb")),
        "note": None,
    }


def make_calls(count: int, seed: int = 5) -> list[Call]:
    """``count`` distinct realistic decisions, cycled by the benchmarks."""
    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        name, version, labels = rng.choice(MODELS)
        score = rng.random()
        calls.append(
            Call(
                model_name=name,
                model_version=version,
                inputs=features(rng),
                prediction=labels[min(int(score * len(labels)), len(labels) - 1)],
                score=round(score, 4),
                request_id=f"{rng.getrandbits(64):016x}",
                deployment_id=f"{name[:5]}-{rng.choice(REGIONS)}",
            )
        )
    return calls


def log_call(producer: Any, c: Call) -> str:
    result: str = producer.log_decision(
        c.model_name,
        c.model_version,
        c.inputs,
        c.prediction,
        score=c.score,
        request_id=c.request_id,
        deployment_id=c.deployment_id,
    )
    return result


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def run_json(
    args: list[str], timeout: float, *, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python -m ...`` and parse the last stdout line as JSON; raise with stderr on error."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(repo_root()),
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(args)} printed no JSON:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def current_rss_bytes() -> int:
    """Resident set size now (not the peak), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


# -- figures --------------------------------------------------------------------------------


@dataclass
class Target:
    text: str
    check: Callable[[Figure], bool]


@dataclass
class Figure:
    """One reported number with its same-run baseline; ``ratio`` is ours / baseline."""

    key: str
    bench: str
    label: str
    unit: str
    value: float
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def status(self) -> str:
        if self.target is None:
            return ""
        return "PASS" if self.target.check(self) else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "bench": self.bench,
            "label": self.label,
            "unit": self.unit,
            "value": self.value,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": self.ratio,
            "target": self.target.text if self.target else None,
            "status": self.status or None,
        }


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "x":
        return f"{v:.2f}x"
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s


def render_table(figures: list[Figure]) -> str:
    header = ("bench", "figure", "ours", "baseline", "ratio", "target", "status")
    rows = [header]
    for f in figures:
        base = "-" if f.baseline is None else f"{fmt(f.baseline)} ({f.baseline_label})"
        rows.append(
            (
                f.bench,
                f"{f.label} [{f.unit}]",
                fmt(f.value),
                base,
                fmt(f.ratio, "x"),
                f.target.text if f.target else "",
                f.status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = []
    for n, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(figures: list[Figure]) -> str:
    out = [
        "| bench | figure | ours | baseline | ratio | target | status |",
        "| --- | --- | ---: | --- | ---: | --- | --- |",
    ]
    for f in figures:
        base = "-" if f.baseline is None else f"{fmt(f.baseline)} ({f.baseline_label})"
        out.append(
            f"| {f.bench} | {f.label} [{f.unit}] | {fmt(f.value)} | {base} | "
            f"{fmt(f.ratio, 'x')} | {f.target.text if f.target else ''} | {f.status} |"
        )
    return "\n".join(out)
