"""Settings declared once: a dataclass field carries its help text and its other names.

The fronts read this metadata to build their inputs (``cli/config_flags.py`` turns every
described field of a config into a flag), so a setting's name, default and meaning are
written in one place, beside the setting, and can't drift apart between the CLI and the core.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field
from typing import Any


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Any = MISSING,
    aliases: tuple[str, ...] = (),
    negative: str | None = None,
    show_default: bool = True,
    flag: str | None = None,
    text: bool = False,
) -> Any:
    """A dataclass field with what a person needs to set it.

    ``aliases`` are other flag spellings (the diffusers example's names); ``negative`` names the
    off switch of a yes/no setting when ``--no-NAME`` would read badly (``--random-crop``);
    ``flag`` replaces ``--NAME`` where the name alone would mislead beside other flags
    (``--metric-batch-size``); ``text`` says the setting is typed as one text its config parses
    (``cmmd,fid``).
    """
    meta = {"help": help, "aliases": aliases, "negative": negative, "show_default": show_default}
    meta.update(flag=flag, text=text)
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def described(f: Field[Any]) -> bool:
    return bool(f.metadata.get("help"))


def flag_name(f: Field[Any]) -> str:
    """How the CLI spells a setting: ``--field-name`` unless the setting names its own flag."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")
