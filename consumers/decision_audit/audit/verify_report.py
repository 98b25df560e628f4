"""Printing a :class:`.verify.TrailReport` for people (text) or machines (JSON)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from decision_audit.audit.verify import TrailReport


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
