"""Textual-inversion training: lowers the loss, moves pictures toward the set, exports both formats, resumes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, main_cli
from lanskap.config import Settings
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest
from lanskap.prompts.embeddings import read_embedding
from lanskap.training import train
from test_training import fast, losses, write_imagefolder

TOKEN = "<zq-style>"


def ti(tiny_sd: Path, data: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    values = dict(method="textual-inversion", token=TOKEN, init_word="painting", vectors=4, learning_rate=5e-2,
                  lr_scheduler="constant", snr_gamma=0)  # fmt: skip
    values.update(kw)
    return fast(tiny_sd, data, out, **values)


def test_ti_lowers_the_fixed_noise_loss_with_only_the_vectors_trained(tiny_sd: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = write_imagefolder(tmp_path / "set", n=8)
    st = Settings(home=tmp_path / "home", device="cpu")
    result = train(ti(tiny_sd, data, tmp_path / "run", max_train_steps=60), st)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    # a random tiny UNet barely listens to its text, so the fall is small here (on lanskap-mini it is 30%)
    assert evals[-1] < 0.99 * evals[0], f"the fixed-noise loss must fall: {evals}"
    ckpt = load_file(str(tmp_path / "run" / "checkpoint-60" / "embedding.safetensors"))
    assert set(ckpt) == {"emb_params"}, "a checkpoint holds the vectors, not the model"
    assert read_embedding(result.kohya).count == 4


def test_ti_on_mini_moves_the_palette_toward_the_style_set(tmp_path: Path) -> None:
    """TI on the built-in model's verdigris set: pictures with the embedding's name take the style's colours.

    On lanskap-mini, because a random tiny UNet barely listens to its text; at 64 px and 40 steps it
    takes about 30 s (measured: palette distance 0.92 → 0.84)."""
    from PIL import Image

    from lanskap.evaluation.distances import palette_distance, palette_histogram
    from lanskap.mini.dataset import write_scene_set

    data = write_scene_set(tmp_path / "verdigris", 12, test=4, style="verdigris")
    st = Settings(home=tmp_path / "home", device="cpu")
    cfg = fast("lanskap-mini", data, tmp_path / "run", method="textual-inversion", token="<verdigris-style>",
               init_word="painting", vectors=4, learning_rate=1e-2, lr_scheduler="constant", max_train_steps=40,
               train_batch_size=4, resolution=64, bucket_step=64, output_name="verdigris-style")  # fmt: skip
    result = train(cfg, st)
    (st.embeddings_dir).mkdir(parents=True)
    (st.embeddings_dir / "verdigris-style.safetensors").write_bytes(result.kohya.read_bytes())
    eng = Engine(settings=Settings(home=st.home, model="lanskap-mini", device="cpu", dtype="fp32"))
    rows = [json.loads(line) for line in (data / "test" / "metadata.jsonl").read_text().splitlines()]
    style = palette_histogram(np.concatenate([np.asarray(Image.open(data / "test" / r["file_name"]).convert("RGB"))
                                              .reshape(-1, 3) for r in rows]))  # fmt: skip

    def distance(prefix: str) -> float:
        ims = [eng.generate(GenerationRequest(prefix + r["text"], seed=10 + i, steps=10, width=64, height=64,
                                              watermark=False)).images[0] for i, r in enumerate(rows)]  # fmt: skip
        return palette_distance(palette_histogram(np.concatenate([np.asarray(im).reshape(-1, 3) for im in ims])), style)

    base, styled = distance(""), distance("verdigris-style, ")
    assert styled < base - 0.05, (base, styled)


def test_ti_exports_a1111_comfyui_and_diffusers_files_and_resumes_exactly(tiny_sd: Path, tmp_path: Path) -> None:
    data = write_imagefolder(tmp_path / "set", n=4)
    st = Settings(home=tmp_path / "home", device="cpu")
    common = dict(max_train_steps=4, checkpointing_steps=2, output_name="zq-style")
    full = train(ti(tiny_sd, data, tmp_path / "full", **common), st)
    a1111, diffusers = read_embedding(full.kohya), read_embedding(full.lora)
    assert a1111.count == 4 and a1111.width == 32 and torch.equal(a1111.vectors, diffusers.vectors)
    from safetensors import safe_open

    with safe_open(str(full.kohya), "pt") as f:
        assert list(f.keys()) == ["emb_params"]  # what kohya writes and ComfyUI looks for
        meta = f.metadata()
    assert meta["step"] == "4" and meta["modelspec.architecture"].endswith("/textual-inversion")
    with safe_open(str(full.lora), "pt") as f:
        assert list(f.keys()) == [TOKEN]  # diffusers' single-key file: the token is the key
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)
    pipe.load_textual_inversion(str(full.lora))
    assert TOKEN in pipe.tokenizer.get_vocab()

    cancel = threading.Event()

    def stop_at_2(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "step" and event.step == 2:
            cancel.set()

    part = train(ti(tiny_sd, data, tmp_path / "part", **common), st, events=stop_at_2, cancel=cancel)
    assert part.interrupted and part.steps == 2
    train(ti(tiny_sd, data, tmp_path / "part", resume_from_checkpoint="latest", **common), st)
    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    assert torch.equal(read_embedding(tmp_path / "part" / "zq-style.safetensors").vectors, a1111.vectors)


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--method", "textual-inversion", "--token", "castle"], ["already a word"]),
        (["--method", "textual-inversion"], ["token"]),
        (["--method", "dreambooth", "--instance-prompt", "a sks castle", "--prior-preservation"], ["class prompt"]),
        (["--method", "dreambooth", "--instance-prompt", "a sks castle", "--full", "--rank", "8"], ["rank", "full"]),
        (["--full"], ["dreambooth"]),
    ],
)
def test_method_mistakes_are_one_line_errors_before_training(
    flags: list[str], needles: list[str], tiny_sd: Path, tmp_path: Path, capsys
) -> None:
    data = write_imagefolder(tmp_path / "set", n=2)
    proc = main_cli(capsys, "train", "--data", str(data), "--out", str(tmp_path / "o"), "--model", str(tiny_sd),
                    "--resolution", "64", "--max-train-steps", "1", *flags)  # fmt: skip
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "o" / "checkpoint-1").exists()


def test_the_api_trains_an_embedding_and_lists_it(tiny_sd: Path, isolated_home: Path) -> None:
    import time

    import requests
    import webuiapi

    from lanskap.api.security import ServeConfig
    from lanskap.config import load_settings
    from lanskap.service import Service
    from test_api import Server, _finished

    write_imagefolder(isolated_home / "datasets" / "stripes", n=2)
    server = Server(Service(load_settings(model=str(tiny_sd))), ServeConfig())
    try:
        body = {"dataset": "stripes", "name": "api-style", "method": "textual-inversion", "token": "<api-style>",
                "vectors": 2, "max_train_steps": 2, "resolution": 64, "validation_prompt": []}  # fmt: skip
        job = requests.post(server.url + "/api/v1/jobs/training", json=body, timeout=10).json()
        status = _finished(server.url, job["id"], time.time() + 180)
        assert status["result"]["method"] == "textual-inversion"
        assert status["result"]["published"] == str(isolated_home / "embeddings" / "api-style.safetensors")
        api = webuiapi.WebUIApi(host="127.0.0.1", port=int(server.url.rsplit(":", 1)[1]))
        assert api.get_embeddings()["loaded"]["api-style"]["vectors"] == 2
        bad = requests.post(server.url + "/api/v1/jobs/training", timeout=10,
                            json={**body, "name": "x", "method": "dreambooth"})  # fmt: skip
        assert bad.status_code == 422 and "instance prompt" in bad.json()["detail"]
    finally:
        server.stop()


@pytest.mark.e2e
def test_ti_under_accelerate_launch_with_two_cpu_processes(tiny_sd: Path, tmp_path: Path) -> None:
    """Textual inversion's frozen UNet isn't DDP-wrapped; the vectors' gradients are averaged by hand."""
    from test_training import launch_two

    data = write_imagefolder(tmp_path / "set", n=4)
    out = tmp_path / "ddp"
    proc = launch_two(tiny_sd, data, out, tmp_path / "h", "--method", "textual-inversion", "--token", TOKEN,
                      "--vectors", "2", "--learning-rate", "0.05")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stdout + proc.stderr
    trained = read_embedding(out / "zq-style.safetensors")  # named after the token, as A1111 names one
    assert trained.count == 2 and json.loads((out / "checkpoint-2" / "state.json").read_text())["num_processes"] == 2
