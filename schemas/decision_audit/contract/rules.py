"""Value rules that producers meet and the worker checks, in Python and in ClickHouse SQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
"""The canonical (lowercase) text of a UUID, what producers write; valid in Python and RE2."""

UUID_RE = re.compile(UUID_PATTERN + r"\Z")
"""Matches (with ``.match``) exactly the canonical text; cheaper than building a uuid.UUID."""

UUID_SQL_PATTERN = f"^{UUID_PATTERN}$"
"""The same rule for ClickHouse's ``match``."""

MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""An ``occurred_at`` before this is implausible (a clock or a unit gone wrong)."""

MAX_FUTURE_SKEW = timedelta(days=1)
"""An ``occurred_at`` more than this ahead of the worker's clock is implausible (by default)."""

MIN_TIME_SQL = f"toDateTime64('{MIN_TIME:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
""":data:`MIN_TIME` as a ClickHouse ``DateTime64(3, 'UTC')`` expression."""

SHA256_PATTERN = "[0-9a-f]{64}"
"""The lowercase hex text of a SHA-256 digest (``artifact_sha256`` of an artifact)."""

SHA256_RE = re.compile(SHA256_PATTERN + r"\Z")

PREDICATE_PATTERN = "[a-z0-9][a-z0-9_.-]{0,63}"
"""An attestation's ``predicate``: a short lowercase slug (``tests``, ``bias-report``…)."""

PREDICATE_RE = re.compile(PREDICATE_PATTERN + r"\Z")

MAX_DETAIL_TEXT = 4096
"""The longest text a lifecycle detail (a reason, a source…) may be, in characters."""
