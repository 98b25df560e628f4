"""``python -m bench.lookup_bench``: the issue-15 lookup figures at 10M rows.

python -m bench.lookup_bench                  # 10M events in 100 chains over 4 weeks
python -m bench.lookup_bench --events 2000000 # a smaller store
python -m bench.lookup_bench --quick          # 50k events (seconds)

The store is built with :mod:`bench.verify_store` (the realistic signed events a producer
sends, each with a request id of its own, over 3 models / 9 deployments, written to
``decisions`` directly: the rollup views fill from those inserts as from the worker's), then
merged. In-engine p50/p99 of each lookup (a distinct random key per repetition, the query
alone timed through clickhouse-connect), ``decision-audit trace`` end to end as a subprocess
beside a bare ``decision-audit query "SELECT 1"`` on the same store, and ``verify`` at that
size (its peak RSS). Then the layouts of migrations 0015 and 0018 and their alternatives
(:data:`bench.lookup_run.VARIANTS`) are
added to the same store and each point lookup is timed again under each, with the bytes
each costs per event. Every step runs in its own process (one chDB directory per process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    Target,
    percentile,
    render_markdown,
    render_table,
    repo_root,
    run_json,
)
from bench.lookup_run import SHIPPED_VARIANT

say = lambda msg: print(f"… {msg}", file=sys.stderr, flush=True)  # noqa: E731


def _step(*args: str, timeout: float = 7200) -> dict[str, Any]:
    return run_json(["-m", "bench.lookup_run", *args], timeout=timeout)


def _cli(*args: str) -> tuple[float, int]:
    exe = Path(sys.executable).with_name("decision-audit")
    t = time.perf_counter()
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=repo_root())
    return (time.perf_counter() - t) * 1000, proc.returncode


def trace_runs(chdb: str, db: str, request_ids: list[str]) -> dict[str, Any]:
    store = ("--clickhouse-url", f"chdb://{chdb}", "--database", db)
    bare, full = [], []
    for rid in request_ids:
        ms, rc = _cli("query", *store, "SELECT 1")
        if rc != 0:
            raise SystemExit(f"query exited {rc}")
        bare.append(ms)
        ms, rc = _cli("trace", *store, "--format", "json", rid)
        if rc != 0:
            raise SystemExit(f"trace {rid} exited {rc}")
        full.append(ms)
    bare.sort()
    full.sort()
    return {
        "trace_p50_ms": percentile(full, 50),
        "trace_max_ms": full[-1],
        "bare_p50_ms": percentile(bare, 50),
        "beyond_startup_ms": percentile(full, 50) - percentile(bare, 50),
        "n": len(full),
    }


def run(a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    chdb, db = str(a.store or workdir / "chdb"), "lk"
    r: dict[str, Any] = {"events": a.events, "reps": a.reps}
    if a.store:
        say(f"reusing the store in {a.store}, built before by this bench")
        r["build"] = _step("disk", "--chdb", chdb, "--db", db)
    else:
        say(f"building {a.events:,} events in 100 chains over 28 days")
        r["build"] = _step("build", "--chdb", chdb, "--db", db, "--events", str(a.events))
    rids = _step("keys", "--chdb", chdb, "--db", db, "--reps", str(a.traces))["request_ids"]
    say("lookups, trace and verify on the layout of migrations 0001-0014")
    r["before"] = _step(
        "measure",
        "--chdb",
        chdb,
        "--db",
        db,
        "--reps",
        str(a.reps),
        *(["--full-scan"] if not a.quick else []),
        "--variants",
        "base",
    )
    r["trace_before"] = trace_runs(chdb, db, rids)
    if not a.no_verify:
        r["verify"] = run_json(
            ["-m", "bench.verify_scale_run", "verify", "--chdb", chdb, "--db", db], timeout=7200
        )
    say("adding the layouts of 0015 and 0018")
    r["tune"] = _step("tune", "--chdb", chdb, "--db", db)
    r["after"] = _step("measure", "--chdb", chdb, "--db", db, "--reps", str(a.reps))
    say("the store as the migrations leave it (0018 drops 0015's projection)")
    r["shipped"] = _step("ship", "--chdb", chdb, "--db", db)
    r["trace_after"] = trace_runs(chdb, db, rids)
    return r


LABELS = {
    "by_request_id": "lookup by request_id",
    "by_event_id": "lookup by event_id",
    "deployment_hour": "one deployment's decisions in one hour",
    "model_day_rollup": "per model/day counts over 7 days, rollups",
    "model_day_base": "per model/day counts over 7 days, base table",
    "input_field_day": "one model's day filtered on one input field (JSON)",
    "input_field_all": "every row filtered on two input fields (JSON)",
    "trace_find_or": "trace's lookup (event id OR request id OR prediction id)",
    "trace_find_split": "trace's lookup, each predicate's keys found apart",
    "trace_chain_final": "trace's chain walk (1,000 seqs), FINAL over the chain filter",
    "trace_chain_keys": "trace's chain walk (1,000 seqs), the chain's keys found first",
}


def figures(r: dict[str, Any]) -> list[Figure]:
    n = f"{r['build']['rows'] / 1e6:g}M rows"
    before, after = r["before"], r["after"]
    out: list[Figure] = []
    for name, label in LABELS.items():
        k = f"{name}@base"
        if k not in before:
            continue
        for q in ("p50_ms", "p99_ms"):
            base = None
            base_label = ""
            if name == "model_day_rollup":
                base, base_label = before["model_day_base@base"][q], "base table"
            out.append(
                Figure(
                    f"lookup.{name}_{q}",
                    "lookup",
                    f"{label}, {n}, {q[:3]}",
                    "ms",
                    before[k][q],
                    base,
                    base_label,
                )
            )
    for name in (
        "by_request_id",
        "by_event_id",
        "trace_find_or",
        "trace_find_split",
        "trace_chain_final",
        "trace_chain_keys",
    ):
        for variant in after["variants"]:
            k = f"{name}@{variant}"
            if variant == "base" or k not in after:
                continue
            out.append(
                Figure(
                    f"layout.{name}_{variant}_p50_ms",
                    "layout",
                    f"{LABELS[name]} with {variant}, p50",
                    "ms",
                    after[k]["p50_ms"],
                    after[f"{name}@base"]["p50_ms"],
                    "0001-0014 layout, same run",
                    Target("≤ 50 ms", lambda f: f.value <= 50)
                    if name == "by_request_id" and variant == SHIPPED_VARIANT
                    else None,
                )
            )
    t0, t1 = r["trace_before"], r["trace_after"]
    out += [
        Figure(
            "trace.e2e_ms",
            "trace",
            f"`decision-audit trace REQUEST_ID` end to end, {n}",
            "ms",
            t1["trace_p50_ms"],
            t0["trace_p50_ms"],
            "before the layout change",
        ),
        Figure(
            "trace.beyond_startup_ms",
            "trace",
            'trace beyond a bare `query "SELECT 1"`',
            "ms",
            t1["beyond_startup_ms"],
            t0["beyond_startup_ms"],
            "before the layout change",
            Target("≤ 500 ms", lambda f: f.value <= 500),
        ),
        Figure(
            "footprint.bytes_per_event",
            "footprint",
            f"`decisions` on disk per event, {n}",
            "B",
            r["shipped"]["bytes_per_event"],
            r["build"]["bytes_per_event"],
            "before the layout change",
        ),
    ]
    if "verify" in r:
        v = r["verify"]
        out += [
            Figure(
                "verify.ev_s_at_lookup_store",
                "verify",
                f"`verify`, all checks, {v['events']:,} events in 100 chains",
                "ev/s",
                v["ev_s"],
            ),
            Figure(
                "verify.peak_rss_mib_at_lookup_store",
                "verify",
                f"`verify` peak RSS, {v['events']:,} events",
                "MiB",
                v["peak_rss_mib"],
            ),
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lookup_bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="50k events, few repetitions")
    p.add_argument("--events", type=int)
    p.add_argument("--reps", type=int)
    p.add_argument("--traces", type=int)
    p.add_argument("--no-verify", action="store_true", help="skip verify at that size")
    p.add_argument(
        "--store", type=Path, help="a chDB directory this bench built (not yet tuned): reuse it"
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--render", type=Path, help="only print the figures of a run's --json file")
    a = p.parse_args(argv)
    if a.render:
        figs = figures(json.loads(a.render.read_text())["raw"])
        print(render_table(figs))
        if a.markdown:
            a.markdown.write_text(render_markdown(figs) + "\n")
        return 0
    a.events = a.events or (50_000 if a.quick else 10_000_000)
    a.reps = a.reps or (20 if a.quick else 200)
    a.traces = a.traces or (3 if a.quick else 10)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="decision-audit-lookups-") as tmp:
        results = run(a, Path(tmp))
    figs = figures(results)
    print(render_table(figs))
    print(f"total {time.perf_counter() - started:.0f} s")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "figures": {f.key: f.value for f in figs},
                    "table": [f.as_json() for f in figs],
                    "raw": results,
                },
                indent=2,
                default=str,
            )
        )
    if a.markdown:
        a.markdown.write_text(render_markdown(figs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
