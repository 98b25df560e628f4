"""Click options generated from a settings model: names, help and defaults written once.

Field ``batch_size`` of a model becomes ``--batch-size``, typed after the field, its help the
field's description and ``[env: DECISION_AUDIT_BATCH_SIZE; default: 10000]``. The option's
own default is None, so an unset flag leaves the field to its environment variable and then
to the model's default: :func:`build_settings` passes on only the flags given.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def flag(name: str) -> str:
    """The command-line flag of a settings field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def env_var(model: type[BaseModel], name: str) -> str:
    """The environment variable a settings field reads: ``DECISION_AUDIT_BATCH_SIZE``."""
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def shown_default(field: FieldInfo, switch: tuple[str, str] | None = None) -> str:
    """The model's default as ``--help`` and the README show it (``off`` for None; for a
    boolean, the one of its two flags that is on by default)."""
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "off"
    if isinstance(value, bool):
        on, off = switch or ("on", "off")
        return on if value else off
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def option_help(model: type[BaseModel], name: str, switch: tuple[str, str] | None = None) -> str:
    field = model.model_fields[name]
    text = (field.description or "").strip()
    tail = f"[env: {env_var(model, name)}; default: {shown_default(field, switch)}]"
    return f"{text} {tail}" if text else tail


def settings_options(
    model: type[BaseModel],
    names: Iterable[str] | None = None,
    *,
    switches: Mapping[str, tuple[str, str]] | None = None,
    param_types: Mapping[str, click.ParamType[Any]] | None = None,
) -> Callable[[F], F]:
    """A decorator adding one option per field of ``model`` (all of them, or ``names``).

    A boolean field becomes ``--name/--no-name`` unless ``switches`` gives its two flags
    (``{"require_signed": ("--require-signed", "--allow-unsigned")}``); ``param_types``
    overrides the click type derived from a field's annotation.
    """
    switches = dict(switches or {})
    param_types = dict(param_types or {})
    chosen = list(model.model_fields if names is None else names)
    unknown = (set(switches) | set(param_types) | set(chosen)) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {sorted(unknown)}")

    def decorate(func: F) -> F:
        for name in reversed(chosen):
            func = _option(model, name, switches.get(name), param_types.get(name))(func)
        return func

    return decorate


def _option(
    model: type[BaseModel],
    name: str,
    switch: tuple[str, str] | None,
    param_type: click.ParamType[Any] | None,
) -> Callable[[F], F]:
    field = model.model_fields[name]
    base = _unwrap_optional(field.annotation)
    if base is bool:
        on, off = switch or (flag(name), "--no-" + flag(name)[2:])
        shown = (on, off)
        return click.option(f"{on}/{off}", name, default=None, help=option_help(model, name, shown))
    return click.option(
        flag(name),
        name,
        type=param_type or _click_type(base),
        default=None,
        help=option_help(model, name),
    )


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _click_type(annotation: Any) -> click.ParamType[Any]:
    if annotation is int:
        return click.INT
    if annotation is float:
        return click.FLOAT
    if annotation is Path:
        return click.Path(path_type=Path)
    if get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in get_args(annotation)])
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return click.Choice([str(m.value) for m in annotation])
    return click.STRING


def build_settings(model: type[M], given: Mapping[str, Any]) -> M:
    """``model`` from the flags given (None: not given, so env var, then default).

    A value pydantic refuses becomes a usage error naming its flag, or its environment
    variable when the value came from there.
    """
    flags = {k: v for k, v in given.items() if v is not None}
    try:
        return model(**flags)
    except ValidationError as exc:
        problems = "; ".join(_problem(model, flags, e) for e in exc.errors())
        raise click.UsageError(problems) from None


def _problem(model: type[BaseModel], flags: Mapping[str, Any], error: Any) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ")
    loc = [str(p) for p in error["loc"]]
    if not loc or loc[0] not in model.model_fields:
        return msg
    name = loc[0]
    where = flag(name) if name in flags else env_var(model, name)
    return msg if msg.startswith(where) else f"{where}: {msg}"
