"""Benchmark 3: end-to-end latency at a steady load, from ``log_decision`` to the stored row.

Our worker and then the naive consumer each run alone (so neither starves the other of this
machine's two cores), in its own subprocess with its own chDB directory, consumer group and
topic, while one AuditProducer logs at a fixed rate. Per-event latency is
``ingested_at - occurred_at`` of the stored row (both DateTime64(3) UTC: ``occurred_at`` is
stamped by ``log_decision``, ``ingested_at`` by the insert), read back by each subprocess at
the end. Both consumers flush a batch at 10,000 rows or after 0.5 s, whichever comes first
(the worker's defaults).
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from bench.common import log_call, make_calls, repo_root
from decision_audit import AuditProducer
from decision_audit.worker.topics import ensure_topics

TOPIC = "bench-latency"


class Child:
    """A ``bench.worker_run`` subprocess whose stdout lines are read in a thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker_run", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(repo_root()),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.ready = False
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()

    def _pump(self, stream: IO[str], out: bool) -> None:
        for line in stream:
            if out:
                self.lines.put(line.rstrip("\n"))
            else:
                self.stderr.append(line)

    def poll_ready(self) -> bool:
        while not self.ready:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line == "READY":
                self.ready = True
        if self.proc.poll() is not None and not self.ready:
            raise RuntimeError(f"consumer exited early: {''.join(self.stderr)[-3000:]}")
        return self.ready

    def expect(self, total: int) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"EXPECT {total}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc.wait(5)
            raise RuntimeError(
                f"consumer exited {self.proc.returncode}: {''.join(self.stderr)[-3000:]}"
            ) from None

    def result(self, timeout: float) -> dict[str, Any]:
        import json

        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"consumer did not finish in {timeout}s") from None
        time.sleep(0.05)  # let the pump threads drain
        if self.proc.returncode != 0:
            raise RuntimeError(
                f"consumer exited {self.proc.returncode}: {''.join(self.stderr)[-3000:]}"
            )
        found: dict[str, Any] | None = None
        while not self.lines.empty():
            line = self.lines.get()
            if line.startswith("{"):
                found = json.loads(line)
        if found is None:
            raise RuntimeError(f"consumer printed no result: {''.join(self.stderr)[-3000:]}")
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(bootstrap: str, rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """Our worker, then the naive consumer, each alone under the same steady load."""
    ours = _measure("ours", bootstrap, rate, seconds, workdir)
    naive = _measure("naive", bootstrap, rate, seconds, workdir)
    return {
        "rate": rate,
        "seconds": seconds,
        "events": ours["events"],
        "achieved_rate": min(ours["achieved_rate"], naive["achieved_rate"]),
        "ours": ours["result"],
        "naive": naive["result"],
    }


def _measure(mode: str, bootstrap: str, rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    topic = f"{TOPIC}-{mode}-{run_id}"
    ensure_topics(bootstrap, {topic: 4, topic + "-dlq": 1, topic + "-model-events": 1})
    load_id = f"bench-latency-{run_id}"
    warm_id = f"bench-warmup-{run_id}"
    events = int(rate * seconds)
    deadline = 120 + events / 2000
    child = Child(
        [
            "--mode",
            mode,
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--group",
            f"bench-latency-{mode}-{run_id}",
            "--chdb",
            str(workdir / f"chdb-latency-{mode}-{run_id}"),
            "--expect",
            "stdin",
            "--deadline",
            str(deadline),
            "--latency-producer",
            load_id,
        ]
    )
    pool = make_calls(4096, seed=11)
    warm = AuditProducer(bootstrap, producer_id=warm_id, topic=topic)
    load = AuditProducer(bootstrap, producer_id=load_id, topic=topic)
    try:
        # Warm up until the consumer has joined its group and stored a row.
        give_up = time.monotonic() + 90
        i = 0
        while not child.poll_ready():
            if time.monotonic() > give_up:
                raise RuntimeError(f"{mode} consumer did not get ready within 90 s")
            log_call(warm, pool[i % 4096])
            i += 1
            warm.flush(1)
            time.sleep(0.05)
        time.sleep(1.5)  # let the warm-up batches settle before the measured load
        # The steady load: keep the count sent on schedule, in 1 ms steps.
        started = time.perf_counter()
        sent = 0
        while sent < events:
            due = min(events, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                log_call(load, pool[sent % 4096])
                sent += 1
            time.sleep(0.001)
        elapsed = time.perf_counter() - started
        undelivered = warm.flush(30) + load.flush(30)
        if undelivered or load.stats.dropped or load.stats.failed:
            raise RuntimeError(
                f"load not delivered: {undelivered} undelivered, {load.stats.dropped} dropped, "
                f"{load.stats.failed} failed"
            )
        child.expect(warm.stats.logged + load.stats.logged)
        result = child.result(deadline + 60)
    finally:
        child.kill()
        warm.close(10)
        load.close(10)
    if result["latency"]["events"] != events:
        raise RuntimeError(f"{mode}: {result['latency']['events']} of {events} load events stored")
    return {"events": events, "achieved_rate": events / elapsed, "result": result}
