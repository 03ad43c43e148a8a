"""``lanskap generate --prompts FILE``: prompt files, and data parallelism under accelerate (issue #9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error, main_cli
from lanskap.errors import LanskapError
from lanskap.gallery import Gallery
from lanskap.generation.batchfile import Shard, plan_requests, read_prompt_file


def test_prompt_files_in_three_formats(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("# castles\na castle at dawn\n\n  a tower in the mist  \n", encoding="utf-8")
    assert [r["prompt"] for r in read_prompt_file(txt)] == ["a castle at dawn", "a tower in the mist"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "two moons", "seed": 5, "steps": 4}\n\n{"prompt": "a lake", "width": 512}\n')
    rows = read_prompt_file(jsonl)
    assert rows[0]["seed"] == 5 and rows[0]["steps"] == 4 and rows[1]["width"] == 512
    csv = tmp_path / "p.csv"
    csv.write_text("prompt,negative_prompt,guidance\nruins,blurry,5.5\nvillage,,\n")
    rows = read_prompt_file(csv)
    assert (
        rows[0]["guidance"] == 5.5
        and rows[0]["negative_prompt"] == "blurry"
        and "guidance" not in {k for k, v in rows[1].items() if v is not None}
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.jsonl", '{"prompt": "x"}\n{"prompt": "y", "stpes": 3}\n', "line 2: unknown field 'stpes'"),
        ("b.jsonl", '{"prompt": "x", "seed": "abc"}\n', "line 1: seed must be int"),
        ("c.jsonl", "not json\n", "line 1: not JSON"),
        ("d.csv", "prompt,seed\n,3\n", "line 2: no prompt"),
        ("e.txt", "# only a comment\n", "holds no prompts"),
    ],
)
def test_bad_prompt_files_name_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LanskapError, match=message):
        read_prompt_file(path)


def test_seeds_follow_the_line_not_the_process_count(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b", "num_images": 2}\n{"prompt": "c", "seed": 7}\n{"prompt": "d"}\n')
    requests = plan_requests(read_prompt_file(path), {"seed": 100, "steps": 2})
    assert [r.seed for r in requests] == [100, 101, 7, 104]
    assert all(r.steps == 2 for r in requests)
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b", "steps": 9999}\n')
    with pytest.raises(LanskapError, match="prompt file line 3: steps must be between 1 and 150"):
        plan_requests(read_prompt_file(path), {"steps": 2})
    items = list(range(7))
    shares = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(x for share in shares for x in share) == items and shares[0] == [0, 3, 6]


def test_generate_prompts_file_single_process(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a castle at dawn\na tower in the mist\n")
    out = tmp_path / "out"
    proc = main_cli(
        capsys,
        "generate", "--prompts", str(path), "--model", str(tiny_sd), "-W", "64", "-H", "64", "--steps", "2",
        "--seed", "50", "--out", str(out), "--json", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["seeds"] for x in lines] == [[50], [51]]
    assert [x["infotexts"][0].splitlines()[0] for x in lines] == ["a castle at dawn", "a tower in the mist"]
    assert len(list(out.glob("*.png"))) == 2
    both = main_cli(capsys, "generate", "a prompt", "--prompts", str(path), "--model", str(tiny_sd))
    assert_one_line_error(both, "--prompts reads the prompts from the file")


@pytest.mark.e2e
def test_prompts_file_across_two_processes_with_accelerate(tiny_sd: Path, tmp_path: Path) -> None:
    """Data parallel through ``accelerate launch`` (2 CPU processes): each line once, one gallery."""
    path = tmp_path / "p.jsonl"
    prompts = [f"landscape number {i}" for i in range(5)]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    home = tmp_path / "home"
    launcher = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lanskap", "generate", "--prompts", str(path),
         "--model", str(tiny_sd), "-W", "64", "-H", "64", "--steps", "2", "--seed", "10", "-q", "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "LANSKAP_DEVICE": "cpu", "LANSKAP_HOME": str(home)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert sorted(s for j in jobs for s in j["seeds"]) == [10, 11, 12, 13, 14]
    entries, total = Gallery(home).query()
    rows = sorted((e.prompt, e.seed, e.path) for e in entries)
    assert total == 5 and [(p, s) for p, s, _ in rows] == [(p, 10 + i) for i, p in enumerate(prompts)]
    assert len({p.name for _, _, p in rows}) == 5 and all(p.is_file() for _, _, p in rows)
    assert Gallery(home).check() == {k: [] for k in Gallery(home).check()}, "no half-written rows or files"
