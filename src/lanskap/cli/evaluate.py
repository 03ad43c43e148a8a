"""``lanskap evaluate``: thin shell over lanskap.evaluation.evaluate (flags, progress bars, summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lanskap.cli.compose import NAMES as COMPOSE_NAMES
from lanskap.cli.config_flags import config_command
from lanskap.cli.job import JobOptions
from lanskap.cli.options import job_command
from lanskap.evaluation.run import EvalConfig

if TYPE_CHECKING:
    from lanskap.evaluation.run import EvalEvent


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)


class _Bars:
    """One tqdm bar per phase and set; engine steps show as the bar's postfix."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.key = quiet, None, None

    def __call__(self, event: EvalEvent) -> None:
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
    exclude=("batch_size", "fmt", "no_gallery", *COMPOSE_NAMES),
    helps={
        "seed": "First seed; caption i, image j uses seed + i*N + j [42].",
        "num_images": "Images per caption [1].",
        "out": "Report folder [$LANSKAP_HOME/evaluations/TIME].",
    },
)
@config_command(EvalConfig)
def evaluate_cmd(
    data: Path = typer.Argument(None, help="Prepared dataset, imagefolder or thesis CSV: its --split is rendered."),
    *,
    job: JobOptions,
    fields: dict[str, Any],
    given: dict[str, Any],
) -> None:
    """Measure a LoRA against its base (CMMD, FID, KID, CLIP score) and write an HTML report.

    Every described EvalConfig setting is a flag (lanskap/evaluation/run.py).
    """
    from lanskap.cli.common import quiet_libraries
    from lanskap.generation.params import LoraSpec

    settings = job.settings()
    per_prompt = fields.pop("num_images", None) or 1
    seed = fields.pop("seed", None)
    request_fields = {k: v for k, v in fields.items() if v is not None}
    if job.no_watermark:
        request_fields["watermark"] = False
    given.setdefault("title", "lanskap evaluation: base vs LoRA" if job.lora else "lanskap evaluation")
    cfg = EvalConfig(
        out=job.out,
        data=data,
        per_prompt=per_prompt,
        seed=42 if seed is None or seed == -1 else seed,
        request_fields=request_fields,
        loras=tuple(LoraSpec.parse(s) for s in job.lora),
        **given,
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
