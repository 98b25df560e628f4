"""``decision-audit reconcile``: are the artifacts the trail names still what it recorded?

Re-hashes every artifact a lifecycle event names (``artifact_uri`` and ``artifact_sha256``
in its metadata: register, train, data_snapshot and attest events, as
:data:`decision_audit.contract.lineage.ACTION_DETAILS` declares) and compares the SHA-256
with the recorded one (seed 003, step 7). Local paths and ``file://`` URLs are read
directly; other URLs through fsspec when it is installed (it is not a dependency). A
mismatch and a missing artifact are each written to ``audit.incidents``
(``artifact_mismatch``, ``artifact_missing``) about the event's chain and seq, so a rerun
replaces rather than repeats them; the report says what was checked and what could not be.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from decision_audit.audit.output import render
from decision_audit.clickhouse.tables import INCIDENT_COLUMNS
from decision_audit.contract.lineage import ACTION_DETAILS
from decision_audit.contract.reasons import IncidentKind

ARTIFACT_ACTIONS = tuple(
    action
    for action, details in ACTION_DETAILS.items()
    if any(d.name == "artifact_uri" for d in details)
)
"""the lifecycle actions whose details may name an artifact"""
CHUNK = 1 << 20

OK, MISMATCH, MISSING = "ok", "mismatch", "missing"
UNREADABLE, UNSUPPORTED, UNLOCATED, NO_DIGEST = (
    "unreadable",
    "unsupported",
    "unlocated",
    "no_digest",
)
FAILED = (MISMATCH, MISSING, UNREADABLE)
"""statuses that make the reconcile fail (exit 1)"""
INCIDENT_OF = {MISMATCH: IncidentKind.ARTIFACT_MISMATCH, MISSING: IncidentKind.ARTIFACT_MISSING}


class Unsupported(Exception):
    """The URL's scheme cannot be read here (no fsspec, or no fsspec driver for it)."""


@dataclass
class ArtifactCheck:
    """One artifact named by one lifecycle event, and what re-hashing it found."""

    event_id: str
    occurred_at: datetime
    action: str
    subject: str
    actor: str
    uri: str | None
    recorded_sha256: str | None
    actual_sha256: str | None = None
    status: str = OK
    """ok, mismatch, missing, unreadable; not checked: unsupported, unlocated (no
    artifact_uri), no_digest (no artifact_sha256)"""
    detail: str = ""
    producer_id: str = ""
    producer_epoch: int = 0
    seq: int = 0
    partition: int = 0
    offset: int = 0


@dataclass
class Reconciliation:
    """What ``reconcile`` checked and found."""

    checks: list[ArtifactCheck] = field(default_factory=list)
    incidents_recorded: int = 0
    record_error: str | None = None
    """why the incidents could not be written (e.g. an account without INSERT)"""

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.record_error is None and not any(c.status in FAILED for c in self.checks)

    def summary(self) -> dict[str, int]:
        statuses = (OK, MISMATCH, MISSING, UNREADABLE, UNSUPPORTED, UNLOCATED, NO_DIGEST)
        return {s: n for s in statuses if (n := self.count(s))}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": sum(c.status in (OK, *FAILED) for c in self.checks),
            "summary": self.summary(),
            "incidents_recorded": self.incidents_recorded,
            "record_error": self.record_error,
            "artifacts": [asdict(c) for c in self.checks],
        }


def reconcile(client: Any, database: str, *, record: bool = True) -> Reconciliation:
    """Re-hash every artifact the stored lifecycle events name; with ``record``, write each
    mismatch and missing artifact to ``{database}.incidents``."""
    rows = client.query(
        "SELECT toString(event_id), occurred_at, action, subject_type, subject_id, actor, "
        "metadata, producer_id, producer_epoch, seq, kafka_partition, kafka_offset "
        f"FROM {database}.model_events FINAL WHERE action IN {{a:Array(String)}} "
        "ORDER BY occurred_at, producer_id, seq",
        parameters={"a": list(ARTIFACT_ACTIONS)},
    ).result_rows
    out = Reconciliation()
    for eid, ts, action, st, sid, actor, meta, pid, epoch, seq, part, off in rows:
        m = json.loads(meta)
        uri, digest = m.get("artifact_uri"), m.get("artifact_sha256")
        if not uri and not digest:
            continue
        c = ArtifactCheck(
            str(eid), ts, str(action), f"{st}:{sid}", str(actor), uri or None, digest or None
        )
        c.producer_id, c.producer_epoch, c.seq = str(pid), int(epoch), int(seq)
        c.partition, c.offset = int(part), int(off)
        _check(c)
        out.checks.append(c)
    incidents = [_incident(c) for c in out.checks if c.status in INCIDENT_OF]
    if record and incidents:
        try:
            client.insert(f"{database}.incidents", incidents, column_names=list(INCIDENT_COLUMNS))
        except Exception as exc:
            out.record_error = f"incidents not recorded in {database}.incidents: {exc}"
        else:
            out.incidents_recorded = len(incidents)
    return out


def _check(c: ArtifactCheck) -> None:
    if not c.uri:
        c.status, c.detail = UNLOCATED, "the event records no artifact_uri: nothing to re-hash"
        return
    if not c.recorded_sha256:
        c.status, c.detail = NO_DIGEST, "the event records no artifact_sha256 to compare with"
        return
    try:
        with _open(c.uri) as f:
            h = hashlib.sha256()
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except Unsupported as exc:
        c.status, c.detail = UNSUPPORTED, str(exc)
        return
    except FileNotFoundError:
        c.status, c.detail = MISSING, f"{c.uri} does not exist"
        return
    except (OSError, ValueError) as exc:  # a directory, no permission, a broken URL
        c.status, c.detail = UNREADABLE, f"{c.uri} cannot be read: {exc}"
        return
    c.actual_sha256 = h.hexdigest()
    if c.actual_sha256 != c.recorded_sha256:
        c.status = MISMATCH
        c.detail = f"sha256 {c.actual_sha256}, the event recorded {c.recorded_sha256}"
    else:
        c.detail = "sha256 matches"


@contextmanager
def _open(uri: str) -> Iterator[IO[bytes]]:
    """Open a local path, a ``file://`` URL, or (with fsspec) another URL, for reading."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        path = Path(url2pathname(parsed.path))
    elif parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
        path = Path(uri)  # a plain path (or a Windows drive letter)
    else:
        try:
            fsspec: Any = importlib.import_module("fsspec")
        except ImportError:
            raise Unsupported(
                f"{parsed.scheme}:// needs fsspec (pip install fsspec and its driver)"
            ) from None
        try:
            opened = fsspec.open(uri, "rb")
        except (ImportError, ValueError) as exc:
            raise Unsupported(f"fsspec cannot open {parsed.scheme}:// here: {exc}") from None
        with opened as f:
            yield f
        return
    with path.open("rb") as f:
        yield f


def _incident(c: ArtifactCheck) -> list[Any]:
    """The ``incidents`` row of a failed check, about the event's chain and seq."""
    what = f"{c.action} event {c.event_id} about {c.subject} (by {c.actor!r}): artifact {c.uri}"
    if c.status == MISMATCH:
        detail = f"{what} has sha256 {c.actual_sha256}, the event recorded {c.recorded_sha256}"
    else:
        detail = f"{what} is missing (recorded sha256 {c.recorded_sha256})"
    return [
        INCIDENT_OF[c.status],
        c.producer_id,
        c.producer_epoch,
        c.seq,
        c.seq,
        detail,
        c.partition,
        c.offset,
    ]


def print_reconciliation(r: Reconciliation, fmt: str, console: Any) -> None:
    """Print what was checked for people (``table``) or machines (``json``)."""
    if fmt == "json":
        print(json.dumps(r.to_dict(), indent=2, default=str))
        return
    render(
        ("status", "action", "subject", "artifact", "detail"),
        [(c.status, c.action, c.subject, c.uri or "-", c.detail) for c in r.checks],
        "table",
        console,
        title="Artifacts named by lifecycle events",
    )
    counts = ", ".join(f"{n} {s}" for s, n in r.summary().items()) or "no artifact named"
    console.print(f"{len(r.checks)} artifact(s): {counts}")
    if r.incidents_recorded:
        console.print(f"[yellow]{r.incidents_recorded} incident(s) recorded[/]")
    if r.record_error:
        console.print(f"[red]{r.record_error}[/]")
