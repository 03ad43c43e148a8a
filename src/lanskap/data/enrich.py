"""Keyword enrichment of captions (the thesis's post-processing of BLIP captions).

Rules live in a user-editable TOML or YAML file; the shipped defaults cover the
thesis's keywords. Enrichment only appends sentences that are not already in the
caption, so running it twice adds nothing.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lanskap.errors import LanskapError


@dataclass(frozen=True)
class Rule:
    keywords: tuple[str, ...]
    sentence: str

    def matches(self, caption: str) -> bool:
        return any(re.search(rf"\b{re.escape(k)}\b", caption, re.IGNORECASE) for k in self.keywords)


def default_rules_text() -> str:
    return resources.files("lanskap.data").joinpath("enrich_rules.toml").read_text(encoding="utf-8")


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Rules from ``path`` (.toml, .yaml or .yml), or the shipped defaults."""
    if path is None:
        raw = tomllib.loads(default_rules_text())
    else:
        p = Path(path)
        if not p.is_file():
            raise LanskapError(f"rules file not found: {p}")
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            else:
                raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except Exception as exc:  # tomllib/yaml errors: one line for the user
            raise LanskapError(f"cannot read rules file {p.name}: {str(exc).splitlines()[0]}") from None
    rules = raw.get("rule", raw.get("rules", [])) if isinstance(raw, dict) else raw
    out = []
    for i, r in enumerate(rules or [], 1):
        if not isinstance(r, dict) or not r.get("keywords") or not str(r.get("sentence", "")).strip():
            raise LanskapError(f"rule {i} needs 'keywords' (a list) and 'sentence'")
        kws = r["keywords"]
        out.append(Rule(tuple([kws] if isinstance(kws, str) else kws), str(r["sentence"]).strip()))
    return out


def enrich(caption: str, rules: list[Rule]) -> str:
    """Append each matching rule's sentence once; a caption already enriched comes back unchanged."""
    text = caption.strip()
    base = text
    for rule in rules:  # keywords are looked for in the caption itself, not in sentences rules added
        base = base.replace(rule.sentence, " ")
    for rule in rules:
        if rule.matches(base) and rule.sentence not in text:
            sep = "" if not text else (" " if text.endswith((".", "!", "?")) else ". ")
            text = f"{text}{sep}{rule.sentence}"
    return text
