"""AUTOMATIC1111's attention syntax: ``(word)``, ``((word))``, ``(word:1.3)``, ``[word]``, ``\\(``, ``BREAK``.

Written by hand because no maintained library parses A1111's exact grammar:
compel uses a different syntax (``word++``, ``(word)1.3``) and different
arithmetic, and prompts copied from A1111 or Civitai must mean the same thing
here. The algorithm follows A1111's ``parse_prompt_attention``, including its
forgiving handling of unbalanced brackets, so malformed input degrades the same
way and never raises.
"""

from __future__ import annotations

import re

ROUND = 1.1
SQUARE = 1 / 1.1
BREAK = "BREAK"

_TOKEN = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` runs; a ``("BREAK", -1)`` run starts a new chunk.

    >>> parse_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_attention("(unbalanced")
    [('unbalanced', 1.1)]
    >>> parse_attention("\\\\(literal\\\\]")
    [('(literal]', 1.0)]
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= factor

    for m in _TOKEN.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:  # e.g. "(a:1.2.3)": A1111 would crash here; treat it as text
                res.append([piece, 1.0])
                continue
            multiply(round_open.pop(), factor)
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i > 0:
                    res.append([BREAK, -1.0])
                res.append([part, 1.0])

    for pos in round_open:
        multiply(pos, ROUND)
    for pos in square_open:
        multiply(pos, SQUARE)

    if not res:
        res = [["", 1.0]]
    # Merge neighbours of equal weight, as A1111 does, so tokenisation sees whole phrases.
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1] and res[i][1] != -1:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(t, float(w)) for t, w in res]


def strip_attention(text: str) -> str:
    """The plain words of a prompt, with weights, brackets and BREAKs removed."""
    return " ".join("".join(" " if w == -1 else t for t, w in parse_attention(text)).split())
