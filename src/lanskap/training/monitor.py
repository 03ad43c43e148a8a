"""What a person watches during and after training: the metrics log, the loss curve, the validation grid.

``metrics.jsonl`` gets one line per optimizer step, appended and flushed, so a
crash loses at most the line being written; a resume cuts it back to the
checkpoint's step so the curve never holds steps that were redone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from lanskap.io import atomic_write, atomic_write_text
from lanskap.training.layout import METRICS_FILE as METRICS


class MetricsLog:
    def __init__(self, out: Path) -> None:
        self.path = Path(out) / METRICS

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return rows

    def truncate(self, step: int) -> None:
        """Keep only steps up to ``step`` (the checkpoint a run resumes from)."""
        rows = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()


def smoothed(values: list[float], decay: float = 0.9) -> list[float]:
    """Exponential moving average, as TensorBoard's smoothing slider draws it."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else decay * out[-1] + (1 - decay) * value)
    return out


def plot_loss(rows: list[dict[str, Any]], dest: Path, title: str = "LoRA training") -> Path | None:
    """Loss per step with a smoothed line, the fixed-noise loss at checkpoints, and the learning rate."""
    evals = [r for r in rows if "eval_loss" in r]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    loss = [r["loss"] for r in rows]
    smooth = smoothed(loss)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(steps, loss, color="#9db4c0", linewidth=1, label="loss")
    ax.plot(steps, smooth, color="#1f4e79", linewidth=2, label="loss (EMA 0.9)")
    if evals:
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_loss"] for r in evals],
            color="#2e7d32",
            marker="o",
            linewidth=1.5,
            label="fixed-noise loss (checkpoints)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in rows], color="#d17a22", linewidth=1, linestyle="--", label="learning rate")
    ax2.set_ylabel("learning rate")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(Path(dest), lambda fh: fig.savefig(fh, format="png"))
    plt.close(fig)
    return Path(dest)


def validation_grid(steps: list[tuple[int, Path]], dest: Path, thumb: int = 192) -> Path | None:
    """Rows: validation prompt × seed; columns: the steps they were rendered at (step 0 = base)."""
    if not steps:
        return None
    names = sorted({f.name for _, p in steps for f in p.glob("*.png")})
    if not names:
        return None
    label_w, head = 150, 24
    grid = Image.new("RGB", (label_w + len(steps) * (thumb + 6), head + len(names) * (thumb + 6)), (250, 250, 248))
    draw = ImageDraw.Draw(grid)
    for c, (step, _) in enumerate(steps):
        draw.text((label_w + c * (thumb + 6) + 4, 6), "base" if step == 0 else f"step {step}", fill=(20, 20, 20))
    for r, name in enumerate(names):
        draw.text((6, head + r * (thumb + 6) + thumb // 2), Path(name).stem, fill=(20, 20, 20))
        for c, (_, p) in enumerate(steps):
            f = p / name
            if f.is_file():
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    im.thumbnail((thumb, thumb))
                    grid.paste(im, (label_w + c * (thumb + 6), head + r * (thumb + 6)))

    def write(fh: Any) -> None:
        grid.save(fh, format="PNG")

    return atomic_write(Path(dest), write)
