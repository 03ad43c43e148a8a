"""lanskap-mini: the shipped model, its prompt following, the fallback, its trainer and the LoRA loop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, main_cli, run_cli
from lanskap.mini import model as arch


@pytest.fixture(scope="module")
def mini_engine(tmp_path_factory: pytest.TempPathFactory):
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    home = tmp_path_factory.mktemp("mini-home")
    return Engine(settings=Settings(home=home, model="lanskap-mini", device="cpu", dtype="fp32"))


def _gen(engine, prompt: str, seed: int, **kw) -> Image.Image:  # type: ignore[no-untyped-def]
    from lanskap.generation.params import GenerationRequest

    return engine.generate(GenerationRequest(prompt, seed=seed, steps=kw.pop("steps", 20), **kw)).images[0]


def test_shipped_weights_are_sd_classes_in_safetensors_under_30_mb() -> None:
    import diffusers
    import transformers

    folder = arch.shipped()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt", ".pth")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction"
    assert diffusers and transformers
    card = arch.card(folder)
    assert card["config"]["seed"] == 0 and "lanskap mini train" in card["command"]


@pytest.mark.slow  # 72 generations (70 s); test_the_prompt_changes_the_picture keeps a quality check in the default run
def test_prompt_following_on_held_out_prompts(mini_engine) -> None:
    """A lower bound on the share of requested attributes present (sky, moons, water, snow, castle).

    The shipped weights (the 64-128-192 UNet after the full 2,400-step schedule, plain v-prediction
    loss) measure 90% here (sky 92%); the issue's target is 80%, which is the bound, so any real
    regression in the engine, the loader or the weights fails it.
    """
    from lanskap.mini.follow import HELD_OUT_SEED, measure

    report, images = measure(lambda p, s: _gen(mini_engine, p, s), 24, seed=1, start=HELD_OUT_SEED)
    assert images[0].size == (128, 128)
    assert report.asked >= 40
    assert report.rate >= 0.80, report.summary()
    sky = report.by_attribute()["sky"]
    assert sky[0] / sky[1] >= 0.8, report.summary()


def test_score_cli_reports_on_a_fresh_held_out_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lanskap mini score --start` measures another set of held-out prompts; training seeds are refused."""
    from lanskap.mini.follow import HELD_OUT_SEED, held_out_prompts

    start = HELD_OUT_SEED + 500_000
    args = ("mini", "score", "--count", "2", "--steps", "4", "-q", "--start", str(start), "--out", str(tmp_path / "r"))
    levers = ("--cache-interval", "2", "--token-merging", "0.3", "--token-merging-downsample", "2")  # generate's
    proc = main_cli(capsys, *args, *levers)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r" / "follow.json").read_text())
    assert [c["prompt"] for c in report["cases"]] == [p for p, _ in held_out_prompts(2, start)]
    assert "Cache interval: 2" in report["parameters"] and "Token merging ratio: 0.3" in report["parameters"]
    bad = main_cli(capsys, "mini", "score", "--count", "1", "--cache-interval", "99")
    assert_one_line_error(bad, "cache interval must be between 0")
    assert f"{report['present']}/{report['asked']}" in proc.stdout and (tmp_path / "r" / "follow.png").is_file()
    assert_one_line_error(main_cli(capsys, "mini", "score", "--start", "5"), "--start must be 1000000000 or more")


def test_same_prompt_different_seeds_different_compositions(mini_engine) -> None:
    from lanskap.mini.follow import composition_distance

    prompt = "a fantasy landscape with snowy mountains, a castle and a lake at sunset"
    images = [_gen(mini_engine, prompt, s) for s in (11, 12, 13)]
    again = _gen(mini_engine, prompt, 11)
    assert composition_distance(images[0], again) < 1.0  # same seed: same picture
    for i in range(3):
        for j in range(i + 1, 3):
            assert composition_distance(images[i], images[j]) > 4.0


def test_the_prompt_changes_the_picture(mini_engine) -> None:
    """Over the same seeds, the sky follows the words: sunset skies at sunset, blue by day, dark at night.

    The seed must not pick the sky: weights trained with min-SNR weighting drew the same sky for
    "night" and "clear day" on 3 of these 6 seeds, so every seed is checked.
    """
    from lanskap.mini.detect import detect

    def six(prompt: str) -> list[Image.Image]:  # seeds 1 to 6 in one batch: each image keeps its own seed
        from lanskap.generation.params import GenerationRequest

        result = mini_engine.generate(GenerationRequest(prompt, seed=1, steps=10, num_images=6, batch_size=6))
        assert result.seeds == [1, 2, 3, 4, 5, 6]
        return result.images

    sunset = six("rolling hills and a lake at sunset")
    day = [np.asarray(im, float)[:40] for im in six("rolling hills and a lake on a clear day")]
    night = [np.asarray(im, float)[:40] for im in six("rolling hills and a lake in the dark of night")]
    assert [detect(im)["sky"] for im in sunset] == ["sunset"] * 6
    blue = [d for d in day if d[..., 2].mean() > d[..., 0].mean() + 30 and d.mean() > 120]  # blue and bright
    assert len(blue) == 6
    assert np.mean([np.asarray(im, float)[:40].mean() for im in sunset]) < np.mean([d.mean() for d in blue]) - 30
    assert all(n.mean() < 60 for n in night)  # dark skies, not just dimmer ones


def test_every_mode_works_on_mini(mini_engine) -> None:
    from lanskap.generation.params import GenerationRequest, InitImage, InpaintMask

    base = _gen(mini_engine, "green hills under a blue sky", 3, steps=10)
    var = mini_engine.generate(
        GenerationRequest(
            "green hills at sunset", seed=3, steps=10, init=InitImage(base, strength=0.6), scheduler="Euler a"
        )
    ).images[0]
    assert var.size == base.size and np.abs(np.asarray(var, float) - np.asarray(base, float)).mean() > 2
    mask = Image.new("L", base.size, 0)
    mask.paste(255, (0, 0, 128, 40))
    painted = mini_engine.generate(
        GenerationRequest(
            "green hills at night", seed=3, steps=10, init=InitImage(base, 1.0), mask=InpaintMask(mask, fill="noise")
        )
    ).images[0]
    a, b = np.asarray(painted, int), np.asarray(base, int)
    assert np.abs(a[80:] - b[80:]).max() <= 3  # far from the mask: the input's pixels
    assert np.abs(a[:30] - b[:30]).mean() > 5  # the masked sky was repainted


def test_generate_falls_back_to_mini_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = run_cli(
        "generate",
        "a castle by a lake under two moons at night",
        "--seed",
        "3",
        "--steps",
        "12",
        "--out",
        str(out),
        "--no-gallery",
        "--json",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    fallback = [ln for ln in proc.stderr.splitlines() if "FALLBACK" in ln]
    assert len(fallback) == 1 and "lanskap-mini" in fallback[0] and "sd2-community" in fallback[0]
    # said before lanskap-mini's loading progress, not after it
    assert proc.stderr.index("FALLBACK") < proc.stderr.index("Loading pipeline components"), proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] == "lanskap-mini" and summary["size"] == [128, 128]
    with Image.open(summary["images"][0]) as im:
        assert "Model: lanskap-mini" in im.info["parameters"]


def test_fallback_none_and_bad_fallback_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = main_cli(capsys, "generate", "x", "--fallback", "nope", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "fallback must be one of mini, tiny, none")


def test_mini_train_is_reproducible_from_a_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs with the same seed give the same weights: a run stopped at step 2 equals another's snapshot."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from lanskap.mini.train import MiniConfig, train_mini

    cfg = MiniConfig(scenes=16, vae_steps=3, vae_batch=2, decoder_steps=2, decoder_batch=2, steps=4, batch=4)
    cfg = replace(cfg, snapshot_every=2, unet_channels=(16, 32, 48))  # a narrow UNet: the same code, a third the time
    a = train_mini(tmp_path / "a", cfg)
    b = train_mini(tmp_path / "b", replace(cfg, stop_after=2))
    unet = "unet/diffusion_pytorch_model.safetensors"
    wa, wb = load_file(tmp_path / "a" / "snapshots" / "step-00002" / unet), load_file(b / unet)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    final = load_file(a / unet)
    assert any(not (final[k] == wa[k]).all() for k in wa)  # two more steps changed it
    assert "--stop-after 2" in arch.card(b)["command"]
    assert (tmp_path / "a" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "a" / "vae_loss.png").stat().st_size > 1000
    assert (tmp_path / "a" / "decoder_loss.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows].count("unet") == 4
    assert [r["stage"] for r in rows].count("decoder") == 2
    # reusing that run's VAE skips the VAE stages and makes the very same model
    c = train_mini(tmp_path / "c", replace(cfg, vae_from=str(a)))
    for part in (unet, "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        wa, wc = load_file(a / part), load_file(c / part)
        assert wa.keys() == wc.keys() and all((wa[k] == wc[k]).all() for k in wa), part
    assert (c / "vae" / "config.json").read_text() == (a / "vae" / "config.json").read_text()
    assert not (tmp_path / "c" / "vae_loss.png").exists() and f"--vae-from {a}" in arch.card(c)["command"]
    # min-SNR weighting on (off by default): the same draws as a, so only the loss weighting differs
    p = train_mini(tmp_path / "p", replace(cfg, vae_from=str(a), min_snr_gamma=5))
    wp = load_file(p / unet)
    assert any(not (wp[k] == final[k]).all() for k in final) and "--min-snr-gamma 5" in arch.card(p)["command"]
    assert "--min-snr-gamma" not in arch.card(a)["command"]
    # the trained folder is a model like any other
    proc = main_cli(
        capsys, "generate", "hills", "--model", str(a), "--steps", "2", "--no-gallery", "--out", str(tmp_path / "g")
    )
    assert proc.returncode == 0, proc.stderr


MINI_ARGS = ("mini", "train", "--scenes", "16", "--vae-steps", "2", "--decoder-steps", "2", "--steps", "2")
MINI_ARGS += ("--batch", "2")


@pytest.mark.slow  # five small training runs through the CLI (3 minutes); the core trainer is tested above
def test_mini_train_cli_progress_and_other_seed(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    args = MINI_ARGS
    proc = run_cli(*args, "--seed", "5", "--out", str(tmp_path / "s5"))
    assert proc.returncode == 0, proc.stderr
    assert "UNet + text" in proc.stderr and "VAE decoder" in proc.stderr and "decoder_loss.png" in proc.stdout
    card = arch.card(tmp_path / "s5" / "model")
    assert card["config"]["seed"] == 5
    shipped = load_file(arch.shipped() / "unet" / "diffusion_pytorch_model.safetensors")
    other = load_file(tmp_path / "s5" / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not (shipped[k] == other[k]).all() for k in shipped)
    again = run_cli(*args, "--seed", "5", "--out", str(tmp_path / "s5"))
    assert "already exists" in again.stderr and again.returncode != 0
    # a wider UNet on the VAE of that run
    s5 = str(tmp_path / "s5" / "model")
    wide = run_cli(*args, "--unet-channels", "16,32,48", "--vae-from", s5, "--out", str(tmp_path / "w"))
    assert wide.returncode == 0, wide.stderr
    assert "VAE decoder" not in wide.stderr
    config = json.loads((tmp_path / "w" / "model" / "unet" / "config.json").read_text())
    assert config["block_out_channels"] == [16, 32, 48]
    assert "--unet-channels 16,32,48 --vae-from" in arch.card(tmp_path / "w" / "model")["command"]
    # the stock pipeline drives it unchanged
    made = run_cli("generate", "hills", "--model", str(tmp_path / "w" / "model"), "--steps", "2", "--no-gallery",
                   "--out", str(tmp_path / "wg"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert len(list((tmp_path / "wg").glob("*.png"))) == 1
    # bf16 autocast, on the CPU: the same seed and VAE, so only the precision differs from s5
    half = run_cli(*args, "--seed", "5", "--vae-from", s5, "--out", str(tmp_path / "h"),
                   "--mixed-precision", "bf16", "--device", "cpu")  # fmt: skip
    assert half.returncode == 0, half.stderr
    full = run_cli(*args, "--seed", "5", "--vae-from", s5, "--out", str(tmp_path / "f"))
    assert full.returncode == 0, full.stderr
    unet = "unet/diffusion_pytorch_model.safetensors"
    bf16, fp32 = load_file(tmp_path / "h" / "model" / unet), load_file(tmp_path / "f" / "model" / unet)
    assert any(not (bf16[k] == fp32[k]).all() for k in fp32) and all(bf16[k].isfinite().all() for k in bf16)
    assert "--mixed-precision bf16" in arch.card(tmp_path / "h" / "model")["command"]
    assert arch.card(tmp_path / "h" / "model")["config"]["mixed_precision"] == "bf16"


def test_mini_train_cli_refuses_bad_settings_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = MINI_ARGS
    bad = run_cli(*args, "--min-snr-gamma", "-1", "--out", str(tmp_path / "x"))  # one real process
    assert_one_line_error(bad, "min_snr_gamma must be between 0 (off) and 100")
    for removed in ("--short-captions", "--beta-end", "--low-freq-noise", "--low-freq-noise-from", "--text-time-embed"):
        gone = main_cli(capsys, *args, removed, "1", "--out", str(tmp_path / "x"))
        assert gone.returncode == 2 and "No such option" in gone.stderr, removed
    bad = main_cli(capsys, *args, "--mixed-precision", "fp16", "--out", str(tmp_path / "x"))
    assert_one_line_error(bad, "mixed_precision must be no or bf16")
    if not torch.cuda.is_available():
        bad = main_cli(capsys, *args, "--device", "cuda", "--out", str(tmp_path / "x"))
        assert_one_line_error(bad, "no CUDA GPU is available")
    assert not (tmp_path / "x").exists()
    bad = main_cli(capsys, *args, "--unet-channels", "16,32", "--out", str(tmp_path / "x"))
    assert_one_line_error(bad, "--unet-channels needs three numbers")
    bad = main_cli(capsys, *args, "--vae-from", str(tmp_path), "--out", str(tmp_path / "x"))
    assert_one_line_error(bad, "not a lanskap-mini folder")


def test_style_dataset_and_palette_metric(tmp_path: Path) -> None:
    from lanskap.evaluation.distances import palette_distance, palette_histogram
    from lanskap.mini.dataset import write_scene_set

    plain = write_scene_set(tmp_path / "plain", 20, test=20)
    styled = write_scene_set(tmp_path / "styled", 20, test=2, style="verdigris")
    rows = [json.loads(x) for x in (styled / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all(r["text"].endswith("in verdigris style") for r in rows)
    assert len(list((styled / "test").glob("*.png"))) == 2

    def hist(folder: Path) -> np.ndarray:
        return sum(palette_histogram(np.asarray(Image.open(p).convert("RGB"))) for p in folder.glob("*.png"))

    same = palette_distance(hist(plain / "train"), hist(plain / "test"))
    shifted = palette_distance(hist(plain / "train"), hist(styled / "train"))
    assert shifted > 0.8 and same < 0.35, (shifted, same)


def test_vae_crops_are_recoloured_by_share_and_seed() -> None:
    from lanskap.mini.train import recolour

    batch = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    assert np.array_equal(recolour(batch, np.random.default_rng(1), 0.0), batch)
    every = recolour(batch, np.random.default_rng(1), 1.0)
    assert every.min() >= 0 and every.max() <= 255
    assert all((every[k] != batch[k]).any() for k in range(64))
    half = recolour(batch, np.random.default_rng(2), 0.5)
    changed = sum(bool((half[k] != batch[k]).any()) for k in range(64))
    assert 16 <= changed <= 48, changed
    assert np.array_equal(half, recolour(batch, np.random.default_rng(2), 0.5))  # the seed decides it


def test_decoder_polish_leaves_the_encoder_and_its_latents_alone(tmp_path: Path) -> None:
    """``polish_decoder`` trains the decoder only, so latents the UNet learned from stay valid."""
    import torch

    from lanskap.mini.scenes import render, sample_scene
    from lanskap.mini.train import MiniConfig, _to_tensor, polish_decoder
    from lanskap.training.monitor import MetricsLog

    torch.manual_seed(0)
    vae = arch.vae()
    pixels = np.stack([np.asarray(render(sample_scene(i))) for i in range(4)])
    x = _to_tensor(pixels[:2])
    with torch.no_grad():
        before = vae.to(torch.float16).float().encode(x).latent_dist.mean
    enc = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    dec = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    log = MetricsLog(tmp_path)
    out = polish_decoder(vae, pixels, MiniConfig(decoder_steps=3, decoder_batch=2, decoder_lr=1e-2), log, None)
    assert all(torch.equal(enc[k], v) for k, v in out.encoder.state_dict().items())
    assert any(not torch.equal(dec[k], v) for k, v in out.decoder.state_dict().items())
    with torch.no_grad():
        assert torch.allclose(before, out.encode(x).latent_dist.mean, atol=1e-5)
    assert all(p.requires_grad for p in out.parameters())  # trainable again for whoever holds it
    assert [r["stage"] for r in log.read()] == ["decoder"] * 3


def test_shipped_vae_carries_colours_the_scenes_never_use() -> None:
    """A style LoRA can only show a palette the VAE can decode: a verdigris scene survives a round trip.

    The first shipped VAE (fitted without ``recolour``) gave 0.85 here, folding teal and copper
    onto the scenes' blues and oranges, and no LoRA could show the style.
    """
    import torch
    from diffusers import AutoencoderKL

    from lanskap.evaluation.distances import palette_distance, palette_histogram
    from lanskap.mini.model import shipped
    from lanskap.mini.scenes import render, sample_scene, stylise

    vae = AutoencoderKL.from_pretrained(shipped() / "vae", torch_dtype=torch.float32).eval()
    styled = np.stack([np.asarray(stylise(render(sample_scene(10**9 + i)), "verdigris")) for i in range(8)])
    with torch.no_grad():
        x = torch.from_numpy(styled).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    back = ((y.permute(0, 2, 3, 1) + 1) * 127.5).round().numpy().astype(np.uint8)
    distance = palette_distance(sum(map(palette_histogram, styled)), sum(map(palette_histogram, back)))
    assert distance < 0.45, distance


def test_large_sizes_on_a_small_model_say_so(mini_engine) -> None:
    from lanskap.generation.params import GenerationRequest

    result = mini_engine.generate(GenerationRequest("plains at dawn", seed=1, steps=2, width=384, height=128))
    assert result.images[0].size == (384, 128)
    assert any("trained at 128 px" in n for n in result.notices)


def _train_and_evaluate(
    tmp_path: Path, data: Path, *, eval_steps: int, train_args: tuple[str, ...], timeout: float = 300
) -> dict:  # type: ignore[type-arg]
    """The tutorial's loop through the CLI: lanskap train a style LoRA on mini, then lanskap evaluate its palette."""
    run = tmp_path / "run"
    train = run_cli(
        "train", "--data", str(data), "--model", "lanskap-mini", "--out", str(run), *train_args,
        "--center-crop", "--cache-latents", "--cache-text-embeddings", "--no-validation",
        "--checkpointing-steps", "1000", "-q", timeout=timeout,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert (run / "lanskap-lora.safetensors").is_file()
    proc = run_cli(
        "evaluate", str(data), "--model", "lanskap-mini", "--lora", str(run / "lanskap-lora.safetensors"),
        "--clip-model", "none", "--metrics", "palette", "--steps", str(eval_steps),
        "--out", str(tmp_path / "report"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["metrics"]


@pytest.mark.slow  # a minute; the default run covers `train` and `evaluate` through the CLI on their own
def test_the_tutorial_loop_runs_on_mini(tmp_path: Path) -> None:
    """The tutorial's loop in miniature, through the CLI: style set → lanskap train → lanskap evaluate.

    A short run (12 steps): it proves the path, and that the LoRA reaches the evaluation's
    pictures. How far a full run moves the palette is the slow test below.
    """
    from lanskap.mini.dataset import write_scene_set

    data = write_scene_set(tmp_path / "verdigris", 12, test=4, style="verdigris")
    metrics = _train_and_evaluate(tmp_path, data, eval_steps=6, train_args=(
        "--max-train-steps", "12", "--train-batch-size", "2", "--rank", "8", "--learning-rate", "3e-3",
        "--lr-warmup-steps", "5",
    ))  # fmt: skip
    assert (tmp_path / "run" / "loss.png").is_file()
    base, lora = (metrics[name]["palette"]["value"] for name in ("base", "lora"))
    assert metrics["lora"]["palette"]["n_generated"] == 4
    assert 0 < lora < 2 and lora != base, "the LoRA changes the evaluated pictures"
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.slow  # 300 training steps: about five minutes on two cores
def test_a_style_lora_on_mini_moves_its_palette(tmp_path: Path) -> None:
    """The tutorial's loop, shortened: style set → lanskap train → lanskap evaluate, on the built-in model.

    The LoRA must bring the generated palette measurably closer to the style set than the base
    model's (on the current weights this run goes from 0.95 to 0.83; at 4e-3 only to 0.88, and at
    8e-3 it overshoots to 0.99, so the rate matters).
    """
    from lanskap.mini.dataset import write_scene_set

    data = write_scene_set(tmp_path / "verdigris", 24, test=8, style="verdigris")
    metrics = _train_and_evaluate(tmp_path, data, eval_steps=12, timeout=900, train_args=(
        "--max-train-steps", "300", "--train-batch-size", "4", "--rank", "16", "--learning-rate", "2e-3",
        "--lr-warmup-steps", "10", "--train-ff", "--train-proj",
    ))  # fmt: skip
    base, lora = (metrics[name]["palette"]["value"] for name in ("base", "lora"))
    assert metrics["lora"]["palette"]["n_generated"] == 8
    assert lora < base - 0.08, (base, lora)
    assert (tmp_path / "report" / "report.html").is_file()


def test_web_app_falls_back_to_mini_and_uses_its_size(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from conftest import REPO
    from lanskap.gallery import Gallery
    from lanskap.ui.common import service

    monkeypatch.setenv("LANSKAP_UI_PRELOAD", "0")
    service.clear()
    try:
        service().engine.load()  # as `lanskap ui` preloads: SD 2.1 is absent, so this is lanskap-mini
        at = AppTest.from_file(str(REPO / "src" / "lanskap" / "ui" / "app.py"), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        info = " ".join(str(e.value) for kind in ("info", "warning") for e in at.get(kind))
        assert "FALLBACK" in info and "Demo model: **lanskap-mini**" in info
        assert at.number_input(key="g_width").value == 128 and at.number_input(key="g_height").value == 128
        at.text_area(key="g_prompt").input("snowy mountains and a castle at sunset")
        at.slider(key="g_steps").set_value(8)
        at.button(key="go-txt2img").click().run()
        end = time.time() + 120
        while Gallery(isolated_home).query()[1] == 0 and time.time() < end:
            time.sleep(0.2)
        rows, n = Gallery(isolated_home).query()
        assert n == 1 and rows[0].model == "lanskap-mini" and (rows[0].width, rows[0].height) == (128, 128)
    finally:
        service().queue.shutdown()
        service.clear()


def test_api_falls_back_to_mini(isolated_home: Path) -> None:
    import base64
    import io

    import requests

    from lanskap.api.security import ServeConfig
    from lanskap.config import load_settings
    from lanskap.service import Service
    from test_api import Server

    server = Server(Service(load_settings()), ServeConfig(rate_per_minute=100_000, rate_burst=1000))
    try:
        body = {"prompt": "rolling hills and a lake under two moons at night", "steps": 12, "seed": 4}
        body |= {"width": 128, "height": 128}
        answer = requests.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=120).json()
        info = json.loads(answer["info"])
        assert "Model: lanskap-mini" in info["infotexts"][0]
        image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
        assert image.size == (128, 128)
        models = requests.get(server.url + "/sdapi/v1/sd-models", timeout=10).json()
        assert models[0]["model_name"] == "lanskap-mini"
    finally:
        server.stop()
