"""Train lanskap-mini from a seed: render scenes, fit the VAE, then the UNet and text encoder.

This is a base-model trainer (every weight from scratch), which is a different job from
``lanskap.training`` (a LoRA on a frozen base), so it has its own short loop; the objective
(v-prediction, with optional min-SNR weighting), the metrics log and the loss plot are shared with it.
Everything random comes from the seed, so the same seed on the same machine and thread count
gives the same weights. Stages:

1. render ``scenes`` procedural landscapes at 128 px (``lanskap.mini.scenes``);
2. fit the AutoencoderKL on random 64 px crops, half of them repainted in random colours so it
   can carry any palette (L1 + MSE + L1 of 8×8-pooled colour + a small KL term); set its
   ``scaling_factor`` so latents have unit variance, as SD's 0.18215 does;
3. encode every scene once, then polish the decoder on whole scenes with the encoder frozen
   (``polish_decoder``: the latents stay what they are);
4. train the UNet and the CLIP text encoder together on
   (latent, caption) pairs, with a fresh phrasing of the caption at every visit, 10% empty
   captions so classifier-free guidance works; keep an EMA of the weights, which is what ships.

``vae_from`` skips stages 2 and 3 by reusing a trained model's VAE. The UNet stage has its own
random stream and the full run encodes with the fp16 weights that ship, so reusing the VAE of a
run with the same seed gives the very weights that run made, without its half hour of VAE work.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from lanskap.errors import LanskapError, SettingError
from lanskap.mini import model as arch
from lanskap.mini.config import _WEIGHT_FLAGS, MiniConfig  # noqa: F401 - re-exported
from lanskap.mini.scenes import caption, gradient_map, render, sample_scene
from lanskap.training.loss import diffusion_loss, min_snr_weights, training_target
from lanskap.training.monitor import MetricsLog, plot_loss

if TYPE_CHECKING:
    from lanskap.mini.scenes import Scene


ProgressFn = Callable[[str, int, int, dict[str, float]], None]  # stage, done, total, metrics


def render_set(cfg: MiniConfig, progress: ProgressFn | None = None) -> tuple[np.ndarray, list[Any]]:
    """The training scenes (seeds ``seed·10⁶ + i``; held-out prompts use other seeds) as uint8 NHWC."""
    scenes = [sample_scene(cfg.seed * 1_000_000 + i) for i in range(cfg.scenes)]
    pixels = np.empty((cfg.scenes, arch.SIZE, arch.SIZE, 3), np.uint8)
    for i, scene in enumerate(scenes):
        pixels[i] = np.asarray(render(scene, arch.SIZE))
        if progress and (i + 1) % 200 == 0:
            progress("render", i + 1, cfg.scenes, {})
    return pixels, scenes


def _to_tensor(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def recolour(batch: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    """Repaint a random ``share`` of a uint8 NHWC batch in random colours, so the VAE spans the colour cube.

    The scenes use a few dozen palettes. A VAE fitted only on them folds every other colour onto
    the nearest one it knows (a teal-and-copper style came back blue and orange), and then no LoRA
    on the UNet can ever show that style. Half the repaints swap and rescale the channels, half
    are gradient maps through 2 to 5 random colours, the kind of change a palette style makes.
    """
    out = batch.astype(np.float32)
    for k in range(len(out)):
        if rng.random() >= share:
            continue
        if rng.random() < 0.5:
            gain = rng.uniform(0.5, 1.2, 3).astype(np.float32)
            offset = rng.uniform(-60, 60, 3).astype(np.float32)
            out[k] = out[k][..., rng.permutation(3)] * gain + offset
        else:
            out[k] = gradient_map(out[k], rng.uniform(0, 255, (int(rng.integers(2, 6)), 3)).astype(np.float32))
    return np.clip(out, 0, 255)


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def fit_vae(
    pixels: np.ndarray, cfg: MiniConfig, log: MetricsLog, progress: ProgressFn | None, gen: torch.Generator
) -> Any:
    dev = cfg.torch_device()
    vae = arch.vae().to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed + 1)
    c = cfg.vae_crop
    for step in range(cfg.vae_steps):
        idx = rng.integers(0, len(pixels), cfg.vae_batch)
        y, x = rng.integers(0, arch.SIZE - c + 1, 2)
        x0 = _to_tensor(recolour(pixels[idx, y : y + c, x : x + c], rng, cfg.vae_recolour)).to(dev)
        lr = _lr(step, cfg.vae_steps, cfg.vae_lr, 50)
        for group in opt.param_groups:
            group["lr"] = lr
        post = vae.encode(x0).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(dev)
        kl = post.kl().mean() / z[0].numel()
        recon, l1, pooled = _vae_loss(vae.decode(z).sample, x0)
        loss = recon + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        row = {
            "stage": "vae",
            "step": step + 1,
            "loss": loss.item(),
            "l1": l1.item(),
            "pooled": pooled.item(),
            "lr": lr,
        }
        log.append(row)
        if progress:
            progress("vae", step + 1, cfg.vae_steps, {"loss": row["loss"]})
    vae.eval()
    return vae


def _vae_loss(rec: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L1 + MSE + L1 of 8×8-pooled colour; returns (sum, l1, pooled)."""
    l1 = (rec - x0).abs().mean()
    # Broad colour fields (a sky's hue) decide what the detector and a viewer read; per-pixel
    # losses let them drift (violet came back dawn-blue), so their pooled error counts again.
    pooled = (F.avg_pool2d(rec, 8) - F.avg_pool2d(x0, 8)).abs().mean()
    return l1 + F.mse_loss(rec, x0) + pooled, l1, pooled


def load_vae(source: str) -> Any:
    """The VAE of a saved lanskap-mini (a folder, or "lanskap-mini" for the shipped one), safetensors only."""
    from diffusers import AutoencoderKL

    folder = arch.shipped() if source == arch.NAME else Path(source).expanduser()
    if not arch.is_mini(folder) or not any((folder / "vae").glob("*.safetensors")):
        raise SettingError(f"{source} is not a lanskap-mini folder with a safetensors VAE to reuse", "vae_from")
    loaded = AutoencoderKL.from_pretrained(str(folder / "vae"), use_safetensors=True)
    # Rebuilt from its config without ``_name_or_path``, so the source's path doesn't leak into ours.
    vae = AutoencoderKL.from_config({k: v for k, v in loaded.config.items() if k != "_name_or_path"})
    vae.load_state_dict(loaded.state_dict())
    return vae.float().eval()


def polish_decoder(vae: Any, pixels: np.ndarray, cfg: MiniConfig, log: MetricsLog, progress: ProgressFn | None) -> Any:
    """Fine-tune only the decoder on whole scenes, from the fp16 weights that ship.

    The VAE learns on 64 px crops, so an image's top rows, where a sky is read, are almost never
    a crop's edge, and the decoder drifts there (zero padding makes edges their own case). With
    the encoder frozen the latents, and so the UNet's training data, stay exactly as encoded.
    Starting from the fp16-rounded weights makes this stage repeatable from a saved model.
    """
    dev = cfg.torch_device()
    vae = vae.to(dev, torch.float16).float()
    if not cfg.decoder_steps:
        return vae.eval()
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed + 3)
    vae.train()
    for step in range(cfg.decoder_steps):
        picked = pixels[rng.integers(0, len(pixels), cfg.decoder_batch)]
        x0 = _to_tensor(recolour(picked, rng, cfg.vae_recolour)).to(dev)
        lr = _lr(step, cfg.decoder_steps, cfg.decoder_lr, 20)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            z = vae.encode(x0).latent_dist.mean
        loss, l1, _ = _vae_loss(vae.decode(z).sample, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.append({"stage": "decoder", "step": step + 1, "loss": loss.item(), "l1": l1.item(), "lr": lr})
        if progress:
            progress("decoder", step + 1, cfg.decoder_steps, {"loss": loss.item()})
    vae.requires_grad_(True)
    return vae.eval()


@torch.no_grad()
def encode_all(vae: Any, pixels: np.ndarray, progress: ProgressFn | None) -> torch.Tensor:
    """Posterior means of every scene (on the CPU), scaled to unit variance (the factor goes into the VAE's config)."""
    out = []
    dev = next(vae.parameters()).device
    for i in range(0, len(pixels), 64):
        out.append(vae.encode(_to_tensor(pixels[i : i + 64]).to(dev)).latent_dist.mean.cpu())
        if progress:
            progress("encode", min(i + 64, len(pixels)), len(pixels), {})
    latents = torch.cat(out)
    factor = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=factor)
    return latents * factor


class _EMA:
    """Exponential moving average of weights, with the usual warm-up (decay grows with the step)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - d)


def _caption(scene: Scene, rng: np.random.Generator, cfg: MiniConfig) -> str:
    """A training caption: empty (for guidance) or a full fresh phrasing."""
    if rng.random() < cfg.uncond:
        return ""
    return caption(scene, seed=int(rng.integers(2**31)))


def fit_unet(
    latents: torch.Tensor,
    scenes: list[Scene],
    tok: Any,
    cfg: MiniConfig,
    log: MetricsLog,
    progress: ProgressFn | None,
    snapshot: Callable[[int, Any, Any], None] | None = None,
) -> tuple[Any, Any]:
    from diffusers import DDPMScheduler

    # Its own random stream, initial weights included: the same whether the VAE was fitted or reused.
    torch.manual_seed(cfg.seed + 4)
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    dev = cfg.torch_device()
    unet, text = arch.unet(cfg.unet_channels).to(dev), arch.text_encoder(len(tok)).to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16")
    config = arch.scheduler_config()
    sched = DDPMScheduler(**{k: v for k, v in config.items() if k != "set_alpha_to_one"})
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema_unet, ema_text = _EMA(unet, cfg.ema), _EMA(text, cfg.ema)
    rng = np.random.default_rng(cfg.seed + 2)
    unet.train()
    text.train()
    for step in range(cfg.steps):
        idx = rng.integers(0, len(latents), cfg.batch)
        texts = [_caption(scenes[i], rng, cfg) for i in idx]
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        x0 = latents[torch.from_numpy(idx)]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch,), generator=gen)
        x0, noise, t = x0.to(dev), noise.to(dev), t.to(dev)
        noisy = sched.add_noise(x0, noise, t)
        with autocast:
            cond = text(ids.input_ids.to(dev))[0]
            pred = unet(noisy, t, cond).sample.float()
        target = training_target(sched, x0, noise, t, arch.PREDICTION_TYPE)
        weights = min_snr_weights(sched, t, cfg.min_snr_gamma, arch.PREDICTION_TYPE) if cfg.min_snr_gamma else None
        loss = diffusion_loss(pred, target, weights)
        lr = _lr(step, cfg.steps, cfg.lr, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_unet.update(unet, step)
        ema_text.update(text, step)
        value = loss.item()
        log.append({"stage": "unet", "step": step + 1, "loss": value, "lr": lr})
        if progress:
            progress("unet", step + 1, cfg.steps, {"loss": value})
        if cfg.stop_after is not None and step + 1 >= cfg.stop_after:
            break
        if snapshot and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
            snapshot(step + 1, ema_unet.shadow, ema_text.shadow)
    return ema_unet.shadow, ema_text.shadow


#: Each stage's loss plot in a run folder: (file name, title).
LOSS_PLOTS = {
    "vae": ("vae_loss.png", "lanskap-mini: VAE"),
    "decoder": ("decoder_loss.png", "lanskap-mini: VAE decoder on whole scenes"),
    "unet": ("loss.png", "lanskap-mini: UNet + text encoder (v-prediction loss)"),
}


def _plot_stage(log: MetricsLog, stage: str, out: Path) -> list[dict[str, Any]]:
    """Plot one stage's rows of the metrics log (no file when the stage ran no steps); returns the rows."""
    rows = [r for r in log.read() if r.get("stage") == stage]
    name, title = LOSS_PLOTS[stage]
    plot_loss(rows, out / name, title)
    return rows


def _machine(dev: torch.device) -> str:
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"threads {torch.get_num_threads()}"
    return " ".join(p for p in (platform.machine(), platform.processor(), f"torch {torch.__version__}", where) if p)


def train_mini(out: Path, cfg: MiniConfig, progress: ProgressFn | None = None) -> Path:
    """Train lanskap-mini into ``out``: ``model/`` (a diffusers folder), metrics and loss plots."""
    cfg.validate()
    dev = cfg.torch_device()  # before any work: a wrong device or path fails at once
    reused = load_vae(cfg.vae_from).to(dev) if cfg.vae_from else None
    out = Path(out)
    model_dir = out / "model"
    if model_dir.exists() and any(model_dir.iterdir()):
        raise LanskapError(f"{model_dir} already exists; choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out)
    if log.path.exists():
        log.path.unlink()
    started = time.time()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tok = arch.tokenizer(out / "tokenizer")
    pixels, scenes = render_set(cfg, progress)
    if reused is not None:
        vae = reused
        latents = encode_all(vae, pixels, progress)
    else:
        vae = fit_vae(pixels, cfg, log, progress, gen)
        _plot_stage(log, "vae", out)
        # Encode with the fp16-rounded weights that ship, so a later --vae-from of them sees these latents.
        latents = encode_all(vae.to(torch.float16).float(), pixels, progress)
        vae = polish_decoder(vae, pixels, cfg, log, progress)
        _plot_stage(log, "decoder", out)
    del pixels

    def snapshot(step: int, unet: Any, text: Any) -> None:
        card = {"name": arch.NAME, "snapshot_step": step, "config": asdict(cfg)}
        dest = out / "snapshots" / f"step-{step:05d}"
        arch.save_pipeline(dest, vae_model=vae, text_model=text, tok=tok, unet_model=unet, card=card)

    unet, text = fit_unet(latents, scenes, tok, cfg, log, progress, snapshot)
    rows = _plot_stage(log, "unet", out)
    card = {
        "name": arch.NAME,
        "config": asdict(cfg),
        "command": cfg.command(),
        "final_loss_ema": float(np.mean([r["loss"] for r in rows[-100:]])),
        "train_seconds": round(time.time() - started, 1),
        "machine": _machine(dev),
        "prediction_type": arch.PREDICTION_TYPE,
        "native_size": arch.SIZE,
    }
    arch.save_pipeline(model_dir, vae_model=vae, text_model=text, tok=tok, unet_model=unet, card=card)
    return model_dir
