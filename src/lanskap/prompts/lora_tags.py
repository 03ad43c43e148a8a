"""``<lora:NAME:WEIGHT>`` tags, A1111's way of asking for a LoRA inside the prompt.

Tags are removed from the text that is encoded; the infotext keeps them, which is
how A1111 (and ``lanskap generate --from``) records which LoRAs made an image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lanskap.errors import SettingError


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA by name (in the LoRA folders) or path, with its scale."""

    name: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``NAME``, ``NAME:0.7`` or ``C:\\path\\x.safetensors:0.7``."""
        text = text.strip()
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                return cls(head, float(tail))
            except ValueError:
                pass
        if not text:
            raise SettingError("an empty LoRA value; use NAME or NAME:SCALE", "lora")
        return cls(text, 1.0)

    def __str__(self) -> str:
        return f"{self.name}:{self.scale:g}"


# A1111's extra-network regex: <name:arg1:arg2...>
_TAG = re.compile(r"<(\w+):([^>]+)>")


def _take_tags(prompt: str, kinds: tuple[str, ...]) -> tuple[str, list[tuple[str, str, str]]]:
    """The prompt without the extra-network tags of ``kinds``, and each one's (name, first argument, whole body)."""
    found: list[tuple[str, str, str]] = []

    def take(match: re.Match[str]) -> str:
        if match.group(1).lower() not in kinds:
            return match.group(0)
        args = match.group(2).split(":")
        if args[0].strip():
            found.append((args[0].strip(), args[1].strip() if len(args) > 1 else "", match.group(2)))
        return ""

    cleaned = _TAG.sub(take, prompt)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return re.sub(r"\s+,", ",", cleaned), found


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraSpec]]:
    """Return the prompt without ``<lora:...>`` tags, and the LoRAs they name (a bad scale is 1, as in A1111)."""
    cleaned, found = _take_tags(prompt, ("lora", "lyco"))
    specs = []
    for name, value, _ in found:
        try:
            scale = float(value) if value else 1.0
        except ValueError:
            scale = 1.0
        specs.append(LoraSpec(name, scale))
    return cleaned, specs


def lora_tag(name: str, scale: float) -> str:
    return f"<lora:{name}:{scale:g}>"


def drop_lora_tags(prompt: str, names: set[str]) -> str:
    """``prompt`` without the ``<lora:NAME:…>`` tags of ``names`` (other tags and text untouched)."""

    def keep(match: re.Match[str]) -> str:
        is_lora = match.group(1).lower() in ("lora", "lyco")
        return "" if is_lora and match.group(2).split(":")[0].strip() in names else match.group(0)

    cleaned = _TAG.sub(keep, prompt)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


@dataclass(frozen=True)
class HypernetSpec:
    """``<hypernet:NAME:STRENGTH>``: an A1111 hypernetwork by name, with its strength."""

    name: str
    strength: float = 1.0


def extract_hypernet_tags(prompt: str) -> tuple[str, list[HypernetSpec]]:
    """Return the prompt without ``<hypernet:...>`` tags, and the hypernetworks they name (A1111's)."""
    cleaned, found = _take_tags(prompt, ("hypernet",))
    specs = []
    for name, value, body in found:
        try:
            specs.append(HypernetSpec(name, float(value) if value else 1.0))
        except ValueError:
            raise SettingError(f"bad hypernetwork strength in <hypernet:{body}>", "prompt") from None
    return cleaned, specs


def extract_network_tags(prompt: str) -> tuple[str, list[LoraSpec], list[HypernetSpec]]:
    """The prompt without any extra-network tag, with the LoRAs and hypernetworks it names."""
    text, loras = extract_lora_tags(prompt)
    text, hypernets = extract_hypernet_tags(text)
    return text, loras, hypernets
