"""Re-scoring one stored decision (decision_audit.audit.replay): the callable's contract, the
comparison with a tolerance, what is not replayable, and the errors that name the fix."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit.audit.replay import (
    STORED,
    ReplayError,
    Result,
    load_model,
    replay,
    replay_row,
    same,
    split_answer,
)
from decision_audit.cli.main import main
from decision_audit.contract.fields import DECISION_EVENT


def _row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "model_name": "credit",
        "model_version": "3",
        "occurred_at": datetime(2024, 5, 1, tzinfo=UTC),
        "request_id": "r-1",
        "inputs": json.dumps({"income": 50_000, "tenure": 3}),
        "prediction": "approve",
        "prediction_is_json": False,
        "status": "ok",
        "error_type": None,
        "score": 0.8,
        "redaction_policy": None,
    }
    return row | over


def _const(answer: Any) -> Any:
    return lambda inputs: answer


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory, holding the test's model modules (removed from sys.modules)."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def test_the_stored_fields_kept_per_decision_are_the_contracts() -> None:
    assert set(STORED) <= set(DECISION_EVENT.names)


def test_the_three_shapes_of_an_answer() -> None:
    assert split_answer("approve") == ("approve", None)
    assert split_answer(("approve", 0.8)) == ("approve", 0.8)
    assert split_answer({"prediction": "approve", "score": 1}) == ("approve", 1.0)
    assert split_answer({"prediction": {"a": 1}}) == ({"a": 1}, None)
    assert split_answer([1, 2]) == ([1, 2], None)  # a list is a prediction, not a pair


def test_numpy_values_are_the_python_values_they_hold() -> None:
    np = pytest.importorskip("numpy")
    assert split_answer((np.int64(1), np.float64(0.25))) == (1, 0.25)
    assert split_answer(np.array([0.5, 0.5])) == ([0.5, 0.5], None)
    label, _ = split_answer(np.array(["stay"])[0])
    assert type(label) is str and label == "stay"
    row = _row(prediction="stay", score=0.25)
    answer = (np.array(["stay"])[0], np.float64(0.25))
    assert replay_row(row, _const(answer), 0.0).result is Result.AGREE


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ((1, 2, 3), "tuple of 3"),
        ({"label": "x"}, "without 'prediction'"),
        (None, "no prediction"),
        (("x", "high"), "not a number"),
    ],
)
def test_an_answer_out_of_contract_is_refused(answer: Any, says: str) -> None:
    with pytest.raises(ReplayError, match=says):
        split_answer(answer)


def test_labels_exactly_numbers_within_the_tolerance() -> None:
    assert same("approve", "approve", 0.0)
    assert not same("approve", "Approve", 1.0)
    assert not same("1", 1, 1.0)  # a label is not a number
    assert same(0.5, 0.5 + 1e-9, 1e-6) and not same(0.5, 0.51, 1e-6)
    assert same(1, 1.0, 0.0)
    assert not same(True, 1, 1.0) and same(True, True, 0.0)
    assert same([0.1, "a"], (0.1 + 1e-9, "a"), 1e-6) and not same([0.1], [0.1, 0.2], 1.0)
    assert same({"p": 0.3}, {"p": 0.3 + 1e-9}, 1e-6) and not same({"p": 0.3}, {"q": 0.3}, 1.0)
    assert not same(float("nan"), float("nan"), 1.0)


def test_agree_and_differ_on_prediction_and_score() -> None:
    agree = replay_row(_row(), _const(("approve", 0.8 + 1e-9)), 1e-6)
    assert agree.result is Result.AGREE and agree.reason == ""
    score = replay_row(_row(), _const(("approve", 0.7)), 1e-6)
    assert score.result is Result.DIFFER and score.reason.startswith("score 0.8 → 0.7")
    pred = replay_row(_row(), _const({"prediction": "decline", "score": 0.8}), 1e-6)
    assert pred.result is Result.DIFFER and "prediction 'approve' → 'decline'" in pred.reason
    # A prediction alone: only predictions are compared; a stored score without one either.
    assert replay_row(_row(), _const("approve"), 0.0).result is Result.AGREE
    assert replay_row(_row(score=None), _const(("approve", 0.1)), 0.0).result is Result.AGREE


def test_a_json_prediction_is_decoded_before_comparing() -> None:
    row = _row(prediction="[0.2, 0.8]", prediction_is_json=True, score=None)
    assert replay_row(row, _const([0.2, 0.8 + 1e-9]), 1e-6).result is Result.AGREE
    assert replay_row(row, _const([0.8, 0.2]), 1e-6).result is Result.DIFFER


def test_the_model_is_called_with_the_stored_inputs_dict() -> None:
    seen: list[Any] = []

    def model(inputs: dict[str, Any]) -> str:
        seen.append(inputs)
        return "approve"

    replay_row(_row(), model, 0.0)
    assert seen == [{"income": 50_000, "tenure": 3}]


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"status": "error", "error_type": "TimeoutError", "prediction": None}, "status error"),
        ({"status": "fallback"}, "fallback, not the model"),
        ({"prediction": None}, "no stored prediction"),
        ({"redaction_policy": "credit-pii@3"}, "redacted at the source (policy credit-pii@3)"),
    ],
)
def test_failed_fallback_and_redacted_decisions_are_not_replayable(
    over: dict[str, Any], why: str
) -> None:
    def never(inputs: dict[str, Any]) -> str:
        raise AssertionError("a decision that is not replayable is not re-scored")

    out = replay_row(_row(**over), never, 0.0)
    assert out.result is Result.NOT_REPLAYABLE and why in out.reason


def test_a_run_is_ok_when_something_was_replayed_and_all_of_it_agrees() -> None:
    rows = [_row(), _row(redaction_policy="p@1")]
    run = replay(rows, _const("approve"), spec="m:f", selection="x")
    assert run.ok and run.summary() == {"agreed": 1, "differed": 0, "not_replayable": 1}
    assert not replay(rows[1:], _const("approve"), spec="m:f", selection="x").ok
    assert not replay(rows, _const("decline"), spec="m:f", selection="x").ok
    doc = replay(rows, _const("approve"), spec="m:f", selection="x").to_dict()
    assert json.loads(json.dumps(doc, default=str))["decisions"][0]["result"] == "agree"


def test_a_callable_that_raises_names_the_decision_and_the_contract() -> None:
    def broken(inputs: dict[str, Any]) -> str:
        raise KeyError("age")

    row = _row()
    with pytest.raises(ReplayError, match=f"raised KeyError: 'age' on decision {row['event_id']}"):
        replay_row(row, broken, 0.0)


def test_the_callable_is_imported_from_the_current_directory(model_dir: Path) -> None:
    (model_dir / "scoring_a.py").write_text(
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        return 'approve', 0.8\n"
        "model = Model()\n"
        "def predict(inputs):\n"
        "    return model.predict(inputs)\n"
    )
    assert load_model("scoring_a:predict")({}) == ("approve", 0.8)
    assert load_model("scoring_a:model.predict")({}) == ("approve", 0.8)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("scoring_b", "expected module:callable"),
        ("scoring_b:", "expected module:callable"),
        ("no_such_module_xyz:predict", "cannot import module 'no_such_module_xyz'"),
        ("scoring_b:nothing", "has no attribute 'nothing'"),
        ("scoring_b:THRESHOLD", "is a float, not a callable"),
        ("scoring_broken:predict", "importing 'scoring_broken' raised ZeroDivisionError"),
    ],
)
def test_a_callable_that_cannot_be_imported_is_a_clear_error(
    model_dir: Path, spec: str, says: str
) -> None:
    (model_dir / "scoring_b.py").write_text("THRESHOLD = 0.5\ndef predict(inputs):\n    return 1\n")
    (model_dir / "scoring_broken.py").write_text("1 / 0\n")
    with pytest.raises(ReplayError, match=says):
        load_model(spec)


def test_the_command_refuses_a_bad_model_before_opening_the_store(model_dir: Path) -> None:
    url = f"chdb://{model_dir / 'never-opened'}"
    r = CliRunner().invoke(main, ["replay", "--clickhouse-url", url, "--model", "nope:f", "P1"])
    assert r.exit_code == 2 and "cannot import module 'nope'" in r.output
    assert not (model_dir / "never-opened").exists()
    r = CliRunner().invoke(main, ["replay", "--model", "m:f"])
    assert r.exit_code == 2 and "exactly one of ID or --model-version" in r.output
    r = CliRunner().invoke(main, ["replay", "--model", "m:f", "--since", "2024-01-01", "P1"])
    assert r.exit_code == 2 and "go with --model-version" in r.output


def test_the_help_explains_the_callables_contract() -> None:
    r = CliRunner().invoke(main, ["replay", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for part in (
        "module:callable",
        "the dict log_decision was given",
        "(prediction, score) tuple",
        '"prediction" and optionally "score"',
        "--tolerance",
        "not replayable",
    ):
        assert part in text, part
