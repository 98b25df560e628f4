"""The README's table of worker options, generated from the ``worker`` command's options (which
come from :class:`~decision_audit.worker.settings.WorkerSettings`).

``python -m decision_audit.cli.reference [README.md]`` rewrites the table between the
markers; ``tests/unit/cli/test_reference.py`` fails when the README's table is not this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from decision_audit.cli.main import main as cli
from decision_audit.cli.options import env_var, shown_default
from decision_audit.worker.settings import WorkerSettings

BEGIN = (
    "<!-- worker-options: generated from WorkerSettings by "
    "`python -m decision_audit.cli.reference`; edit the settings, not this table -->"
)
END = "<!-- /worker-options -->"


def worker_options_table() -> str:
    """One row per option of ``decision-audit worker`` that is a settings field."""
    command = cli.commands["worker"]
    prefix = env_var(WorkerSettings, "")
    rows = [
        f"| flag | env var (`{prefix}…`) | default | meaning |",
        "|---|---|---|---|",
    ]
    for param in command.params:
        field = WorkerSettings.model_fields.get(param.name or "")
        if not isinstance(param, click.Option) or field is None:
            continue
        flags = "/".join([*param.opts, *param.secondary_opts])
        switch = (param.opts[0], param.secondary_opts[0]) if param.secondary_opts else None
        env = env_var(WorkerSettings, param.name or "").removeprefix(prefix)
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{flags}` | `{env}` | `{shown_default(field, switch)}` | {meaning} |")
    return "\n".join(rows) + "\n"


def with_table(text: str) -> str:
    """``text`` (a README) with the generated table between its markers."""
    try:
        head, rest = text.split(BEGIN + "\n", 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise ValueError(f"the README has no {BEGIN!r} ... {END!r} block") from None
    return f"{head}{BEGIN}\n{worker_options_table()}{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "README.md")
    text = path.read_text(encoding="utf-8")
    updated = with_table(text)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
        print(f"updated the worker options in {path}")


if __name__ == "__main__":
    main()
