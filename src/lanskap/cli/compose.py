"""The panorama and region flags, shared by every generating command, turned into request fields."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import typer

#: (name, type, typer option), added to REQUEST_FLAGS by cli/options.py.
COMPOSE_FLAGS: list[tuple[str, Any, Any]] = [
    (
        "panorama_size",
        str,
        typer.Option(None, "--panorama", help="WxH (or 'on' for the canvas as it is): denoise in fused windows."),
    ),
    ("panorama_window", int, typer.Option(None, "--panorama-window", help="Panorama window in px [native size].")),
    ("panorama_stride", int, typer.Option(None, "--panorama-stride", help="Panorama window stride in px [window/2].")),
    ("panorama_batch", int, typer.Option(None, "--panorama-batch", help="Panorama windows per model call [4].")),
    ("equirectangular", bool, typer.Option(None, "--equirectangular", help="A 2:1 360° sky: wraps, calm poles.")),
    (
        "region",
        list[str],
        typer.Option(
            None, "--region", metavar="<str>", help="L,T,R,B[,WEIGHT]:PROMPT[;NEGATIVE] in fractions; repeatable."
        ),
    ),
    ("region_base", float, typer.Option(None, "--region-base", help="Base prompt's share inside regions, 0-1 [0.2].")),
]
NAMES = tuple(name for name, _, _ in COMPOSE_FLAGS)
SIZE_HINT = "the panorama size must be WIDTHxHEIGHT (or 'on')"


def compose_fields(clean: dict[str, Any]) -> None:
    """Replace the flags in ``clean`` by ``panorama``, ``regions`` and the size, over any recorded ones."""
    from lanskap.generation.panorama import Panorama
    from lanskap.generation.regions import DEFAULT_BASE, Layout, parse

    size = clean.pop("panorama_size", None)
    given = {k: clean.pop(f"panorama_{k}", None) for k in ("window", "stride", "batch")}
    given["equirectangular"] = clean.pop("equirectangular", None)
    flags = {k: v for k, v in given.items() if v is not None}
    if size is not None or flags or clean.get("panorama") is not None:
        clean["panorama"] = replace(clean.get("panorama") or Panorama(), **flags)
    if size is not None and size.lower() != "on":
        from lanskap.cli.common import parse_size

        clean["width"], clean["height"] = parse_size(size, SIZE_HINT)
    texts, base = clean.pop("region", None) or [], clean.pop("region_base", None)
    recorded: Layout | None = clean.get("regions")
    if texts:
        clean["regions"] = Layout(tuple(parse(t) for t in texts), DEFAULT_BASE if base is None else base)
    elif base is not None:
        if recorded is None:
            from lanskap.errors import LanskapError

            raise LanskapError("the base prompt's share applies to regions; give at least one region")
        clean["regions"] = replace(recorded, base=base)
