"""Training data as the run sees it: bucket sizes, the seeded order, augmentation and the caches.

Cached VAE latents (both flips) and text embeddings are made once here, and so are
the few fixed views the fixed-noise loss is measured on.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lanskap.data.augment import Augment, center_crop, hflip, resize_cover
from lanskap.images import load_rgb
from lanskap.training.batches import CachedMicroBatches, CaptionTokens, MicroBatches, Stream, to_tensor
from lanskap.training.buckets import plan as make_plan
from lanskap.training.context import Networks, Session, TextCond, TrainData, TrainRun
from lanskap.training.events import TrainEvent

if TYPE_CHECKING:
    from PIL import Image

    from lanskap.training.config import TrainConfig
    from lanskap.training.method import TrainingMethod
    from lanskap.training.sources import TrainingSet

#: The fixed-noise loss: this many training images, each at this many evenly spaced timesteps.
EVAL_IMAGES, EVAL_TIMESTEPS = 4, 5


def prepare_data(
    session: Session,
    cfg: TrainConfig,
    tset: TrainingSet,
    nets: Networks,
    method: TrainingMethod,
    class_images: list[Path] | None = None,
) -> TrainData:
    # each caption as the method trains on it (textual inversion puts its token in, DreamBooth its prompt)
    records = [replace(r, caption=method.caption(r.caption)) for r in tset.records]
    resolution = int(cfg.resolution)  # type: ignore[arg-type]
    plan, buckets = make_plan(
        [(r.width, r.height) for r in records], resolution, bucketing=cfg.bucketing, step=cfg.bucket_step
    )
    acc = session.accelerator
    stream = Stream(plan, cfg.train_batch_size, cfg.seed, acc.process_index, acc.num_processes)
    aug = Augment(
        resolution,
        random_crop=not cfg.center_crop,
        crop_scale=(cfg.crop_scale, 1.0),
        flip=cfg.random_flip,
        jitter=cfg.color_jitter,
    )
    per_step = acc.num_processes * cfg.train_batch_size * cfg.gradient_accumulation_steps
    tokens = CaptionTokens(nets.tokenizer, cfg.max_token_length, method.embeddings())
    tokens_2 = CaptionTokens(nets.tokenizer_2, cfg.max_token_length) if nets.tokenizer_2 is not None else None
    cut = sum(tokens.truncated(r.caption) for r in records)
    session.say(
        f"{len(records)} training images ({tset.kind}); {len(buckets)} bucket(s): "
        + ", ".join(f"{w}x{h}" for w, h in buckets[:6])
        + (" …" if len(buckets) > 6 else "")
        + f"; {stream.batches_per_epoch} batches per epoch"
        + (f"; {acc.num_processes} processes, {per_step} images per step" if acc.num_processes > 1 else "")
    )
    if cut:
        session.say(f"{cut} caption(s) are longer than {cfg.max_token_length} tokens and are cut")
    data = TrainData(records, plan, stream, aug, tokens, tokens_2=tokens_2)
    if cfg.cache_latents:
        _cache_latents(session, cfg, nets, data)
    if cfg.cache_text_embeddings:
        with torch.no_grad():
            prior = [str(cfg.class_prompt)] if class_images else []  # the class pictures' caption
            for cap in sorted({r.caption for r in records} | set(prior)):
                cond = _encode(nets, data, [cap], session.device)
                data.text_cache[cap] = TextCond(cond.hidden[0], None if cond.pooled is None else cond.pooled[0])
    if cfg.validation_loss and session.main:
        data.eval_views = _eval_views(session, nets, data)
    if class_images:
        data.prior_latents = _encode_pictures(session, nets, class_images, resolution)
    if cfg.cache_latents and session.on_cuda:
        nets.vae.to("cpu")  # not needed on the GPU again until validation
    if data.text_cache and session.on_cuda:  # nor the text encoders (SDXL's bigG alone is 1.4 GB in fp16)
        for encoder in text_encoders(nets):
            encoder.to("cpu")
    return data


def text_encoders(nets: Networks) -> list[torch.nn.Module]:
    return [nets.text_encoder] if nets.text_encoder_2 is None else [nets.text_encoder, nets.text_encoder_2]


def centred(path: Path, w: int, h: int) -> Image.Image:
    """A picture covering ``w``×``h`` and cut at the centre: the view cached latents and fixed views use."""
    return center_crop(resize_cover(load_rgb(path), w, h), (w, h))


def _encode_pictures(session: Session, nets: Networks, paths: list[Path], size: int) -> list[torch.Tensor]:
    """Each picture's latent distribution (centre crop at ``size``), for pictures seen as they are."""
    out = []
    with torch.no_grad():
        for path in paths:
            view = centred(path, size, size)
            pixels = to_tensor(view)[None].to(session.device, nets.vae.dtype)
            out.append(nets.vae.encode(pixels).latent_dist.parameters[0])
    return out


def _cache_latents(session: Session, cfg: TrainConfig, nets: Networks, data: TrainData) -> None:
    variants = (False, True) if cfg.random_flip else (False,)
    with torch.no_grad():
        for i, rec in enumerate(data.records):
            w, h = data.plan.sizes[i]
            view = centred(rec.path, w, h)
            pixels = torch.stack([to_tensor(hflip(view) if f else view) for f in variants])
            params = nets.vae.encode(pixels.to(session.device, nets.vae.dtype)).latent_dist.parameters
            for f, p in zip(variants, params, strict=True):
                data.latent_cache[(i, f)] = p
            session.emit(TrainEvent("cache", step=i + 1, total=len(data.records), message="caching latents"))


def _eval_views(session: Session, nets: Networks, data: TrainData) -> list[tuple[torch.Tensor, str]]:
    views = []
    with torch.no_grad():
        for i in range(min(EVAL_IMAGES, len(data.records))):
            w, h = data.plan.sizes[i]
            view = centred(data.records[i].path, w, h)
            mean = nets.vae.encode(to_tensor(view)[None].to(session.device, nets.vae.dtype)).latent_dist.mean
            views.append((mean * nets.vae.config.scaling_factor, data.records[i].caption))
    return views


def micro_batches(run: TrainRun) -> torch.utils.data.DataLoader:
    """The micro-batches still to come, from the run's step on (a resume continues the same order)."""
    accum, total, data = run.cfg.gradient_accumulation_steps, run.cfg.max_train_steps, run.data
    dataset_cls = CachedMicroBatches if data.latent_cache else MicroBatches
    left = max(0, total - run.step) * accum
    return torch.utils.data.DataLoader(
        dataset_cls(data.stream, data.records, data.aug, start=run.step * accum, count=left),
        batch_size=None,
        shuffle=False,
        num_workers=0 if data.latent_cache else run.cfg.dataloader_num_workers,
        collate_fn=_identity,
    )


def _identity(x: object) -> object:
    return x


def encode_captions(run: TrainRun, captions: list[str]) -> TextCond:
    """The text conditioning of a batch of captions (cached, or with gradients when the text encoders train)."""
    from lanskap.prompts.embeddings import substituted

    if run.data.text_cache:
        conds = [run.data.text_cache[c] for c in captions]
        pooled = None if conds[0].pooled is None else torch.stack([c.pooled for c in conds])  # type: ignore[misc]
        return TextCond(torch.stack([c.hidden for c in conds]), pooled)
    grad = contextlib.nullcontext() if run.method.text_grad and torch.is_grad_enabled() else torch.no_grad()
    with grad, substituted(run.nets.text_encoder, run.data.tokens.fixes(captions)):
        return _encode(run.nets, run.data, captions, run.session.device)


def _encode(nets: Networks, data: TrainData, captions: list[str], device: torch.device) -> TextCond:
    """SD 1.x/2.x: the encoder's last hidden states. SDXL, as kohya and diffusers' SDXL example train it:
    both encoders' penultimate states side by side, and bigG's pooled output of the first chunk."""
    ids = data.tokens.batch(captions).to(device)
    if nets.text_encoder_2 is None or data.tokens_2 is None:
        return TextCond(encode_ids(nets.text_encoder, ids, len(captions)))
    n = len(captions)
    first = nets.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    out = nets.text_encoder_2(data.tokens_2.batch(captions).to(device), output_hidden_states=True)
    hidden = torch.cat([first, out.hidden_states[-2].to(first.dtype)], dim=-1)
    pooled = out[0].reshape(n, -1, out[0].shape[-1])[:, 0]
    return TextCond(hidden.reshape(n, -1, hidden.shape[-1]), pooled)


def encode_ids(text_encoder: torch.nn.Module, ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch · chunks, 77) ids → (batch, 77 · chunks, dim) hidden states."""
    from lanskap.prompts.encode import encode_rows

    z = encode_rows(text_encoder, ids)
    return z.reshape(batch, -1, z.shape[-1])
