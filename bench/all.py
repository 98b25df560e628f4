"""``python -m bench.all`` (``make bench-all``): every benchmark in one run, one report.

Runs, one after the other on an otherwise idle machine:

1. ``python -m bench --brokers tansu,kafka``: producer, lifecycle, worker and end-to-end
   latency on both brokers, footprint, integrity;
2. ``python -m bench.verify_scale --big``: ``verify`` at 1M and 10M events, many chains
   against few, incremental runs, chain heads at 10M rows / 10k chains, the chain-order layout;
3. ``python -m bench.lookup_bench --no-verify``: the lookups and ``trace`` at 10M rows and the
   layouts (``verify`` at 10M is step 2's).

Each step's table, notes and JSON go to ``--out`` (default ``bench/out/``, not tracked); the
report ends with every figure that has a target, so the targets of one run read in one table.
A step that fails is reported and the others still run; the exit status is 1 when a step
failed or a target was missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import fmt, repo_root

STEPS: dict[str, tuple[str, ...]] = {
    "bench": ("-m", "bench", "--brokers", "tansu,kafka"),
    "verify_scale": ("-m", "bench.verify_scale", "--big"),
    "lookups": ("-m", "bench.lookup_bench", "--no-verify"),
}
QUICK: dict[str, tuple[str, ...]] = {
    "bench": ("-m", "bench", "--quick"),
    "verify_scale": ("-m", "bench.verify_scale", "--quick"),
    "lookups": ("-m", "bench.lookup_bench", "--quick", "--no-verify"),
}


def run_step(name: str, args: tuple[str, ...], out: Path) -> dict[str, Any]:
    js, md = out / f"{name}.json", out / f"{name}.md"
    print(f"… {name}: python {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args, "--json", str(js), "--markdown", str(md)],
        cwd=repo_root(),
        stdout=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - started
    (out / f"{name}.txt").write_text(proc.stdout)
    print(proc.stdout, flush=True)
    rows: list[dict[str, Any]] = json.loads(js.read_text())["table"] if js.exists() else []
    return {"name": name, "rc": proc.returncode, "seconds": seconds, "rows": rows}


def targets_table(steps: list[dict[str, Any]]) -> str:
    out = [
        "| step | figure | ours | baseline | target | status |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for step in steps:
        for r in step["rows"]:
            if not r.get("target"):
                continue
            base = "-" if r["baseline"] is None else f"{fmt(r['baseline'])} ({r['baseline_label']})"
            out.append(
                f"| {step['name']} | {r['label']} [{r['unit']}] | {fmt(r['value'])} | {base} "
                f"| {r['target']} | {r['status']} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes of every step (minutes)")
    p.add_argument("--only", action="append", choices=list(STEPS), help="run only this step")
    p.add_argument("--out", type=Path, default=repo_root() / "bench" / "out")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    plan = QUICK if a.quick else STEPS
    started = time.perf_counter()
    steps = [run_step(n, args, a.out) for n, args in plan.items() if not a.only or n in a.only]
    table = targets_table(steps)
    took = ", ".join(f"{s['name']} {s['seconds']:.0f} s (exit {s['rc']})" for s in steps)
    total = time.perf_counter() - started
    report = f"## Targets of this run\n\n{table}\n\n- steps: {took}; total {total:.0f} s\n"
    (a.out / "targets.md").write_text(report)
    print(report)
    failed = [s["name"] for s in steps if not s["rows"]]
    missed = any(r.get("status") == "MISS" for s in steps for r in s["rows"])
    if failed:
        print(f"no figures from: {', '.join(failed)} (see {a.out})", file=sys.stderr)
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
