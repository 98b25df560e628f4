"""Click types for the files and directories a command writes, checked before any work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click


class OutputFile(click.ParamType[Path]):
    """A file to write: its directory must exist and be writable, the file not be a directory."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        folder = path.parent
        if path.is_dir():
            self.fail(f"{str(path)!r} is a directory: name a file in it", param, ctx)
        if not folder.is_dir():
            what = "is not a directory" if folder.exists() else "does not exist"
            self.fail(
                f"folder {str(folder)!r} {what}: create it first or write elsewhere", param, ctx
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            self.fail(f"folder {str(folder)!r} is not writable: write elsewhere", param, ctx)
        return path


class OutputDir(click.ParamType[Path]):
    """A directory to write into, created (with its parents) when missing."""

    name = "directory"

    def __init__(self, mode: int = 0o777) -> None:
        self.mode = mode

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        if path.exists() and not path.is_dir():
            self.fail(f"{str(path)!r} is a file: name a directory", param, ctx)
        try:
            path.mkdir(mode=self.mode, parents=True, exist_ok=True)
        except OSError as exc:
            self.fail(
                f"cannot create directory {str(path)!r} ({exc.strerror}): name one you can write",
                param,
                ctx,
            )
        if not os.access(path, os.W_OK | os.X_OK):
            self.fail(f"directory {str(path)!r} is not writable: name another", param, ctx)
        return path
