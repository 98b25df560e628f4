"""What ``verify`` found (:class:`TrailReport`, per chain :class:`ChainReport`), printed for
people (text) or machines (JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from decision_audit.contract.reasons import ProblemKind


@dataclass
class Problem:
    kind: ProblemKind
    seq: int | None
    detail: str
    event_ids: list[str] = field(default_factory=list)


@dataclass
class ChainReport:
    producer_id: str
    producer_epoch: int
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    key_id: str | None = None
    checkpoints: int = 0
    attested_to: int = 0
    """highest seq vouched for by a valid checkpoint whose head matches the stored chain"""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class TrailReport:
    database: str
    keys_checked: bool
    chains: list[ChainReport]
    incremental: bool = False
    """only what arrived since the last recorded run was checked"""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.chains)

    @property
    def events(self) -> int:
        return sum(c.events for c in self.chains)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "database": self.database,
            "signatures_checked": self.keys_checked,
            "incremental": self.incremental,
            "events": self.events,
            "problems": sum(len(c.problems) for c in self.chains),
            "chains": [{**asdict(c), "ok": c.ok} for c in self.chains],
        }


def print_report(report: TrailReport, fmt: str, console: Console) -> None:
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    table = Table(title=f"Chains in {report.database}", title_justify="left")
    for col in (
        "producer",
        "epoch",
        "events",
        "seq range",
        "key",
        "checkpoints",
        "attested to",
        "status",
    ):
        table.add_column(col)
    for c in report.chains:
        table.add_row(
            c.producer_id,
            str(c.producer_epoch),
            str(c.events),
            f"{c.first_seq}..{c.last_seq}" if c.first_seq is not None else "-",
            c.key_id or "unsigned",
            str(c.checkpoints),
            str(c.attested_to) if report.keys_checked else "not checked",
            "[green]ok[/]" if c.ok else f"[red]{len(c.problems)} problem(s)[/]",
        )
    console.print(table)
    for c in report.chains:
        for p in c.problems:
            ids = f" events {', '.join(p.event_ids)}" if p.event_ids else ""
            console.print(
                f"[red]{p.kind}[/] {c.producer_id}/{c.producer_epoch} seq {p.seq}: {p.detail}{ids}"
            )
    if not report.keys_checked:
        console.print("[yellow]signatures not checked[/]: pass --keys DIR to verify checkpoints")
    problems = sum(len(c.problems) for c in report.chains)
    verdict = "[green]VERIFIED[/]" if report.ok else f"[red]FAILED[/] ({problems} problem(s))"
    since = " arrived since the last recorded run" if report.incremental else ""
    console.print(f"{verdict}: {report.events} events{since} in {len(report.chains)} chain(s)")
