"""A1111's prompt editing and alternation: a prompt that changes while the image is sampled.

* ``[from:to:when]`` uses ``from`` up to step ``when``, then ``to``; ``[to:when]`` adds ``to``
  at ``when``; ``[from::when]`` removes ``from`` at ``when``. A ``when`` with a decimal point is
  a fraction of the steps (``0.3``), one without is a step number (``10``).
* ``[a|b|c]`` takes ``a``, ``b``, ``c``, ``a``… on successive steps.
* Both nest, and keep ``(word:1.2)`` weights, ``[word]`` de-emphasis and ``BREAK``: the prompt
  for each step is plain A1111 text, encoded as usual.

The language is A1111's (``modules/prompt_parser.py``): a prompt that does not parse is used
unchanged at every step, and a schedule entry ``(step, text)`` holds for every sampler step
``i`` (from 0) with ``i <= step``, which is how A1111's ``reconstruct_cond_batch`` picks it.
Written by hand here rather than with a parser library: the grammar is small, and the fallback
rule needs the parse to fail exactly where A1111's does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*$")


class _ParseError(Exception):
    pass


@dataclass
class _Scheduled:
    before: list[_Node]
    after: list[_Node]
    when: str  # as written: a "." makes it a fraction of the steps
    step: int = 0  # resolved against the step count


@dataclass
class _Alternate:
    options: list[list[_Node]]


@dataclass
class _Group:
    """``(…)``, ``(…:…)`` or ``[…]``: emphasis, kept as text for the attention parser."""

    open: str
    parts: list[list[_Node]] = field(default_factory=list)  # two parts for (a:b)
    close: str = ""


_Node = str | _Scheduled | _Alternate | _Group


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def seq(self, stops: str, top: bool = False) -> list[_Node]:
        """Nodes up to (not including) one of ``stops``; at the top level stray brackets are text."""
        nodes: list[_Node] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if ch in stops:
                break
            if ch == "\\":
                nodes.append(self.text[self.pos : self.pos + 2])
                self.pos += 2
            elif ch in "[(":
                nodes.append(self.group(top))
            elif ch in "]):" and top:
                nodes.append(ch)
                self.pos += 1
            elif ch in "]):|":
                raise _ParseError(ch)
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] not in "\\[]():|":
                    self.pos += 1
                nodes.append(self.text[start : self.pos])
        return nodes

    def group(self, top: bool) -> _Node:
        """A bracketed part; at the top level one that does not close is a stray bracket, as in A1111."""
        start = self.pos
        try:
            return self.square() if self.peek() == "[" else self.paren()
        except _ParseError:
            if not top:
                raise
            self.pos = start + 1
            return self.text[start]

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise _ParseError(f"expected {ch!r}")
        self.pos += 1

    def paren(self) -> _Group:
        self.expect("(")
        group = _Group("(", [self.seq(":)")])
        if self.peek() == ":":
            self.pos += 1
            group.parts.append(self.seq(")"))
        self.expect(")")
        group.close = ")"
        return group

    def square(self) -> _Node:
        self.expect("[")
        first = self.seq(":|]")
        ch = self.peek()
        if ch == "]":
            self.pos += 1
            return _Group("[", [first], "]")
        if ch == "|":
            options = [first]
            while self.peek() == "|":
                self.pos += 1
                options.append(self.seq("|]"))
            self.expect("]")
            return _Alternate(options)
        self.expect(":")
        second = self.seq(":]")
        if self.peek() == "]":  # [to:when]
            self.pos += 1
            return _Scheduled([], first, _number(second))
        self.expect(":")
        when = self.seq("]")
        self.expect("]")
        return _Scheduled(first, second, _number(when))


def _number(nodes: list[_Node]) -> str:
    if not all(isinstance(n, str) for n in nodes):
        raise _ParseError("the step of a prompt edit must be a number")
    m = _NUMBER.match("".join(nodes))  # type: ignore[arg-type]
    if not m:
        raise _ParseError("the step of a prompt edit must be a number")
    return m.group(1)


def _walk(nodes: list[_Node]) -> list[_Node]:
    found: list[_Node] = []
    for node in nodes:
        if isinstance(node, _Scheduled):
            found.append(node)
            found += _walk(node.before) + _walk(node.after)
        elif isinstance(node, _Alternate):
            found.append(node)
            for option in node.options:
                found += _walk(option)
        elif isinstance(node, _Group):
            for part in node.parts:
                found += _walk(part)
    return found


def _render(nodes: list[_Node], step: int) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            out.append(_render(node.before if step <= node.step else node.after, step))
        elif isinstance(node, _Alternate):
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
        else:
            out.append(node.open + ":".join(_render(p, step) for p in node.parts) + node.close)
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """``[(end_step, text), …]`` in step order; the last entry ends at ``steps``."""
    try:
        tree = _Parser(prompt).seq("", top=True)
    except _ParseError:
        return [(steps, prompt)]
    ends = {steps}
    for node in _walk(tree):
        if isinstance(node, _Alternate):
            ends.update(range(1, steps + 1))
        elif isinstance(node, _Scheduled):
            value = float(node.when)
            node.step = min(steps, int(value * steps if "." in node.when else value))
            if node.step >= 1:
                ends.add(node.step)
    return [(end, _render(tree, end)) for end in sorted(ends)]
