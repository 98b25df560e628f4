"""``python -m bench.verify_scale``: the issue-15 figures for verify, chain order and chain heads.

python -m bench.verify_scale            # 1M events, 3x100k against 300x1k, 1M rows / 1k chains
python -m bench.verify_scale --quick    # small sizes (seconds)
python -m bench.verify_scale --big      # also verify at 10M events, heads at 10M rows / 10k chains

Each figure beside its baseline from the same run: ``verify`` in the engine against the same
checks event by event in Python (what ``verify`` did before), many short chains against few
long ones, an incremental run against a full one, chain-head recovery from ``chain_heads``
against the aggregation over ``decisions``. Every step runs in its own process
(:mod:`bench.verify_scale_run`; chDB allows one data directory per process), so each
``verify`` figure's peak RSS is that of a process doing only that.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Figure, Target, render_markdown, render_table, run_json


@dataclass(frozen=True)
class Sizes:
    verify_events: int
    chain_events: int
    """events of each of the 3 long chains; the 300 short ones hold as many in all"""
    grow_events: int
    heads_rows: int
    heads_chains: int
    repeats: int = 3

    @classmethod
    def full(cls) -> Sizes:
        return cls(1_000_000, 100_000, 10_000, 1_000_000, 1_000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(20_000, 2_000, 200, 50_000, 100, repeats=1)


def _step(*args: str, timeout: float = 3600) -> dict[str, Any]:
    return run_json(["-m", "bench.verify_scale_run", *args], timeout=timeout)


def _median_verify(chdb: str, db: str, repeats: int, *extra: str) -> dict[str, Any]:
    runs = [_step("verify", "--chdb", chdb, "--db", db, *extra) for _ in range(repeats)]
    runs.sort(key=lambda r: r["seconds"])
    out = dict(runs[len(runs) // 2])
    out["all_seconds"] = [r["seconds"] for r in runs]
    return out


def run(sizes: Sizes, workdir: Path, big: bool) -> dict[str, Any]:
    chdb = str(workdir / "chdb")
    r: dict[str, Any] = {"sizes": sizes.__dict__}
    say = lambda msg: print(f"… {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"building {sizes.verify_events:,} events in 10 chains")
    r["build"] = _step(
        "build", "--chdb", chdb, "--db", "v", "--events", str(sizes.verify_events), "--chains", "10"
    )
    say("verify in the engine, then event by event in Python")
    r["engine"] = _median_verify(chdb, "v", sizes.repeats)
    r["python"] = _step("verify", "--chdb", chdb, "--db", "v", "--python")
    n = sizes.chain_events * 3
    say(f"building 3 x {sizes.chain_events:,} and 300 x {n // 300:,}")
    r["build_3"] = _step("build", "--chdb", chdb, "--db", "c3", "--events", str(n), "--chains", "3")
    r["build_300"] = _step(
        "build", "--chdb", chdb, "--db", "c300", "--events", str(n), "--chains", "300"
    )
    for db in ("c3", "c300"):
        r[f"engine_{db}"] = _median_verify(chdb, db, sizes.repeats)
        r[f"python_{db}"] = _step("verify", "--chdb", chdb, "--db", db, "--python")
    say("incremental: a first run, 1% more events, a second run")
    r["incremental_first"] = _step("verify", "--chdb", chdb, "--db", "v", "--incremental")
    r["grow"] = _step("grow", "--chdb", chdb, "--db", "v", "--events", str(sizes.grow_events))
    r["incremental"] = _step("verify", "--chdb", chdb, "--db", "v", "--incremental")
    r["engine_after_grow"] = _step("verify", "--chdb", chdb, "--db", "v")
    heads = [(sizes.heads_rows, sizes.heads_chains)]
    if big:
        heads.append((10_000_000, 10_000))
        say("verify at 10M events in 100 chains (built a million at a time)")
        bdir = str(workdir / "chdb-10m")
        _step("build", "--chdb", bdir, "--db", "v", "--events", "1000000", "--chains", "100")
        for _ in range(9):
            _step("grow", "--chdb", bdir, "--db", "v", "--events", "1000000")
        r["engine_10m"] = _step("verify", "--chdb", bdir, "--db", "v")
    for rows, chains in heads:
        say(f"chain heads at {rows:,} rows / {chains:,} chains")
        hdir = str(workdir / f"heads-{rows}")
        key = f"heads_{rows}"
        r[key] = _step(
            "heads", "--chdb", hdir, "--db", "h", "--rows", str(rows), "--chains", str(chains)
        )
        r[key].update(_step("assign", "--chdb", hdir, "--db", "h"))
    return r


def figures(r: dict[str, Any]) -> list[Figure]:
    e, py = r["engine"], r["python"]
    b = "verify"
    n = r["build_3"]["events"]
    ratio = r["engine_c300"]["seconds"] / r["engine_c3"]["seconds"]
    py_ratio = r["python_c300"]["seconds"] / r["python_c3"]["seconds"]
    out = [
        Figure(
            "verify.engine_ev_s",
            b,
            f"`verify`, all checks, {e['events']:,} events in 10 chains",
            "ev/s",
            e["ev_s"],
            py["ev_s"],
            "event by event in Python",
            Target("≥ 150,000 ev/s", lambda f: f.value >= 150_000),
        ),
        Figure(
            "verify.cpu_s_per_million",
            b,
            "`verify` CPU per 1M events (all threads)",
            "s",
            e["cpu_s"] * 1e6 / e["events"],
            py["cpu_s"] * 1e6 / py["events"],
            "event by event in Python",
        ),
        Figure(
            "verify.peak_rss_mib",
            b,
            f"`verify` peak RSS, {e['events']:,} events (process, engine included)",
            "MiB",
            e["peak_rss_mib"],
            py["peak_rss_mib"],
            "event by event in Python",
        ),
        Figure(
            "verify.chains_300_s",
            b,
            f"`verify` 300 chains x {n // 300:,} events",
            "s",
            r["engine_c300"]["seconds"],
            r["engine_c3"]["seconds"],
            f"3 chains x {n // 3:,}",
        ),
        Figure(
            "verify.chains_ratio",
            b,
            f"300 x {n // 300:,} over 3 x {n // 3:,}, in the engine",
            "x",
            ratio,
            py_ratio,
            "the same in Python",
            Target("≤ 1.5x", lambda f: f.value <= 1.5),
        ),
        Figure(
            "verify.incremental_s",
            b,
            f"`verify --incremental` after {r['grow']['events']:,} new events",
            "s",
            r["incremental"]["seconds"],
            r["engine_after_grow"]["seconds"],
            "full `verify` of the same store",
        ),
    ]
    if "engine_10m" in r:
        big = r["engine_10m"]
        out += [
            Figure(
                "verify.engine_ev_s_10m",
                b,
                f"`verify`, all checks, {big['events']:,} events in 100 chains",
                "ev/s",
                big["ev_s"],
                e["ev_s"],
                f"{e['events']:,} events",
            ),
            Figure(
                "verify.peak_rss_mib_10m",
                b,
                f"`verify` peak RSS, {big['events']:,} events",
                "MiB",
                big["peak_rss_mib"],
                e["peak_rss_mib"],
                f"{e['events']:,} events",
            ),
        ]
    for key in sorted(k for k in r if k.startswith("heads_")):
        h = r[key]
        at = f"{h['chains']:,} chains at {h['rows'] / 1e6:g}M rows"
        out += [
            Figure(
                f"heads.recover_all_ms_{h['rows']}",
                "heads",
                f"recover every head, {at}",
                "ms",
                h["heads_all_table_ms"],
                h["heads_all_aggregate_ms"],
                "aggregating decisions",
            ),
            Figure(
                f"heads.assign_to_insert_ms_{h['rows']}",
                "heads",
                f"worker assignment → first insert, {at}",
                "ms",
                h["assign_to_insert_table_ms"],
                h["assign_to_insert_aggregate_ms"],
                "heads aggregated",
            ),
            Figure(
                f"layout.projection_bytes_{h['rows']}",
                "layout",
                f"chain-order projection (not kept) on disk per event, {at}",
                "B",
                h["projection_bytes_per_event"],
            ),
            Figure(
                f"layout.redelivery_check_ms_{h['rows']}",
                "layout",
                f"with the projection: stored hashes of {h['stored_hashes_links']} links",
                "ms",
                h["stored_hashes_projection_ms"],
                h["stored_hashes_scan_ms"],
                "without (kept)",
            ),
            Figure(
                f"layout.chain_range_ms_{h['rows']}",
                "layout",
                "with the projection: one chain's 21 seqs",
                "ms",
                h["chain_range_projection_ms"],
                h["chain_range_scan_ms"],
                "without (kept)",
            ),
        ]
    return out


def notes(r: dict[str, Any]) -> str:
    e, inc = r["engine"], r["incremental"]
    lines = [
        f"verify: engine runs {', '.join(f'{s:.2f}' for s in e['all_seconds'])} s (median "
        f"shown); {e['python_chains']} chains left to Python; attested {e['attested']:,} of "
        f"{e['events']:,}; the store {r['build']['disk_bytes_per_event']:.0f} B/event merged",
        f"incremental: the first run checked {r['incremental_first']['events']:,} events in "
        f"{r['incremental_first']['seconds']:.2f} s, the next {inc['events']:,} new ones in "
        f"{inc['seconds']:.2f} s",
        f"chains: engine 3 x {r['engine_c3']['all_seconds']} s, 300 x "
        f"{r['engine_c300']['all_seconds']} s; Python {r['python_c3']['seconds']:.1f} s and "
        f"{r['python_c300']['seconds']:.1f} s",
    ]
    return "\n".join(f"- {line}" for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.verify_scale", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--big", action="store_true", help="verify at 10M events, heads at 10M rows / 10k chains"
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    a = p.parse_args(argv)
    sizes = Sizes.quick() if a.quick else Sizes.full()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="decision-audit-verify-scale-") as tmp:
        results = run(sizes, Path(tmp), a.big)
    figs = figures(results)
    print(render_table(figs))
    print(notes(results))
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
            )
        )
    if a.markdown:
        a.markdown.write_text(f"{render_markdown(figs)}\n\n{notes(results)}\n")
    return 0 if all(f.status != "MISS" for f in figs) else 1


if __name__ == "__main__":
    sys.exit(main())
