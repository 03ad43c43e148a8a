"""Flags made from a config dataclass's described fields (``lanskap.fields.setting``).

``config_command(TrainConfig)`` gives a command one flag per described field: ``--field-name``
plus its aliases, yes/no fields as ``--name/--no-name``, the help text with the default in
brackets. The command receives ``given``: the settings typed on the command line (the rest is
left to the preset and the config file). Nothing about a setting is written twice.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from lanskap.fields import described, flag_name


def config_flags(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(field name, option type, typer option) for each described field of ``cls``."""
    hints = typing.get_type_hints(cls)
    flags = []
    for f in dataclasses.fields(cls):
        if not described(f) or f.name in skip:
            continue
        meta = f.metadata
        typ = str if meta.get("text") else _option_type(hints[f.name])
        name = flag_name(f)
        decls = [name, *meta["aliases"]]
        if typ is bool:
            decls[0] = f"{name}/{meta['negative'] or '--no-' + name[2:]}"
        # A repeatable flag takes one value at a time: its metavar is the item's, not "list[Path]".
        item = typing.get_args(typ)[0] if typing.get_origin(typ) is list else None
        metavar = f"<{'path' if item is Path else 'str'}>" if item is not None else None
        flags.append((f.name, typ, typer.Option(None, *decls, help=_help(f, typ), metavar=metavar)))
    return flags


def _option_type(hint: Any) -> Any:
    """``int | None`` → int: "not given" is None for every flag, whatever the field's type."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kept = [a for a in typing.get_args(hint) if a is not type(None)]
        return kept[0]
    return hint


def _help(f: dataclasses.Field[Any], typ: Any) -> str:
    text = f.metadata["help"]
    if not f.metadata["show_default"] or "[" in text or f.default is dataclasses.MISSING:
        return text
    default = f.default
    if default is None:
        return text
    shown = ("on" if default else "off") if typ is bool else f"{default:g}" if isinstance(default, float) else default
    return f"{text} [{shown}]"


def config_command(cls: type, skip: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add ``cls``'s flags to a command; it receives ``given: dict`` (field → typed value)."""
    flags = config_flags(cls, skip)

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(func).parameters.values() if p.name != "given"]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=t) for n, t, opt in flags]

        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            given = {n: kwargs.pop(n) for n, _, _ in flags}
            return func(**kwargs, given={k: v for k, v in given.items() if v is not None and v != []})

        command.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
        own_hints = {k: v for k, v in func.__annotations__.items() if k != "given"}
        command.__annotations__ = {**own_hints, **{n: t for n, t, _ in flags}}
        return command

    return decorate
