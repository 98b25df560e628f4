"""Re-hashing one artifact (decision_audit.audit.reconcile): paths, file:// URLs, the states."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from decision_audit.audit.reconcile import ARTIFACT_ACTIONS, ArtifactCheck, _check


def _check_of(uri: str | None, sha: str | None) -> ArtifactCheck:
    c = ArtifactCheck("e", datetime.now(UTC), "register", "model_version:m@1", "a", uri, sha)
    _check(c)
    return c


def test_the_actions_that_may_name_an_artifact_come_from_the_contract() -> None:
    assert set(ARTIFACT_ACTIONS) == {"register", "train", "data_snapshot", "attest"}


def test_a_path_and_a_file_url_are_rehashed(tmp_path: Path) -> None:
    f = tmp_path / "model with space.bin"
    f.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    for uri in (str(f), f.as_uri()):
        c = _check_of(uri, sha)
        assert (c.status, c.actual_sha256) == ("ok", sha), uri
    c = _check_of(f.as_uri(), "0" * 64)
    assert c.status == "mismatch" and c.actual_sha256 == sha


def test_missing_unreadable_and_unchecked(tmp_path: Path) -> None:
    assert _check_of(str(tmp_path / "gone"), "0" * 64).status == "missing"
    assert _check_of(str(tmp_path), "0" * 64).status == "unreadable"  # a directory
    assert _check_of(None, "0" * 64).status == "unlocated"
    assert _check_of(str(tmp_path / "gone"), None).status == "no_digest"


def test_other_urls_need_fsspec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed: import fails
    c = _check_of("s3://bucket/model.bin", "0" * 64)
    assert c.status == "unsupported" and "needs fsspec" in c.detail


@pytest.mark.skipif(importlib.util.find_spec("fsspec") is None, reason="fsspec not installed")
def test_a_scheme_fsspec_has_no_driver_for_is_unsupported() -> None:
    for uri in ("nodriver://bucket/model.bin", "s3://bucket/model.bin"):  # s3 needs s3fs
        c = _check_of(uri, "0" * 64)
        assert c.status == "unsupported" and "fsspec cannot open" in c.detail, uri
