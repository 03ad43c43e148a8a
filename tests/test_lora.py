"""LoRAs in the engine: apply, rescale, switch, tags, and every LoRA error (issue #2, 4/7/8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lanskap.errors import LoraError, UnsafeFileError
from lanskap.generation.params import GenerationRequest, LoraSpec

SMALL = {"steps": 3, "width": 64, "height": 64, "seed": 9}


def img(engine, *loras: LoraSpec, prompt: str = "misty castle") -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(engine.generate(GenerationRequest(prompt, loras=loras, **SMALL)).images[0]).astype(int)


def test_lora_changes_output_and_scale_matters(engine, tiny_lora: Path) -> None:  # type: ignore[no-untyped-def]
    base = img(engine)
    full = img(engine, LoraSpec(str(tiny_lora), 1.0))
    half = img(engine, LoraSpec(str(tiny_lora), 0.5))
    zero = img(engine, LoraSpec(str(tiny_lora), 0.0))
    assert np.abs(full - base).max() > 10
    assert np.abs(half - full).max() > 0 and np.abs(half - base).max() > 0
    assert np.abs(zero - base).max() <= 1
    assert np.array_equal(img(engine), base), "turning LoRAs off restores the base exactly"


def test_switching_loras_does_not_reload_the_base(engine, tiny_lora, tiny_lora2) -> None:  # type: ignore[no-untyped-def]
    pipe = engine.model.pipe
    unet_weight = next(p for n, p in pipe.unet.named_parameters() if "lora" not in n)
    a = img(engine, LoraSpec(str(tiny_lora), 1.0))
    b = img(engine, LoraSpec(str(tiny_lora2), 1.0))
    both = img(engine, LoraSpec(str(tiny_lora), 1.0), LoraSpec(str(tiny_lora2), 1.0))
    assert engine.model.pipe is pipe
    assert next(p for n, p in pipe.unet.named_parameters() if "lora" not in n) is unet_weight
    assert np.abs(a - b).max() > 0 and np.abs(both - a).max() > 0
    assert np.array_equal(img(engine, LoraSpec(str(tiny_lora), 1.0)), a)


def test_lora_by_name_from_lora_folder_and_prompt_tag(tiny_sd: Path, tiny_lora: Path, tmp_path: Path) -> None:
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    loras = tmp_path / "loras"
    loras.mkdir()
    shutil.copy(tiny_lora, loras / "mist-style.safetensors")
    e = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), lora_dirs=[loras]))
    by_flag = e.generate(GenerationRequest("misty castle", loras=(LoraSpec("mist-style", 0.7),), **SMALL))
    by_tag = e.generate(GenerationRequest("misty castle <lora:mist-style:0.7>", **SMALL))
    assert np.array_equal(np.asarray(by_flag.images[0]), np.asarray(by_tag.images[0]))
    assert "<lora:mist-style:0.7>" in by_flag.infotexts[0]
    assert 'Lora hashes: "mist-style: ' in by_flag.infotexts[0]
    assert by_flag.loras[0].name == "mist-style" and len(by_flag.loras[0].hash) == 12


def test_missing_lora(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LoraError, match="not found"):
        engine.generate(GenerationRequest("x", loras=(LoraSpec("no-such-lora"),), **SMALL))
    with pytest.raises(LoraError, match="not found"):
        engine.generate(GenerationRequest("x", loras=(LoraSpec("/nowhere/x.safetensors"),), **SMALL))


def test_lora_for_another_base_is_refused(engine, foreign_lora: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LoraError, match="made for another base"):
        engine.generate(GenerationRequest("x", loras=(LoraSpec(str(foreign_lora)),), **SMALL))
    assert np.array_equal(img(engine), img(engine)), "engine still works afterwards"


def test_corrupt_lora(engine, tiny_lora: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_lora.read_bytes()[:-50])
    with pytest.raises(LoraError, match="truncated"):
        engine.generate(GenerationRequest("x", loras=(LoraSpec(str(bad)),), **SMALL))


def test_pickled_lora_refused(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pt = tmp_path / "style.pt"
    pt.write_bytes(b"\x80\x04junk")
    with pytest.raises(UnsafeFileError, match="allow pickle files") as info:
        engine.generate(GenerationRequest("x", loras=(LoraSpec(str(pt)),), **SMALL))
    assert info.value.settings == ("allow_pickle",)  # the CLI says --allow-pickle


def test_api_mode_refuses_paths(tiny_sd: Path, tiny_lora: Path) -> None:
    from lanskap.generation.engine import Engine

    e = Engine(str(tiny_sd), allow_lora_paths=False)
    for name in (str(tiny_lora), "../loras/x", "..\\x"):
        with pytest.raises(LoraError, match="invalid LoRA name"):
            e.generate(GenerationRequest("x", loras=(LoraSpec(name),), **SMALL))


def test_lora_spec_parsing() -> None:
    assert LoraSpec.parse("style") == LoraSpec("style", 1.0)
    assert LoraSpec.parse("style:0.6") == LoraSpec("style", 0.6)
    assert LoraSpec.parse("C:\\loras\\style.safetensors:0.5") == LoraSpec("C:\\loras\\style.safetensors", 0.5)
    assert LoraSpec.parse("/a/b.safetensors") == LoraSpec("/a/b.safetensors", 1.0)


def test_infotext_names_loras_as_a1111_does() -> None:
    from lanskap.generation.lora import lora_display_name

    assert lora_display_name("mist-style") == "mist-style"
    assert lora_display_name("/loras/mist-style.safetensors") == "mist-style"
    assert lora_display_name("mist-style.safetensors") == "mist-style"
    assert lora_display_name("C:\\loras\\mist-style.safetensors") == "mist-style"


def test_a_link_out_of_the_lora_folder_is_no_lora(tiny_lora: Path, tmp_path: Path) -> None:
    """A name never reaches a file the user did not put in the LoRA folder."""
    from lanskap.config import Settings
    from lanskap.errors import LoraError
    from lanskap.generation.lora import list_loras, resolve_lora

    home = tmp_path / "home"
    (home / "loras").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(tiny_lora, elsewhere / "stolen.safetensors")
    (home / "loras" / "stolen.safetensors").symlink_to(elsewhere / "stolen.safetensors")
    shutil.copy(tiny_lora, home / "loras" / "mine.safetensors")
    settings = Settings(home=home)
    assert [p.stem for p in list_loras(settings)] == ["mine"]
    assert resolve_lora("mine", settings).name == "mine.safetensors"
    with pytest.raises(LoraError, match="not found"):
        resolve_lora("stolen", settings, allow_paths=False)
