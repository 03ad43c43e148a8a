"""Usage errors (unknown command or option, bad or missing value) are one clean line, exit 2.

These run the real ``lanskap`` command: the bug they guard against (typer vendoring its own
click, so an ``isinstance`` check against the ``click`` package missed every usage error) only
shows in a real process.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_cli

CASES = [
    # (argv, words the one line must contain)
    (["generate", "x", "--frobnicate", "x"], ["no such option", "--frobnicate"]),
    (["generate", "x", "--steps", "abc"], ["invalid value", "--steps"]),
    (["nosuchcommand"], ["no such command", "nosuchcommand"]),
    (["gallery", "show"], ["missing argument"]),
    (["generate", "x", "--steps"], ["--steps", "requires an argument"]),
    (["generate", "x", "--stpes", "3"], ["no such option", "--steps"]),  # click's close match
    (["train", "--no-such-flag"], ["no such option", "--no-such-flag"]),
    (["dataset", "prepare"], ["missing argument"]),
    (["models", "no-such-verb"], ["no such command", "no-such-verb"]),
    (["mini", "score", "--count", "many"], ["invalid value", "--count"]),
    (["serve", "--port", "abc"], ["invalid value", "--port"]),
    (["ui", "--port", "abc"], ["invalid value", "--port"]),
    (["evaluate", "--no-such-flag"], ["no such option"]),
    (["watermark", "check"], ["missing argument"]),
]


@pytest.mark.parametrize(("argv", "needles"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_usage_error_is_one_line_with_exit_code_2(argv: list[str], needles: list[str], tmp_path: Path) -> None:
    proc = run_cli(*argv, env={"LANSKAP_HOME": str(tmp_path)}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def test_usage_line_points_to_the_commands_help(tmp_path: Path) -> None:
    proc = run_cli("gallery", "show", env={"LANSKAP_HOME": str(tmp_path)}, timeout=60)
    assert "gallery show --help')" in proc.stderr


def test_internal_error_is_one_line_and_the_trace_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error names itself in one line and says where its full trace went."""
    from lanskap.cli.main import internal_error_line

    monkeypatch.setenv("LANSKAP_HOME", str(tmp_path))
    try:
        {}["missing"]  # a real unexpected exception with a real traceback
    except KeyError as exc:
        line = internal_error_line(exc)
    assert "\n" not in line
    assert line.startswith("internal error (KeyError")
    m = re.search(r"the full trace is in (\S+)$", line)
    assert m, line
    log = Path(m.group(1))
    assert log.parent == tmp_path / "logs"
    assert "Traceback (most recent call last)" in log.read_text()
    assert "test_internal_error_is_one_line" in log.read_text()
