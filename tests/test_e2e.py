"""End to end: the README's main command on a fresh LANSKAP_HOME, with no model weights."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO
from lanskap.mini.detect import detect

pytestmark = pytest.mark.e2e


def readme_main_command() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"\*\*Generate a fantasy landscape\*\*.*?```bash\n(.*?)\n```", text, re.S)
    assert block, "README must show the main command"
    return block.group(1).strip()


def test_readme_main_command_runs_the_whole_flow(tmp_path: Path) -> None:
    command = readme_main_command()
    assert command.startswith("scripts/setup.sh && .venv/bin/lanskap generate ")
    # setup.sh already ran for this test session; run the generate part from the repo's venv.
    args = shlex.split(command.split("&&", 1)[1])
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(REPO / args[0]), *args[1:], "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "HF_HUB_OFFLINE": "1",
            "LANSKAP_HOME": str(tmp_path / "home"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    fallback = [line for line in proc.stderr.splitlines() if "FALLBACK" in line]
    assert len(fallback) == 1 and "lanskap-mini" in fallback[0], proc.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00001-777.png"]
    with Image.open(files[0]) as img:
        assert img.size == (128, 128)
        info = img.text["parameters"]
        detected = detect(img)
    assert info.startswith("a majestic castle on a misty mountain at sunset")
    assert "Seed: 777, Size: 128x128" in info and "Model: lanskap-mini" in info
    assert detected["sky"] == "sunset", detected  # a real landscape with the sky the prompt asked for
