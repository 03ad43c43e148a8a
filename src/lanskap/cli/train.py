"""``lanskap train``: thin shell over lanskap.training (flags named as in the diffusers LoRA example)."""

from __future__ import annotations

from pathlib import Path

import typer

from lanskap.training.config import LR_SCHEDULERS


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)


def train_cmd(
    data: str = typer.Option(None, "--data", help="Prepared dataset, imagefolder, or thesis CSV (image,captions)."),
    out: Path = typer.Option(None, "--out", "--output-dir", help="Where the LoRA, checkpoints and logs go."),
    model: str = typer.Option(None, "--model", "--pretrained-model-name-or-path", help="Base model: hub id or path."),
    preset: str = typer.Option(None, "--preset", help="default (about 50 images) or thesis (the thesis's run)."),
    config: Path = typer.Option(None, "--config", help="TOML or YAML file of settings (flags override it)."),
    image_column: str = typer.Option(None, "--image-column", help="CSV column with image paths [image]."),
    caption_column: str = typer.Option(None, "--caption-column", help="Caption column [text, caption or captions]."),
    resolution: int = typer.Option(None, "--resolution", help="Training size, a multiple of 8 [model's native]."),
    center_crop: bool = typer.Option(None, "--center-crop/--random-crop", help="Crop at the centre [random]."),
    random_flip: bool = typer.Option(None, "--random-flip/--no-random-flip", help="Horizontal flips [on]."),
    crop_scale: float = typer.Option(None, "--crop-scale", help="Below 1: random zoom-in crops down to this area."),
    color_jitter: float = typer.Option(None, "--color-jitter", help="Colour jitter strength [0: off]."),
    bucketing: bool = typer.Option(None, "--bucketing/--no-bucketing", help="Aspect-ratio buckets [on]."),
    bucket_step: int = typer.Option(None, "--bucket-step", help="Bucket side step in pixels [64]."),
    max_token_length: int = typer.Option(None, "--max-token-length", help="Caption tokens: 75, 150 or 225 [75]."),
    train_batch_size: int = typer.Option(None, "--train-batch-size", help="Images per batch per device [1]."),
    grad_accum: int = typer.Option(None, "--gradient-accumulation-steps", help="Batches per optimizer step [1]."),
    max_train_steps: int = typer.Option(None, "--max-train-steps", help="Optimizer steps [1500]."),
    learning_rate: float = typer.Option(None, "--learning-rate", help="[1e-4]"),
    text_encoder_lr: float = typer.Option(None, "--text-encoder-lr", help="[the learning rate]"),
    lr_scheduler: str = typer.Option(None, "--lr-scheduler", help=f"One of {', '.join(LR_SCHEDULERS)} [cosine]."),
    lr_warmup_steps: int = typer.Option(None, "--lr-warmup-steps", help="[100]"),
    lr_num_cycles: int = typer.Option(None, "--lr-num-cycles", help="Restarts for cosine_with_restarts [1]."),
    max_grad_norm: float = typer.Option(None, "--max-grad-norm", help="Gradient clipping; 0 turns it off [1]."),
    optimizer: str = typer.Option(None, "--optimizer", help="auto, adamw or adamw8bit [auto]."),
    use_8bit_adam: bool = typer.Option(False, "--use-8bit-adam", help="Same as --optimizer adamw8bit."),
    rank: int = typer.Option(None, "--rank", help="LoRA rank [16]."),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA alpha [the rank]."),
    train_proj: bool = typer.Option(None, "--train-proj/--no-train-proj", help="Also proj_in/proj_out."),
    train_ff: bool = typer.Option(None, "--train-ff/--no-train-ff", help="Also the feed-forward layers."),
    train_te: bool = typer.Option(
        None, "--train-text-encoder/--no-train-text-encoder", help="LoRA on the text encoder."
    ),
    prediction_type: str = typer.Option(None, "--prediction-type", help="Override: epsilon or v_prediction."),
    snr_gamma: float = typer.Option(None, "--snr-gamma", help="Min-SNR-γ weighting [5]; 0 turns it off."),
    noise_offset: float = typer.Option(None, "--noise-offset", help="Noise offset [0]."),
    mixed_precision: str = typer.Option(None, "--mixed-precision", help="auto, no, fp16 or bf16 [auto]."),
    grad_ckpt: bool = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Trade speed for memory [on]."
    ),
    cache_latents: bool = typer.Option(None, "--cache-latents/--no-cache-latents", help="Encode images once."),
    cache_text: bool = typer.Option(None, "--cache-text-embeddings/--no-cache-text-embeddings", help="Encode once."),
    workers: int = typer.Option(None, "--dataloader-num-workers", help="Image-decoding worker processes [0]."),
    checkpointing_steps: int = typer.Option(None, "--checkpointing-steps", help="Save the whole state every N steps."),
    checkpoints_total_limit: int = typer.Option(None, "--checkpoints-total-limit", help="Keep at most K [3]."),
    resume: str = typer.Option(None, "--resume", "--resume-from-checkpoint", help="latest, or a checkpoint folder."),
    validation_prompt: list[str] = typer.Option(None, "--validation-prompt", help="Repeatable [thesis prompt]."),
    num_validation_images: int = typer.Option(None, "--num-validation-images", help="Seeds per prompt [2]."),
    validation_steps: int = typer.Option(None, "--validation-inference-steps", help="Sampling steps [25]."),
    no_validation: bool = typer.Option(False, "--no-validation", help="Render no validation images."),
    report_to: str = typer.Option(None, "--report-to", help="tensorboard or none [tensorboard]."),
    seed: int = typer.Option(None, "--seed", help="[42]"),
    output_name: str = typer.Option(None, "--output-name", help="Name of the kohya/A1111 file [lanskap-lora]."),
    save_precision: str = typer.Option(None, "--save-precision", help="kohya file: fp16, bf16 or fp32 [fp16]."),
    device: str = typer.Option(None, "--device", help="auto, cuda or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fine-tune a LoRA on a captioned image set (thesis run: --preset thesis)."""
    from lanskap.cli.common import quiet_libraries, wait_notice
    from lanskap.config import load_settings
    from lanskap.jobs import JobControl
    from lanskap.jobs.training import run_training
    from lanskap.training import build_config

    quiet_libraries(quiet)
    overrides = {
        "data": data,
        "out": out,
        "model": model,
        "image_column": image_column,
        "caption_column": caption_column,
        "resolution": resolution,
        "center_crop": center_crop,
        "random_flip": random_flip,
        "crop_scale": crop_scale,
        "color_jitter": color_jitter,
        "bucketing": bucketing,
        "bucket_step": bucket_step,
        "max_token_length": max_token_length,
        "train_batch_size": train_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "max_train_steps": max_train_steps,
        "learning_rate": learning_rate,
        "text_encoder_lr": text_encoder_lr,
        "lr_scheduler": lr_scheduler,
        "lr_warmup_steps": lr_warmup_steps,
        "lr_num_cycles": lr_num_cycles,
        "max_grad_norm": max_grad_norm,
        "optimizer": "adamw8bit" if use_8bit_adam else optimizer,
        "rank": rank,
        "lora_alpha": lora_alpha,
        "train_proj": train_proj,
        "train_ff": train_ff,
        "train_text_encoder": train_te,
        "prediction_type": prediction_type,
        "noise_offset": noise_offset,
        "mixed_precision": mixed_precision,
        "gradient_checkpointing": grad_ckpt,
        "cache_latents": cache_latents,
        "cache_text_embeddings": cache_text,
        "dataloader_num_workers": workers,
        "checkpointing_steps": checkpointing_steps,
        "checkpoints_total_limit": checkpoints_total_limit,
        "resume_from_checkpoint": resume,
        "validation_prompt": list(validation_prompt) if validation_prompt else None,
        "num_validation_images": num_validation_images,
        "validation_inference_steps": validation_steps,
        "report_to": report_to,
        "seed": seed,
        "output_name": output_name,
        "save_precision": save_precision,
    }
    cfg = build_config(preset, config, overrides)
    if snr_gamma is not None:
        cfg.snr_gamma = snr_gamma or None
    if no_validation:
        cfg.validation_prompt = []
    progress = _Progress(quiet)
    try:
        settings = load_settings(device=device)
        control = JobControl(on_wait=wait_notice)
        result = run_training(cfg, settings, control=control, events=progress).result
    finally:
        progress.close()
    if not result.main_process:
        return
    for line in (f"steps: {result.steps}", f"final loss: {result.final_loss:.4f}" if result.final_loss else None):
        if line:
            typer.echo(line)
    for label, path in (
        ("LoRA (diffusers)", result.lora),
        ("LoRA (kohya/A1111)", result.kohya),
        ("last checkpoint", result.checkpoint),
        ("loss curve", result.loss_curve),
        ("validation grid", result.validation_grid),
    ):
        if path:
            typer.echo(f"{label}: {path}")
    if result.interrupted:
        typer.echo(f"stopped early; continue with: lanskap train --out {result.out} --resume latest ...", err=True)
        raise typer.Exit(130)


class _Progress:
    """tqdm bars for caching and steps (step, loss, learning rate; tqdm adds it/s); notices as lines."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.cache_bar = None

    def __call__(self, event) -> None:  # type: ignore[no-untyped-def]
        from tqdm import tqdm

        if event.kind == "notice":
            (tqdm.write if self.bar else typer.echo)(event.message, file=None)
            return
        if self.quiet:
            return
        if event.kind == "cache":
            if self.cache_bar is None:
                self.cache_bar = tqdm(total=event.total, desc="caching latents", unit="img", leave=False)
            self.cache_bar.n = event.step
            self.cache_bar.refresh()
        elif event.kind == "step":
            if self.bar is None:
                self.bar = tqdm(total=event.total, initial=event.step - 1, desc="training", unit="step")
            m = event.metrics
            self.bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}", refresh=False)
            self.bar.update(event.step - self.bar.n)
        elif event.kind == "eval":
            line = f"step {event.step}: fixed-noise loss {event.metrics['eval_loss']:.4f}"
            (tqdm.write if self.bar else typer.echo)(line)
        elif event.kind in ("checkpoint", "validation"):
            what = "checkpoint" if event.kind == "checkpoint" else "validation images"
            (tqdm.write if self.bar else typer.echo)(f"step {event.step}: {what} → {event.path}")

    def close(self) -> None:
        for bar in (self.cache_bar, self.bar):
            if bar is not None:
                bar.close()
