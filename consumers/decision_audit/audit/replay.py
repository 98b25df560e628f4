"""``decision-audit replay``: re-score stored decisions with a model and compare.

The model is one callable named like an ASGI app string, ``module:callable`` (``module`` is
imported with the current directory on ``sys.path``; ``callable`` may be a dotted attribute
path, ``pkg.scoring:model.predict``). It is called once per decision with one argument, the
decision's stored inputs: the ``dict`` that ``log_decision`` was given, decoded from the JSON
text in ``decisions.inputs``. It returns one of

* the prediction alone (a label, a number, a bool, a list): only predictions are compared;
* a ``(prediction, score)`` tuple of two;
* a mapping with the key ``prediction`` and optionally ``score`` (a dict prediction must be
  returned this way).

NumPy scalars and arrays are taken as the Python values they hold (``.tolist()``). Labels
compare as text, exactly; numbers (in predictions and scores) agree within an absolute
``tolerance``; a score is compared when both the stored decision and the replay have one.

Decisions that cannot be replayed are reported as such, never as differences: a failed or
refused inference or a fallback answer (``status`` other than ``ok``: the model did not give
the stored answer), a decision without a prediction, and inputs redacted at the source (a
``redaction_policy`` is recorded: dropped, masked, hashed or encrypted fields are not the
values the model saw, and a dropped one leaves no mark to tell).

Each run is recorded in ``{database}.replays`` (migration 0011): who, when, the callable, the
selection, the counts and per decision the stored and replayed prediction and score.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import socket
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from decision_audit.audit.access_log import AccessSettings, os_user
from decision_audit.audit.lookup import ident_condition, ident_parameters
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.fields import DECISION_EVENT
from decision_audit.contract.models import decode_value, encode_value

log = logging.getLogger("decision_audit.replay")

DEFAULT_TOLERANCE = 1e-6
DEFAULT_LIMIT = 100

STORED = tuple(
    DECISION_EVENT.field(name).name
    for name in ("event_id", "model_name", "model_version", "prediction", "score")
)
"""the decision's fields each replayed decision keeps in ``replays.decisions`` by name"""
REPLAYED = ("prediction", "score")
"""compared with what the callable answered (``replays.decisions.replayed_<name>``)"""
_READ = (
    *STORED,
    *(
        DECISION_EVENT.field(n).name
        for n in (
            "occurred_at",
            "request_id",
            "inputs",
            "prediction_is_json",
            "status",
            "error_type",
            "redaction_policy",
        )
    ),
)
"""the columns of ``decisions`` a replay reads"""

Model = Callable[[dict[str, Any]], Any]


class ReplayError(DecisionAuditError, ValueError):
    """The ``--model`` callable cannot be imported, or it raised or answered out of contract
    (a usage error: the fix is in the callable or the command)."""


class Result(StrEnum):
    AGREE = "agree"
    DIFFER = "differ"
    NOT_REPLAYABLE = "not_replayable"


@dataclass
class Replayed:
    """One decision: what was stored, what the callable answered, and the verdict."""

    event_id: str
    model_name: str
    model_version: str
    occurred_at: datetime
    request_id: str | None
    result: Result
    reason: str
    prediction: Any
    score: float | None
    replayed_prediction: Any = None
    replayed_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": str(self.result)}


@dataclass
class ReplayRun:
    """A replay's selection, tolerance and per-decision results."""

    model: str
    selection: str
    tolerance: float
    started_at: datetime
    decisions: list[Replayed] = field(default_factory=list)
    replay_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    recorded: bool = False

    def count(self, result: Result) -> int:
        return sum(1 for d in self.decisions if d.result is result)

    @property
    def ok(self) -> bool:
        """Something was replayed and every replayed decision agrees."""
        return self.count(Result.AGREE) > 0 and self.count(Result.DIFFER) == 0

    def summary(self) -> dict[str, int]:
        return {
            "agreed": self.count(Result.AGREE),
            "differed": self.count(Result.DIFFER),
            "not_replayable": self.count(Result.NOT_REPLAYABLE),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "model": self.model,
            "selection": self.selection,
            "tolerance": self.tolerance,
            "ok": self.ok,
            **self.summary(),
            "recorded": self.recorded,
            "decisions": [d.to_dict() for d in self.decisions],
        }


# -- the callable ----------------------------------------------------------------------------


def load_model(spec: str) -> Model:
    """The callable ``module:attr[.attr…]`` names, imported with the current directory on
    ``sys.path``; raises :class:`ReplayError` naming the fix."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ReplayError(
            f"--model {spec!r}: expected module:callable, e.g. scoring:predict "
            "(a function predict in scoring.py of the current directory)"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module written since the interpreter started
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ReplayError(
            f"--model {spec!r}: cannot import module {module_name!r} ({exc}); run from the "
            "directory that holds it, or install it or add its folder to PYTHONPATH"
        ) from None
    except Exception as exc:
        raise ReplayError(
            f"--model {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ReplayError(
                f"--model {spec!r}: {module_name} has no attribute {attr!r}; name a function "
                "(or another callable) defined in it"
            ) from None
    if not callable(obj):
        raise ReplayError(
            f"--model {spec!r}: {attr} is a {type(obj).__name__}, not a callable; name a "
            "function that takes the inputs dict"
        )
    model: Model = obj
    return model


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as the Python values they hold; everything else as is."""
    if isinstance(value, str):
        return str(value)  # numpy.str_ too
    if not isinstance(value, bytes) and hasattr(value, "tolist"):
        return value.tolist()
    return value


def split_answer(answer: Any) -> tuple[Any, float | None]:
    """The callable's answer as ``(prediction, score)``; raises :class:`ReplayError` when it
    is out of contract."""
    answer = _plain(answer)
    score: Any = None
    if isinstance(answer, tuple):
        if len(answer) != 2:
            raise ReplayError(
                f"the callable returned a tuple of {len(answer)}: return the prediction, a "
                "(prediction, score) pair or a dict with 'prediction' and 'score'"
            )
        prediction, score = answer
    elif isinstance(answer, Mapping):
        if "prediction" not in answer:
            raise ReplayError(
                f"the callable returned a mapping without 'prediction' (keys: "
                f"{', '.join(map(str, answer)) or 'none'}): return "
                "{'prediction': …, 'score': …} (a dict prediction goes under 'prediction')"
            )
        prediction, score = answer["prediction"], answer.get("score")
    else:
        prediction = answer
    prediction, score = _plain(prediction), _plain(score)
    if prediction is None:
        raise ReplayError("the callable returned no prediction (None)")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ReplayError(
                f"the callable's score is a {type(score).__name__}, not a number: return a "
                "float score (or none)"
            )
        score = float(score)
    return prediction, score


# -- the comparison ----------------------------------------------------------------------------


def same(stored: Any, replayed: Any, tolerance: float) -> bool:
    """Equal predictions: labels and booleans exactly, numbers within ``tolerance``
    (absolute), lists element by element and mappings key by key under the same rules."""
    if isinstance(stored, bool) or isinstance(replayed, bool):
        return type(stored) is type(replayed) and stored == replayed
    if isinstance(stored, int | float) and isinstance(replayed, int | float):
        return close(float(stored), float(replayed), tolerance)
    if isinstance(stored, list) and isinstance(replayed, list | tuple):
        return len(stored) == len(replayed) and all(
            same(a, b, tolerance) for a, b in zip(stored, replayed, strict=True)
        )
    if isinstance(stored, dict) and isinstance(replayed, Mapping):
        return set(stored) == set(replayed) and all(
            same(stored[k], replayed[k], tolerance) for k in stored
        )
    return type(stored) is type(replayed) and bool(stored == replayed)


def close(a: float, b: float, tolerance: float) -> bool:
    """``|a - b| <= tolerance`` (NaN agrees with nothing)."""
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance


def not_replayable(row: Mapping[str, Any]) -> str | None:
    """Why the stored decision cannot be re-scored (None when it can)."""
    status = row["status"]
    if status != "ok":
        error = f" ({row['error_type']})" if row.get("error_type") else ""
        if status == "fallback":
            return "status fallback: the stored answer came from a fallback, not the model"
        return f"status {status}{error}: the inference did not give a prediction to compare"
    if row["prediction"] is None:
        return "no stored prediction"
    if row.get("redaction_policy"):
        return (
            f"inputs redacted at the source (policy {row['redaction_policy']}): dropped, "
            "masked, hashed or encrypted fields are not the values the model saw"
        )
    try:
        inputs = json.loads(row["inputs"])
    except ValueError:
        return "stored inputs are not JSON"
    if not isinstance(inputs, dict):
        return "stored inputs are not a JSON object"
    return None


def replay_row(row: Mapping[str, Any], model: Model, tolerance: float) -> Replayed:
    """Re-score one stored decision row (the :data:`_READ` columns) and compare."""
    stored = decode_value(row["prediction"], bool(row["prediction_is_json"]))
    out = Replayed(
        str(row["event_id"]),
        str(row["model_name"]),
        str(row["model_version"]),
        row["occurred_at"],
        row["request_id"],
        Result.NOT_REPLAYABLE,
        "",
        stored,
        row["score"],
    )
    why = not_replayable(row)
    if why is not None:
        out.reason = why
        return out
    try:
        answer = model(json.loads(row["inputs"]))
    except Exception as exc:
        raise ReplayError(
            f"the callable raised {type(exc).__name__}: {exc} on decision {out.event_id} "
            "(it is called with the decision's stored inputs, a dict as given to "
            "log_decision; see `decision-audit replay --help`)"
        ) from None
    try:
        out.replayed_prediction, out.replayed_score = split_answer(answer)
    except ReplayError as exc:
        raise ReplayError(f"{exc} (decision {out.event_id})") from None
    problems = []
    if not same(stored, out.replayed_prediction, tolerance):
        problems.append(f"prediction {stored!r} → {out.replayed_prediction!r}")
    if (
        out.score is not None
        and out.replayed_score is not None
        and not close(out.score, out.replayed_score, tolerance)
    ):
        problems.append(
            f"score {out.score:g} → {out.replayed_score:g} "
            f"(|Δ| {abs(out.score - out.replayed_score):.3g} > {tolerance:g})"
        )
    out.result = Result.DIFFER if problems else Result.AGREE
    out.reason = "; ".join(problems)
    return out


# -- the store ----------------------------------------------------------------------------


def select_decisions(
    client: Any,
    database: str,
    *,
    ident: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """The stored decisions to replay, oldest first: the one ``ident`` names (event id,
    request id or ``tags['prediction_id']``, as ``trace`` finds it; every match), or those of
    ``model_version`` (``name@version``) in ``[since, until)`` — the first ``limit`` from
    ``since``, or the latest ``limit`` without it."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if ident is not None:
        params |= ident_parameters(ident)
        where.append(ident_condition(database))
    if model_version is not None:
        name, _, version = model_version.rpartition("@")
        params |= {"name": name, "version": version}
        where.append("model_name = {name:String} AND model_version = {version:String}")
    if since is not None:
        params["since"] = since
        where.append("occurred_at >= {since:DateTime64(3, 'UTC')}")
    if until is not None:
        params["until"] = until
        where.append("occurred_at < {until:DateTime64(3, 'UTC')}")
    order = "ASC" if since is not None else "DESC"
    result = client.query(
        f"SELECT {', '.join(_READ)} FROM {database}.decisions FINAL "
        f"WHERE {' AND '.join(where) or '1'} "
        f"ORDER BY occurred_at {order}, event_id {order} LIMIT {int(limit)}",
        parameters=params,
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    return sorted(rows, key=lambda r: (r["occurred_at"], str(r["event_id"])))


def replay(
    rows: Sequence[Mapping[str, Any]],
    model: Model,
    *,
    spec: str,
    selection: str,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ReplayRun:
    """Re-score ``rows`` with ``model`` (named ``spec``); raises :class:`ReplayError` when the
    callable raises or answers out of contract."""
    run = ReplayRun(spec, selection, tolerance, datetime.now(UTC))
    run.decisions = [replay_row(r, model, tolerance) for r in rows]
    return run


def _text(value: Any) -> str | None:
    return None if value is None else encode_value(value, "prediction")


def record_replay(client: Any, database: str, run: ReplayRun, *, actor: str | None = None) -> bool:
    """Append ``run`` to ``{database}.replays``; False (and a warning) if it cannot be: an
    account without INSERT on it still sees the replay, as with ``access_log``."""
    nested: dict[str, list[Any]] = {
        "event_id": [d.event_id for d in run.decisions],
        "model_name": [d.model_name for d in run.decisions],
        "model_version": [d.model_version for d in run.decisions],
        "result": [str(d.result) for d in run.decisions],
        "reason": [d.reason for d in run.decisions],
        "prediction": [_text(d.prediction) for d in run.decisions],
        "replayed_prediction": [_text(d.replayed_prediction) for d in run.decisions],
        "score": [d.score for d in run.decisions],
        "replayed_score": [d.replayed_score for d in run.decisions],
    }
    counts = run.summary()
    values = {
        "replay_id": uuid.UUID(run.replay_id),
        "started_at": run.started_at,
        "finished_at": datetime.now(UTC),
        "actor": actor or AccessSettings().actor,
        "os_user": os_user(),
        "host": socket.gethostname(),
        "model": run.model,
        "selection": run.selection,
        "tolerance": run.tolerance,
        "ok": run.ok,
        **counts,
        **{f"decisions.{k}": v for k, v in nested.items()},
    }
    try:
        client.insert(
            f"{database}.replays",
            [list(values.values())],
            column_names=list(values),
            settings={"async_insert": 0},
        )
    except Exception as exc:
        log.warning("replay not recorded in %s.replays: %s", database, exc)
        return False
    run.recorded = True
    return True


# -- output ----------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def print_replay(run: ReplayRun, fmt: str, console: Any, database: str) -> None:
    """Print the run for people (``table``: one row per decision, then why each one that
    does not agree) or machines (``json``)."""
    if fmt == "json":
        print(json.dumps(run.to_dict(), indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"replay of {run.selection} with {run.model}")
    table.add_column("decision", overflow="fold")
    for col in ("model", "stored", "replayed", "score", "replayed score"):
        table.add_column(col)
    table.add_column("result", no_wrap=True)
    style = {Result.AGREE: "green", Result.DIFFER: "red", Result.NOT_REPLAYABLE: "yellow"}
    for d in run.decisions:
        table.add_row(
            d.request_id or d.event_id,
            f"{d.model_name}@{d.model_version}",
            _show(d.prediction),
            _show(d.replayed_prediction),
            _show(d.score),
            _show(d.replayed_score),
            f"[{style[d.result]}]{str(d.result).replace('_', ' ')}[/]",
        )
    console.print(table)
    for d in run.decisions:
        if d.reason:
            request = f" (request {d.request_id})" if d.request_id else ""
            console.print(f"{d.event_id}{request}: {d.reason}", highlight=False)
    c = run.summary()
    where = (
        f"recorded as replay {run.replay_id} in {database}.replays"
        if run.recorded
        else f"NOT recorded in {database}.replays"
    )
    console.print(
        f"{c['agreed']} agree, {c['differed']} differ, {c['not_replayable']} not replayable "
        f"(tolerance {run.tolerance:g}); {where}",
        highlight=False,
    )
