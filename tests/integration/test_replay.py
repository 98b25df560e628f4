"""``decision-audit replay`` on the real pipeline: a scikit-learn model trained here scores
decisions that travel the broker and the worker into chDB; replaying them with the same
model agrees, with a deliberately changed one shows the differences, and every run is
recorded in the replays table. Failed and redacted decisions are not replayable."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer
from decision_audit.cli.main import main
from decision_audit.producer.redaction import RedactionPolicy, RedactionRule
from decision_audit.worker.settings import WorkerSettings
from tests.helpers import Broker, run_worker

pytestmark = pytest.mark.integration

np = pytest.importorskip("numpy")
linear_model = pytest.importorskip("sklearn.linear_model")

FEATURES = ("income", "tenure")
THRESHOLD = 0.5

SCORING = f"""
import pickle
from pathlib import Path

FEATURES = {FEATURES!r}
HERE = Path(__file__).parent
MODELS = {{name: pickle.loads((HERE / f"{{name}}.pkl").read_bytes()) for name in ("v1", "v2")}}


def _score(model, inputs, threshold):
    x = [[float(inputs[f]) for f in FEATURES]]
    p = float(model.predict_proba(x)[0, 1])
    return ("approve" if p >= threshold else "decline"), p


def predict(inputs):
    return _score(MODELS["v1"], inputs, {THRESHOLD})


def predict_changed(inputs):
    return _score(MODELS["v2"], inputs, 0.3)


def label_only(inputs):
    return {{"prediction": _score(MODELS["v1"], inputs, {THRESHOLD})[0]}}
"""
"""the serving code's scoring, as the module ``--model`` names (``scoring:predict``)"""


def _train(tmp_path: Path) -> Any:
    """A logistic regression on a synthetic credit set, pickled with a changed copy (its
    coefficients moved) beside the scoring module in ``tmp_path``."""
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.normal(50, 15, 400), rng.integers(0, 20, 400)])
    y = (0.08 * x[:, 0] + 0.3 * x[:, 1] - 5.5 + rng.normal(0, 1, 400) > 0).astype(int)
    model = linear_model.LogisticRegression().fit(x, y)
    changed = pickle.loads(pickle.dumps(model))
    changed.coef_ = model.coef_ * np.array([[1.4, 0.5]])
    changed.intercept_ = model.intercept_ - 0.4
    (tmp_path / "v1.pkl").write_bytes(pickle.dumps(model))
    (tmp_path / "v2.pkl").write_bytes(pickle.dumps(changed))
    (tmp_path / "scoring.py").write_text(SCORING)
    return model


def _cli(chdb_dir: Path, db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["replay", "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, *args]
    )
    return result.exit_code, result.output


def test_replay_agrees_with_the_model_and_shows_a_changed_ones_differences(
    broker: Broker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    worker_settings: WorkerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _train(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DECISION_AUDIT_ACTOR", "auditor.kim")
    rng = np.random.default_rng(11)
    applicants = [
        {"income": round(float(i), 2), "tenure": int(t), "name": f"applicant {n}"}
        for n, (i, t) in enumerate(
            zip(rng.normal(50, 15, 12), rng.integers(0, 20, 12), strict=True)
        )
    ]
    s = worker_settings
    serving = AuditProducer(
        s.bootstrap_servers, producer_id=f"svc-{uuid.uuid4().hex[:6]}", topic=s.topic
    )
    ids = []
    with serving as p:
        for i, a in enumerate(applicants):
            proba = float(model.predict_proba([[a["income"], a["tenure"]]])[0, 1])
            label = "approve" if proba >= THRESHOLD else "decline"
            ids.append(p.log_decision("credit", "1", a, label, score=proba, request_id=f"r{i}"))
        failed = p.log_decision(
            "credit", "1", {"income": None, "tenure": 2}, error=ValueError("income missing")
        )
    policy = RedactionPolicy(
        id="credit-pii", version=3, rules=(RedactionRule(path="name", action="mask"),)
    )
    redacting = AuditProducer(
        s.bootstrap_servers,
        producer_id=f"svc-{uuid.uuid4().hex[:6]}",
        topic=s.topic,
        redaction=policy,
        redaction_secret=b"k" * 32,
    )
    with redacting as p:
        a = applicants[0]
        redacted = p.log_decision("credit", "1", a, "approve", score=0.9, request_id="r-red")
    assert run_worker(s, ch).quarantined_total == 0

    # The same model: every replayable decision agrees; the failed and the redacted one are
    # reported as not replayable, not as differences.
    code, out = _cli(
        chdb_dir,
        database,
        "--model",
        "scoring:predict",
        "--model-version",
        "credit@1",
        "--format",
        "json",
    )
    assert code == 0, out
    run = json.loads(out)
    assert (run["agreed"], run["differed"], run["not_replayable"]) == (12, 0, 2), out
    assert run["ok"] and run["recorded"]
    by_id = {d["event_id"]: d for d in run["decisions"]}
    assert set(by_id) == {*ids, failed, redacted}
    assert "status error (ValueError)" in by_id[failed]["reason"]
    assert "redacted at the source (policy credit-pii@3)" in by_id[redacted]["reason"]
    first = by_id[ids[0]]
    assert first["replayed_prediction"] == first["prediction"]
    assert first["replayed_score"] == pytest.approx(first["score"], abs=1e-6)

    # A changed model: the differences are shown, exit 1.
    code, out = _cli(
        chdb_dir,
        database,
        "--model",
        "scoring:predict_changed",
        "--model-version",
        "credit@1",
        "--format",
        "json",
    )
    assert code == 1, out
    changed = json.loads(out)
    assert changed["differed"] >= 1 and not changed["ok"], out
    differing = [d for d in changed["decisions"] if d["result"] == "differ"]
    assert all("score" in d["reason"] for d in differing)
    assert any("prediction" in d["reason"] for d in differing), "the threshold moved labels"
    code, out = _cli(chdb_dir, database, "--model", "scoring:predict_changed", "r3")
    assert code == 1 and "differ" in out and "1 differ" in " ".join(out.split()), out

    # One decision by its request id, as a table; a callable giving only the label.
    code, out = _cli(chdb_dir, database, "--model", "scoring:label_only", "r3")
    assert code == 0, out
    assert "1 agree, 0 differ, 0 not replayable" in " ".join(out.split())
    code, out = _cli(chdb_dir, database, "--model", "scoring:predict", "r-red")
    assert code == 1 and "not replayable" in out, out  # nothing could be replayed

    # Every run is recorded: who, the callable, the counts, per decision stored vs replayed.
    runs = ch.query(
        f"SELECT model, selection, actor, agreed, differed, not_replayable, ok "
        f"FROM {database}.replays ORDER BY started_at"
    ).result_rows
    assert [r[0] for r in runs] == [
        "scoring:predict",
        "scoring:predict_changed",
        "scoring:predict_changed",
        "scoring:label_only",
        "scoring:predict",
    ]
    assert runs[0][1:] == ("model_version credit@1 limit 100", "auditor.kim", 12, 0, 2, True)
    assert runs[1][4] == changed["differed"] and runs[1][6] is False
    rows = ch.query(
        "SELECT toString(decisions.event_id), decisions.result, decisions.prediction, "
        "decisions.replayed_prediction, decisions.score, decisions.replayed_score "
        f"FROM {database}.replays ARRAY JOIN decisions WHERE replay_id = {{id:UUID}}",
        parameters={"id": changed["replay_id"]},
    ).result_rows
    stored = {r[0]: r for r in rows}
    assert len(stored) == 14
    d = differing[0]
    assert stored[d["event_id"]][1:] == (
        "differ",
        d["prediction"],
        d["replayed_prediction"],
        d["score"],
        d["replayed_score"],
    )
    assert stored[failed][1:4] == ("not_replayable", None, None)
    logged = ch.query(
        f"SELECT status FROM {database}.access_log WHERE command = 'replay' ORDER BY accessed_at"
    ).result_rows
    assert [r[0] for r in logged] == ["ok", "differ", "differ", "ok", "none_replayed"]


def test_a_model_that_raises_is_a_usage_error_naming_the_decision(
    broker: Broker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    worker_settings: WorkerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "strict.py").write_text("def predict(inputs):\n    return inputs['age'] > 18\n")
    monkeypatch.chdir(tmp_path)
    s = worker_settings
    with AuditProducer(s.bootstrap_servers, producer_id="svc-x", topic=s.topic) as p:
        eid = p.log_decision("credit", "1", {"income": 1}, "approve", request_id="r1")
    run_worker(s, ch)
    code, out = _cli(chdb_dir, database, "--model", "strict:predict", "r1")
    assert code == 2, out
    assert f"raised KeyError: 'age' on decision {eid}" in " ".join(out.split())
    code, out = _cli(chdb_dir, database, "--model", "strict:predict", "nobody")
    assert code == 1 and "no decision matches nobody" in out
