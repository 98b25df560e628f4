"""Reading a worker's /metrics and /healthz over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket")


class Scrape(dict[tuple[str, tuple[tuple[str, str], ...]], float]):
    """Every sample of one ``/metrics`` read as ``{(name, sorted labels): value}``, plus the
    names of the metric families exported (a labelled family with no child has no sample)."""

    families: frozenset[str] = frozenset()


def metrics(port: int) -> Scrape:
    """Read ``/metrics`` once."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = Scrape()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    out.families = frozenset(names)
    return out


def value(samples: Scrape, name: str, **labels: str) -> float:
    """One sample's value; 0 for a label set never incremented on an exported family.

    A metric the worker does not export at all fails the test (a renamed metric must not
    pass every ``== 0`` check).
    """
    found = samples.get((name, tuple(sorted(labels.items()))))
    if found is not None:
        return found
    family = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
    assert family in samples.families or name in samples.families, (
        f"metric {name} is not exported (families: {sorted(samples.families)})"
    )
    assert labels, f"metric {name} is exported but has no unlabelled sample"
    return 0.0


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body of ``/healthz``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
