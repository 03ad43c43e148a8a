"""``lanskap evaluate``: thin shell over lanskap.evaluation.evaluate (flags, progress bars, summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from lanskap.cli.job import JobOptions
from lanskap.cli.options import job_command


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)


class _Bars:
    """One tqdm bar per phase and set; engine steps show as the bar's postfix."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.key = quiet, None, None

    def __call__(self, event: Any) -> None:
        if event.phase == "notice":
            typer.secho(event.message, err=True, fg=typer.colors.YELLOW)
            return
        if self.quiet:
            return
        if event.phase == "step":
            if self.bar is not None and event.step is not None:
                self.bar.set_postfix_str(f"step {event.step.done}/{event.step.total}")
            return
        if event.phase in ("loading", "report"):
            self.close()
            typer.echo(f"{event.phase}: {event.message}", err=True)
            return
        from tqdm import tqdm

        label = event.message.replace(" (cached)", "")
        key = (event.phase, label)
        if key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=event.total, desc=f"{event.phase} {label}", unit="img", dynamic_ncols=True)
        self.bar.update(event.done - self.bar.n)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None


def _summary(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, m in report["metrics"].items():
        label = report["sets"][name]["label"]
        parts = []
        for key, title in (("cmmd", "CMMD"), ("fid", "FID"), ("kid", "KID"), ("clip_score", "CLIP score")):
            if key in m:
                e = m[key]
                extra = f"±{e['std']:.2g}" if key == "kid" else f"±{e['ci95']:.2f}" if key == "clip_score" else ""
                parts.append(f"{title} {e['value']:.4g}{extra}")
        lines.append(f"  {label} (N={report['sets'][name]['n']}): {', '.join(parts)}")
    return lines


@job_command(  # renders are cached for scoring, not gallery pictures
    exclude=("batch_size", "fmt", "no_gallery"),
    helps={
        "seed": "First seed; caption i, image j uses seed + i*N + j [42].",
        "num_images": "Images per caption [1].",
        "out": "Report folder [$LANSKAP_HOME/evaluations/TIME].",
    },
)
def evaluate_cmd(
    data: Path = typer.Argument(None, help="Prepared dataset, imagefolder or thesis CSV: its --split is rendered."),
    split: str = typer.Option("test", "--split", help="Which split's captions and images to use [test]."),
    limit: int = typer.Option(None, "--limit", help="Use only the first N captions."),
    image_column: str = typer.Option("image", "--image-column", help="CSV column with image paths [image]."),
    caption_column: str = typer.Option(None, "--caption-column", help="Caption column [text, caption or captions]."),
    real: Path = typer.Option(None, "--real", help="A folder of real (reference) images."),
    generated: list[Path] = typer.Option(None, "--generated", help="A folder of generated images; repeatable."),
    prompts: Path = typer.Option(None, "--prompts", help="Prompts for --generated: .txt (a line each) or .jsonl/.csv."),
    clip_model: str = typer.Option(
        None, "--clip-model", help="CLIP hub id or folder [openai/clip-vit-large-patch14-336]; 'none' skips it."
    ),
    inception_model: str = typer.Option(
        None, "--inception-model", help="FID Inception weights (pt_inception-2015-12-05) file or folder."
    ),
    metrics: str = typer.Option(
        "cmmd,fid,kid,clip,palette", "--metrics", help="Which of cmmd,fid,kid,clip,palette to compute."
    ),
    kid_subsets: int = typer.Option(100, "--kid-subsets", help="KID: random subsets to average [100]."),
    kid_subset_size: int = typer.Option(1000, "--kid-subset-size", help="KID: images per subset (max) [1000]."),
    metric_batch_size: int = typer.Option(32, "--metric-batch-size", help="Images per CLIP/Inception batch [32]."),
    title: str = typer.Option(None, "--title", help="Report title."),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Measure a LoRA against its base (CMMD, FID, KID, CLIP score) and write an HTML report."""
    from lanskap.cli.common import quiet_libraries
    from lanskap.evaluation import EvalConfig
    from lanskap.evaluation.clip import DEFAULT_CLIP_MODEL
    from lanskap.generation.params import LoraSpec

    settings = job.settings()
    per_prompt = fields.pop("num_images", None) or 1
    seed = fields.pop("seed", None)
    request_fields = {k: v for k, v in fields.items() if v is not None}
    if job.no_watermark:
        request_fields["watermark"] = False
    clip = clip_model or DEFAULT_CLIP_MODEL
    cfg = EvalConfig(
        out=job.out,
        data=data,
        split=split,
        image_column=image_column,
        caption_column=caption_column,
        limit=limit,
        per_prompt=per_prompt,
        seed=42 if seed is None or seed == -1 else seed,
        request_fields=request_fields,
        loras=tuple(LoraSpec.parse(s) for s in job.lora),
        real=real,
        generated=list(generated or []),
        prompts=prompts,
        clip_model=None if clip.lower() == "none" else clip,
        inception_model=inception_model,
        metrics=tuple(m.strip().lower().replace("clip_score", "clip") for m in metrics.split(",") if m.strip()),
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        batch_size=metric_batch_size,
        title=title or ("lanskap evaluation: base vs LoRA" if job.lora else "lanskap evaluation"),
    ).check()
    quiet_libraries(job.quiet)
    bars = _Bars(job.quiet)
    try:
        from lanskap.cli.common import wait_notice
        from lanskap.jobs import JobControl
        from lanskap.jobs.evaluation import run_evaluation

        result = run_evaluation(cfg, settings, control=JobControl(on_wait=wait_notice), events=bars)
    finally:
        bars.close()
    report = result.report
    if job.as_json:
        typer.echo(json.dumps({k: report[k] for k in ("metrics", "sets", "warnings", "verdict")}, indent=2))
    else:
        for line in _summary(report):
            typer.echo(line)
        for line in report["verdict"]:
            typer.secho(line, bold=True)
    for warning in report["warnings"]:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"report: {result.html_path}", err=job.as_json)
