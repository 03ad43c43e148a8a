"""LoRA training (issue #5): presets, bad input, the objective, buckets, resume, exports, and that it learns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, run_cli
from lanskap.config import Settings
from lanskap.errors import LanskapError
from lanskap.training import TrainConfig, build_config, train
from lanskap.training.buckets import make_buckets, nearest_bucket, plan
from lanskap.training.config import THESIS_VALIDATION_PROMPT, config_yaml, read_config_file
from lanskap.training.loss import (
    add_noise_offset,
    min_snr_weights,
    snr,
    training_target,
)

CAPTION = "a magenta striped landscape"


def striped(i: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A distinctive picture no random model would make: magenta with green stripes."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 230, 30, 200
    arr[(i % 4) :: 8, :, 1] = 220
    return Image.fromarray(arr)


def write_imagefolder(folder: Path, n: int = 8, wide: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        size = (96, 64) if (wide and i % 2) else (64, 64)
        striped(i, size).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"{CAPTION}, view {i % 3}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("train") / "imgs", wide=True)


def fast(tiny_sd: Path, data: Path, out: Path, **kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    values = dict(
        data=str(data),
        out=str(out),
        model=str(tiny_sd),
        resolution=64,
        bucket_step=16,
        max_train_steps=6,
        learning_rate=1e-3,
        rank=4,
        lr_warmup_steps=0,
        checkpointing_steps=1000,
        validation_prompt=[],
        report_to="none",
    )
    values.update(kw)
    return build_config(None, None, values)


def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", device="cpu")


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


# -- settings -----------------------------------------------------------------------------------
def test_thesis_preset_reproduces_the_thesis_run() -> None:
    cfg = build_config("thesis")
    assert (cfg.resolution, cfg.random_flip, cfg.bucketing) == (768, True, False)
    assert (cfg.train_batch_size, cfg.gradient_accumulation_steps) == (1, 4)
    assert (cfg.max_train_steps, cfg.learning_rate) == (400, 2e-5)
    assert (cfg.lr_scheduler, cfg.lr_warmup_steps) == ("cosine_with_restarts", 100)
    assert cfg.lr_num_cycles > 1, "a real number of restarts, not diffusers' silent 1"
    assert (cfg.max_grad_norm, cfg.rank, cfg.mixed_precision) == (1.0, 16, "fp16")
    assert (cfg.checkpointing_steps, cfg.seed, cfg.report_to) == (100, 42, "tensorboard")
    assert cfg.validation_prompt == [THESIS_VALIDATION_PROMPT]
    assert cfg.unet_targets() == ["to_q", "to_k", "to_v", "to_out.0"]


def test_config_file_then_flags_override_the_preset(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "thesis"\nrank = 8\nlearning-rate = 1e-4\nvalidation_prompt = "a castle"\n')
    cfg = build_config(None, toml, {"rank": 32, "seed": None})
    assert cfg.preset == "thesis" and cfg.max_train_steps == 400, "preset named in the file"
    assert cfg.learning_rate == 1e-4 and cfg.validation_prompt == ["a castle"], "file beats preset"
    assert cfg.rank == 32 and cfg.seed == 42, "a flag beats the file; an unset flag changes nothing"
    yaml_file = tmp_path / "saved.yaml"
    yaml_file.write_text(config_yaml(cfg))
    assert build_config(None, yaml_file) == cfg, "the saved effective config reads back as the same run"
    (tmp_path / "bad.yaml").write_text("rnak: 4\n")
    with pytest.raises(LanskapError, match="rnak"):
        read_config_file(tmp_path / "bad.yaml")


def test_options_add_proj_ff_and_text_encoder_targets() -> None:
    cfg = build_config(None, None, {"train_proj": True, "train_ff": True})
    assert {"proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"} <= set(cfg.unet_targets())


# -- bad input: one line, before training --------------------------------------------------------
def test_bad_input_is_one_line_before_training(
    tiny_sd: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lanskap.cli.main import main

    base = ["train", "--model", str(tiny_sd), "--out", str(tmp_path / "o"), "--resolution", "64", "-q"]

    def error(*args: str) -> str:
        code = main([*base, *args])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    (tmp_path / "empty").mkdir()
    assert "empty" in error("--data", str(tmp_path / "empty"))
    table = tmp_path / "thesis.csv"
    table.write_text(f"image,captions\n{images / '0.png'},a castle\nnot-there.png,a lake\n")
    assert "missing" in error("--data", str(table)) and "not-there.png" in error("--data", str(table))
    assert "no caption column 'prompt'" in error("--data", str(table), "--caption-column", "prompt")
    assert "multiple of 8" in error("--data", str(images), "--resolution", "100")
    assert "rank" in error("--data", str(images), "--rank", "0")
    assert "--color-jitter" in error("--data", str(images), "--cache-latents", "--center-crop", "--color-jitter", "0.2")
    assert "--center-crop" in error("--data", str(images), "--cache-latents")
    assert not (tmp_path / "o").exists(), "nothing was started"
    # and the real command: exit code 2, one line, no traceback
    assert_one_line_error(run_cli(*base, "--data", str(tmp_path / "empty")), "empty")


def test_thesis_csv_with_colab_paths_is_read(images: Path, tmp_path: Path) -> None:
    from lanskap.training.sources import load_training_set

    table = images / "train_dataset.csv"
    table.write_text("image,captions\n/content/drive/MyDrive/train_dataset/0.png,a misty castle\n")
    ts = load_training_set(table)
    assert len(ts) == 1 and ts.records[0].caption == "a misty castle" and ts.kind == "csv"
    table.unlink()


def test_a_prepared_dataset_trains_on_its_train_split(tmp_path: Path) -> None:
    from lanskap.data.prepare import PrepareOptions, prepare_dataset
    from lanskap.training.sources import load_training_set

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        striped(i, (520, 520)).save(src / f"v{i}.png")
        (src / f"v{i}.txt").write_text(f"a striped valley number {i}")
    opts = PrepareOptions(captioner="none", test_fraction=0.2, near_duplicate_distance=-1)
    manifest = prepare_dataset(src, tmp_path / "ds", opts)
    ts = load_training_set(tmp_path / "ds")
    train_items = [it for it in manifest["items"] if it["split"] == "train"]
    assert ts.kind == "lanskap dataset" and len(ts) == len(train_items) >= 3
    assert {r.caption for r in ts.records} == {it["caption"] for it in train_items}
    (tmp_path / "ds" / train_items[0]["file"]).unlink()
    with pytest.raises(LanskapError, match="missing"):
        load_training_set(tmp_path / "ds")


# -- the objective --------------------------------------------------------------------------------
def test_v_prediction_target_and_min_snr_weights_by_hand() -> None:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(training_target(sched, x0, eps, t, "v_prediction"), a * eps - s * x0, atol=1e-6)
    assert torch.equal(training_target(sched, x0, eps, t, "epsilon"), eps)
    ratio = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    assert torch.allclose(snr(sched, t), ratio)
    gamma = 5.0
    expect_eps = torch.minimum(ratio, torch.tensor(gamma)) / ratio
    expect_v = torch.minimum(ratio, torch.tensor(gamma)) / (ratio + 1)
    assert torch.allclose(min_snr_weights(sched, t, gamma, "epsilon"), expect_eps)
    assert torch.allclose(min_snr_weights(sched, t, gamma, "v_prediction"), expect_v)
    assert min_snr_weights(sched, t, gamma, "epsilon")[1] == 1, "below γ, ε-loss keeps full weight"
    g = torch.Generator().manual_seed(0)
    shifted = add_noise_offset(torch.zeros(2, 4, 8, 8), 0.1, g)
    assert shifted.std(dim=(2, 3)).max() == 0 and shifted.abs().max() > 0, "one constant per image and channel"


def test_noise_offset_is_a_seeded_per_channel_constant_and_draws_nothing_when_off() -> None:
    white = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    assert add_noise_offset(white, 0.0, g) is white
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state()), "off: the stream is untouched"
    extra = add_noise_offset(white, 0.1, torch.Generator().manual_seed(0)) - white
    again = add_noise_offset(white, 0.1, torch.Generator().manual_seed(0)) - white
    assert torch.equal(extra, again)
    assert torch.allclose(extra, extra[:, :, :1, :1].expand_as(extra)), "one value per image and channel"
    assert extra.abs().max() > 0


def test_buckets_keep_wide_pictures_wide_and_epochs_are_seeded() -> None:
    buckets = make_buckets(768, 64)
    assert all(w * h <= 768 * 768 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    w, h = nearest_bucket(1920, 1080, buckets)
    assert w > h and abs(w / h - 16 / 9) < 0.2, (w, h)
    p, used = plan([(1920, 1080), (1000, 1000), (600, 900)], 768, bucketing=True, step=64)
    assert len(used) == 3
    e0, e0b, e1 = p.epoch(0, 1, 42), p.epoch(0, 1, 42), p.epoch(1, 1, 42)
    assert e0 == e0b and sorted(i for batch in e0 for i in batch) == [0, 1, 2]
    assert any(p.epoch(k, 1, 42) != e0 for k in range(1, 6)), "epochs differ"
    assert e1 == p.epoch(1, 1, 42)
    square, _ = plan([(1920, 1080)], 768, bucketing=False, step=64)
    assert square.sizes == [(768, 768)]


# -- training end to end ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_train_cli_writes_loras_logs_and_pictures(
    tiny_sd: Path, images: Path, tmp_path: Path, isolated_home: Path
) -> None:
    out = tmp_path / "run"
    proc = run_cli(
        "train", "--data", str(images), "--out", str(out), "--model", str(tiny_sd),
        "--resolution", "64", "--bucket-step", "16", "--max-train-steps", "4", "--checkpointing-steps", "2",
        "--learning-rate", "1e-3", "--rank", "4", "--lora-alpha", "8", "--train-text-encoder",
        "--lr-warmup-steps", "0", "--validation-prompt", "a castle", "--num-validation-images", "1",
        "--validation-inference-steps", "2", "--seed", "7", "--output-name", "castle-style", "--save-precision", "fp32",
        env={"LANSKAP_DEVICE": "cpu"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training:" in proc.stderr and "loss=" in proc.stderr, "a progress bar with the loss"
    for name in ("pytorch_lora_weights.safetensors", "castle-style.safetensors", "loss.png",
                 "validation_grid.png", "train_config.yaml", "checkpoint-2", "checkpoint-4"):  # fmt: skip
        assert (out / name).exists(), name
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step-0", "step-2", "step-4"]
    # The run's JSON-lines log: parameters, duration, peak memory.
    (run_log,) = [json.loads(line) for line in (isolated_home / "logs" / "training.jsonl").read_text().splitlines()]
    assert run_log["steps"] == 4 and run_log["config"]["rank"] == 4 and run_log["seconds"] > 0
    assert run_log["peak_rss_mb"] > 100 and run_log["out"] == str(out)
    with Image.open(out / "loss.png") as im:
        assert im.width > 400
    # TensorBoard: loss, learning rate and gradient norm, and the validation images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(next(out.glob("logs/**/events.out.tfevents.*")).parent)).Reload()
    assert {"loss", "lr", "grad_norm", "eval_loss"} <= set(ea.Tags()["scalars"])
    assert len(ea.Scalars("loss")) == 4 and ea.Tags()["images"]
    # kohya / A1111 export
    from safetensors import safe_open

    with safe_open(str(out / "castle-style.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alpha = f.get_tensor(next(k for k in keys if k.endswith(".alpha")))
    te_keys = [k for k in keys if k.startswith("lora_te")]
    assert any(k.startswith("lora_unet_") for k in keys) and te_keys
    # A1111 and ComfyUI look SD 2.x text-encoder LoRAs up only as lora_te_text_model_encoder_layers_…
    assert all(k.startswith("lora_te_text_model_encoder_layers_") for k in te_keys), te_keys[:3]
    assert float(alpha) == 8.0
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8.0" and meta["ss_v2"] == "True"
    assert meta["modelspec.architecture"].endswith("/lora") and meta["modelspec.prediction_type"] == "v"
    assert json.loads(meta["lanskap_config"])["seed"] == 7
    # the diffusers file loads with stock diffusers, and the engine gives the same image from both files
    from diffusers import StableDiffusionPipeline

    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, LoraSpec

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)
    pipe.load_lora_weights(str(out / "pytorch_lora_weights.safetensors"))
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())
    eng = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32"))

    def image(lora: Path | None) -> np.ndarray:
        req = GenerationRequest("a castle", seed=3, steps=3, width=64, height=64, watermark=False,
                                loras=(LoraSpec(str(lora), 1.0),) if lora else ())  # fmt: skip
        return np.asarray(eng.generate(req).images[0]).astype(int)

    base, diff, kohya = (
        image(None),
        image(out / "pytorch_lora_weights.safetensors"),
        image(out / "castle-style.safetensors"),
    )
    assert np.abs(diff - base).max() > 0, "the trained LoRA changes the picture"
    assert np.abs(diff - kohya).max() <= 2, "the kohya export is the same LoRA (alpha and text encoder included)"


def test_resume_continues_exactly_and_keeps_k_checkpoints(tiny_sd: Path, images: Path, tmp_path: Path) -> None:
    st = settings(tmp_path)
    common = dict(max_train_steps=6, checkpointing_steps=2, gradient_accumulation_steps=2, checkpoints_total_limit=2)
    full = train(fast(tiny_sd, images, tmp_path / "full", **common), st)
    assert full.steps == 6 and not full.interrupted
    assert sorted(p.name for p in (tmp_path / "full").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]

    cancel = threading.Event()

    def stop_at_3(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "step" and event.step == 3:
            cancel.set()  # what Ctrl-C or the web app's Stop button does

    part = train(fast(tiny_sd, images, tmp_path / "part", **common), st, events=stop_at_3, cancel=cancel)
    assert part.interrupted and part.steps == 3 and part.lora is None
    assert (tmp_path / "part" / "checkpoint-3").is_dir(), "a stop saves a checkpoint first"
    with pytest.raises(LanskapError, match="already holds a training run"):
        train(fast(tiny_sd, images, tmp_path / "part", **common), st)
    resumed = train(fast(tiny_sd, images, tmp_path / "part", resume_from_checkpoint="latest", **common), st)
    assert resumed.steps == 6
    assert losses(tmp_path / "part") == losses(tmp_path / "full"), "the same loss curve as an unbroken run"
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(LanskapError, match="LoRA settings"):
        train(fast(tiny_sd, images, tmp_path / "part", resume_from_checkpoint="latest", **{**common, "rank": 8}), st)


def test_resume_refuses_another_base_model(tiny_sd: Path, images: Path, tmp_path: Path, models_dir: Path) -> None:
    from lanskap.models.tiny import make_tiny

    st = settings(tmp_path)
    train(fast(tiny_sd, images, tmp_path / "r", max_train_steps=2, checkpointing_steps=2), st)
    other = make_tiny(models_dir / "tiny-sd-other-seed", "sd", seed=9, overwrite=True)
    with pytest.raises(LanskapError, match="another base model"):
        train(fast(other, images, tmp_path / "r", resume_from_checkpoint="latest", max_train_steps=4), st)


def test_cached_latents_keep_flips_and_match_uncached(tiny_sd: Path, images: Path, tmp_path: Path) -> None:
    st = settings(tmp_path)
    opts = dict(center_crop=True, random_flip=True, max_train_steps=8, cache_text_embeddings=True)
    plain = train(fast(tiny_sd, images, tmp_path / "plain", **opts), st)
    cached = train(fast(tiny_sd, images, tmp_path / "cached", cache_latents=True, **opts), st)
    assert np.allclose(losses(tmp_path / "plain"), losses(tmp_path / "cached"), rtol=1e-3, atol=1e-5)
    assert plain.final_loss is not None and cached.final_loss is not None


def test_training_learns_the_look_of_the_set(tiny_sd: Path, tmp_path: Path) -> None:
    """The loss falls, and pictures made with the LoRA move towards the training pictures."""
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, LoraSpec
    from lanskap.training.batches import to_tensor

    data = write_imagefolder(tmp_path / "set", n=8)
    st = settings(tmp_path)
    cfg = fast(tiny_sd, data, tmp_path / "learn", max_train_steps=80, learning_rate=2e-3, rank=8,
               train_ff=True, train_proj=True, lr_scheduler="constant")  # fmt: skip
    result = train(cfg, st)
    rows = [json.loads(line) for line in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < 0.9 * evals[0], f"fixed-noise loss must fall: {evals}"

    eng = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32"))
    m = eng.load()
    with torch.no_grad():
        pixels = torch.stack([to_tensor(striped(i)) for i in range(8)])
        latents = m.pipe.vae.encode(pixels).latent_dist.mean
        recon = ((m.pipe.vae.decode(latents).sample + 1) * 127.5).clamp(0, 255)
    target_colour = recon.mean(dim=(0, 2, 3)).numpy()  # what the model's VAE can show of the set

    def colour_gap(lora: Path | None) -> float:
        req = GenerationRequest(CAPTION, seed=100, steps=10, width=64, height=64, num_images=4, watermark=False,
                                loras=(LoraSpec(str(lora), 1.0),) if lora else ())  # fmt: skip
        ims = np.stack([np.asarray(im).astype(float) for im in eng.generate(req).images])
        return float(np.abs(ims.mean(axis=(0, 1, 2)) - target_colour).mean())

    base_gap, lora_gap = colour_gap(None), colour_gap(result.lora)
    assert lora_gap < 0.85 * base_gap, (base_gap, lora_gap)


@pytest.mark.e2e
def test_ctrl_c_saves_a_checkpoint_and_sigkill_loses_nothing(tiny_sd: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "sig"
    args = [sys.executable, "-m", "lanskap", "train", "--data", str(images), "--out", str(out),
            "--model", str(tiny_sd), "--resolution", "64", "--bucket-step", "16", "--max-train-steps", "100000",
            "--checkpointing-steps", "5", "--no-validation", "--report-to", "none", "--rank", "4", "-q",
            "--lr-scheduler", "constant"]  # fmt: skip
    env = {**os.environ, "LANSKAP_DEVICE": "cpu", "LANSKAP_HOME": str(tmp_path / "h")}

    def wait_for(predicate, proc, limit: float = 120.0) -> None:  # type: ignore[no-untyped-def]
        end = time.time() + limit
        while not predicate():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < end, "timed out"
            time.sleep(0.2)

    def steps_logged() -> int:
        path = out / "metrics.jsonl"
        return sum('"loss"' in line for line in path.open()) if path.is_file() else 0

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: steps_logged() >= 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "resume latest" in err
    stopped_at = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert stopped_at == steps_logged() >= 3, "Ctrl-C saved the step it stopped at"

    proc = subprocess.Popen([*args, "--resume", "latest"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    wait_for(lambda: steps_logged() >= stopped_at + 12, proc)
    proc.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
    proc.communicate(timeout=60)
    complete = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert all((out / f"checkpoint-{n}" / "state.json").is_file() for n in complete), "only whole checkpoints"
    last = complete[-1]
    assert last >= stopped_at + 5
    finish = ["train", *args[4:], "--resume", "latest", "--max-train-steps", str(last + 2)]
    done = run_cli(*finish, env={"LANSKAP_DEVICE": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, last + 3)), "no step lost or counted twice"
    assert (out / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.e2e
def launch_two(tiny_sd: Path, data: Path, out: Path, home: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` of ``lanskap train`` in two CPU processes: 2 steps at 64 px, no validation."""
    launcher = Path(sys.executable).with_name("accelerate")
    return subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lanskap", "train", "--data", str(data),
         "--out", str(out), "--model", str(tiny_sd), "--resolution", "64", "--max-train-steps", "2",
         "--checkpointing-steps", "2", "--no-validation", "--report-to", "none", "-q", *flags],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "LANSKAP_DEVICE": "cpu", "LANSKAP_HOME": str(home)},
    )  # fmt: skip


def test_accelerate_launch_two_cpu_processes(tiny_sd: Path, images: Path, tmp_path: Path) -> None:
    """Data-parallel training through ``accelerate launch`` with no code change (2 CPU processes here)."""
    out = tmp_path / "ddp"
    proc = launch_two(tiny_sd, images, out, tmp_path / "h", "--rank", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stdout + proc.stderr
    assert proc.stdout.count("steps: 2") == 1, "only the main process reports"
    state = json.loads((out / "checkpoint-2" / "state.json").read_text())
    assert state["num_processes"] == 2
    assert (out / "checkpoint-2" / "rng-1.safetensors").is_file(), "every process's RNG is saved"
    assert (out / "pytorch_lora_weights.safetensors").is_file()


def test_pruning_killed_midway_leaves_no_half_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from lanskap.training import checkpoint as ckpt

    for step in (5, 10, 15):
        folder = tmp_path / ckpt.checkpoint_name(step)
        folder.mkdir()
        for name in ("state.json", "lora.safetensors", "optimizer.json"):
            (folder / name).write_text("{}")
    real_rmtree = shutil.rmtree

    def killed_after_one_file(path, ignore_errors=False):  # type: ignore[no-untyped-def]
        files = sorted(Path(path).glob("*")) if Path(path).is_dir() else []
        if files:
            (Path(path) / "state.json").unlink()  # the worst file to lose first
            raise SystemExit("killed")

    monkeypatch.setattr(shutil, "rmtree", killed_after_one_file)
    with pytest.raises(SystemExit):
        ckpt.prune(tmp_path, keep=2)
    visible = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert visible == ["checkpoint-10", "checkpoint-15"], "the victim is gone from view before any file is deleted"
    assert all((tmp_path / n / "state.json").is_file() for n in visible)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    ckpt.clear_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == visible, "the next run sweeps the half-deleted one"
