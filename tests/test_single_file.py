"""Single-file .safetensors checkpoints: export, load, and the prediction-type rules (issue #2, 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, main_cli, run_cli
from lanskap.config import Settings
from lanskap.errors import ModelUnavailableError
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest
from lanskap.models.convert import export_single_file

REQ = GenerationRequest("castle in the mist", seed=3, steps=3, width=64, height=64)


def _engine(ckpt: Path, config: Path, tmp_path: Path, **kw: str) -> Engine:
    return Engine(settings=Settings(home=tmp_path / "h", model=str(ckpt), model_config=str(config)), **kw)


def test_exported_checkpoint_gives_the_same_pixels(engine, tiny_sd: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = export_single_file(tiny_sd, tmp_path / "tiny-768-v.safetensors", prediction_type="v_prediction")
    keys = __import__("safetensors").safe_open(str(ckpt), "pt").keys()
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("cond_stage_model.model.transformer.resblocks.") for k in keys)
    single = _engine(ckpt, tiny_sd, tmp_path)
    assert single.model.prediction_type == "v_prediction"
    assert any("from its metadata" in n for n in single.model.notices)
    a = np.asarray(engine.generate(REQ).images[0])
    b = np.asarray(single.generate(REQ).images[0])
    assert np.array_equal(a, b)


def test_prediction_type_from_sidecar_yaml_and_flag(tiny_sd: Path, tmp_path: Path) -> None:
    ckpt = export_single_file(tiny_sd, tmp_path / "undeclared.safetensors")
    ckpt.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    e = _engine(ckpt, tiny_sd, tmp_path)
    assert e.model.prediction_type == "v_prediction"
    assert e.model.pipe.scheduler.config.prediction_type == "v_prediction"
    assert any(".yaml" in n for n in e.model.notices)
    forced = _engine(ckpt, tiny_sd, tmp_path, prediction_type="epsilon")
    assert forced.model.prediction_type == "epsilon" and any("declared" in n for n in forced.model.notices)


def test_undeclared_sd2_checkpoint_is_probed_not_assumed(tiny_sd: Path, tmp_path: Path) -> None:
    ckpt = export_single_file(tiny_sd, tmp_path / "mystery.safetensors")
    e = _engine(ckpt, tiny_sd, tmp_path)
    note = next(n for n in e.model.notices if "mystery.safetensors" in n)
    assert "probing the UNet" in note and "set the prediction type" in note
    assert e.model.prediction_type in ("v_prediction", "epsilon")


def test_cli_single_file_roundtrip(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "exported.safetensors"
    proc = run_cli("models", "to-single-file", str(tiny_sd), str(ckpt))
    assert proc.returncode == 0, proc.stderr
    gen = main_cli(
        capsys,
        "generate",
        "sea",
        "--model",
        str(ckpt),
        "--model-config",
        str(tiny_sd),
        "--steps",
        "2",
        "-W",
        "64",
        "-H",
        "64",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
    )
    assert gen.returncode == 0, gen.stderr
    assert "prediction type v_prediction (from its metadata)" in gen.stderr
    assert len(list((tmp_path / "o").glob("*.png"))) == 1


def test_truncated_single_file(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = export_single_file(tiny_sd, tmp_path / "full.safetensors", prediction_type="v_prediction")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size - 4096])
    proc = main_cli(
        capsys,
        "generate",
        "x",
        "--model",
        str(cut),
        "--model-config",
        str(tiny_sd),
        "--quiet",
        "--out",
        str(tmp_path / "o"),
    )
    assert_one_line_error(proc, "truncated")


def test_single_file_without_configs_offline(tiny_sd: Path, tmp_path: Path) -> None:
    ckpt = export_single_file(tiny_sd, tmp_path / "alone.safetensors", prediction_type="v_prediction")
    with pytest.raises(ModelUnavailableError, match="configs of a local diffusers folder") as info:
        Engine(settings=Settings(home=tmp_path / "h", model=str(ckpt))).load()
    assert info.value.settings == ("model_config",)
