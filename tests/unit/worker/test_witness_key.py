"""A directory of witness keys shared by replicas: each worker claims its own
(decision_audit.worker.witness.claim_key), and the settings load every key in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from decision_audit.producer.signing import generate_keypair
from decision_audit.worker import witness
from decision_audit.worker.settings import WorkerSettings


@pytest.fixture(autouse=True)
def release() -> Iterator[None]:
    yield
    while witness._claimed:
        witness._claimed.pop().close()  # closing the file releases its lock


def test_each_claim_takes_a_key_no_one_holds_and_a_closed_worker_frees_it(tmp_path: Path) -> None:
    for n in (1, 2):
        generate_keypair(tmp_path, f"worker-{n}")
    first, second = witness.claim_key(tmp_path), witness.claim_key(tmp_path)
    assert (first.key_id, second.key_id) == ("worker-1", "worker-2")
    with pytest.raises(RuntimeError, match="held by another worker; add one key per worker"):
        witness.claim_key(tmp_path)
    witness._claimed.pop(0).close()  # the worker holding worker-1 exits
    assert witness.claim_key(tmp_path).key_id == "worker-1"


def test_a_key_file_is_used_as_it_is(tmp_path: Path) -> None:
    private, _ = generate_keypair(tmp_path, "worker-a")
    assert witness.claim_key(private).key_id == witness.claim_key(private).key_id == "worker-a"


def test_settings_load_every_key_of_a_directory_and_refuse_an_empty_one(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys", "worker-1")
    base = {"bootstrap_servers": "localhost:9092", "clickhouse_url": "chdb:///tmp/x"}
    assert WorkerSettings(**base, witness_key=tmp_path / "keys").witness_key == tmp_path / "keys"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match=r"no \*\.key files"):
        WorkerSettings(**base, witness_key=tmp_path / "empty")
    (tmp_path / "keys" / "worker-2.key").write_text("not a key")
    with pytest.raises(ValidationError, match="worker-2"):
        WorkerSettings(**base, witness_key=tmp_path / "keys")
