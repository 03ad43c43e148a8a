"""The evaluation report: ``report.json`` (every number), plots, and one self-contained HTML page.

The HTML embeds its plots and thumbnails as data URIs, so it can be mailed or
attached to a review as a single file; each thumbnail links to the full image
beside it for whoever keeps the folder. Everything is written via temp file + rename.
"""

from __future__ import annotations

import base64
import html
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lanskap.evaluation.imagesets import ImageSet
from lanskap.io import atomic_write, atomic_write_text

METRIC_ROWS = [
    ("cmmd", "CMMD", "lower is better; CLIP ViT-L/14-336 embeddings, RBF σ=10, ×1000"),
    ("fid", "FID", "lower is better; Inception-v3 pool3"),
    ("kid", "KID", "lower is better; unbiased, mean ± std over subsets"),
    ("clip_score", "CLIP score", "higher is better; 100 × cos(image, prompt), clamped at 0"),
    ("palette", "Palette distance", "lower is better; 8³-bin RGB histograms, total variation 0-1, no model needed"),
]
COLORS = ["#1f4e79", "#c0504d", "#2e7d32", "#8064a2", "#d17a22", "#4bacc6"]
MAX_ROWS = 300


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, dest: Path) -> Path:
    atomic_write(dest, lambda fh: fig.savefig(fh, format="png"))
    _plt().close(fig)
    return dest


PANELS_PER_ROW = 3


def plot_metrics(report: dict[str, Any], dest: Path) -> Path | None:
    """One panel per metric, a bar per generated set (error bars: KID std, CLIP 95% CI)."""
    metrics, sets = report["metrics"], report["sets"]
    gen = [n for n in metrics if n != "real"]
    rows = [(k, t) for k, t, _ in METRIC_ROWS if any(k in metrics[n] for n in gen)]
    if not rows:
        return None
    plt = _plt()
    # At most three panels a row, so six metrics make a 2x3 block rather than a strip that a page
    # must squash; constrained layout keeps the (wrapped) title inside the picture.
    ncols = min(PANELS_PER_ROW, len(rows))
    nrows = -(-len(rows) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows + 0.5), dpi=110, squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax in axes.flat[len(rows) :]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, rows, strict=False):
        names = [n for n in gen if key in metrics[n]]
        vals = [metrics[n][key]["value"] for n in names]
        err = [metrics[n][key].get("std" if key == "kid" else "ci95", 0.0) for n in names]
        bars = ax.bar(
            range(len(names)),
            vals,
            yerr=err if any(err) else None,
            capsize=4,
            color=[COLORS[i % len(COLORS)] for i in range(len(names))],
        )
        for i, n in enumerate(names):
            if key == "fid" and not metrics[n][key].get("reliable", True):
                bars[i].set_hatch("//")
                bars[i].set_alpha(0.45)
            ax.annotate(
                f"{vals[i]:.4g}",
                (i, vals[i] + (err[i] or 0.0)),  # above the error bar, not crossed by it
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        if key == "clip_score" and "real" in metrics:
            ax.axhline(
                metrics["real"]["clip_score"]["value"], color="#555", linestyle="--", linewidth=1, label="real images"
            )
            ax.legend(fontsize=7, loc="lower right")
        lower = metrics[names[0]][key]["lower_is_better"]
        ax.set_title(f"{title} ({'↓' if lower else '↑'} better)", fontsize=10)
        ax.set_xticks(range(len(names)), [sets[n]["label"][:22] for n in names], rotation=15, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    counts = ", ".join(f"{sets[n]['label']} {sets[n]['n']}" for n in sets)
    title = textwrap.fill(f"{report['title']}: N = {counts}", width=int(3.6 * ncols * 11))  # ~11 chars/inch at 9 pt
    fig.suptitle(title, fontsize=9)
    return _save(fig, dest)


def plot_clip_pairs(report: dict[str, Any], dest: Path) -> Path | None:
    """Per-image CLIP score of each set against the first; points above the line align better."""
    names = [n for n in report["metrics"] if n != "real" and "clip_score" in report["metrics"][n]]
    if not names:
        return None
    rows = [r for r in report["items"] if all("clip_score" in r["images"].get(n, {}) for n in names)]
    if not rows:
        return None
    plt = _plt()
    labels = {n: report["sets"][n]["label"] for n in names}
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=110)
    if len(names) == 1:
        ax.hist([r["images"][names[0]]["clip_score"] for r in rows], bins=20, color=COLORS[0])
        ax.set_xlabel(f"CLIP score, {labels[names[0]]}")
        ax.set_ylabel("images")
    else:
        x = np.array([r["images"][names[0]]["clip_score"] for r in rows])
        for i, n in enumerate(names[1:], 1):
            y = np.array([r["images"][n]["clip_score"] for r in rows])
            ax.scatter(
                x,
                y,
                s=14,
                alpha=0.75,
                color=COLORS[i % len(COLORS)],
                label=f"{labels[n]}: better on {int((y > x).sum())}/{len(y)}",
            )
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], color="#777", linewidth=1, linestyle="--")
        ax.set_xlabel(f"CLIP score, {labels[names[0]]}")
        ax.set_ylabel("CLIP score, other set")
        ax.legend(fontsize=7)
    ax.set_title("CLIP score per image", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, dest)


def plot_embedding_map(embeddings: dict[str, np.ndarray], labels: dict[str, str], dest: Path) -> Path | None:
    """The CLIP embeddings CMMD compares, projected on their two main axes (PCA over all sets)."""
    if not embeddings or sum(len(e) for e in embeddings.values()) < 3:
        return None
    allx = np.concatenate(list(embeddings.values()))
    centre = allx.mean(0)
    _, _, vt = np.linalg.svd(allx - centre, full_matrices=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=110)
    for i, (name, e) in enumerate(embeddings.items()):
        p = (e - centre) @ vt[:2].T
        marker = "x" if name == "real" else "o"
        color = "#333" if name == "real" else COLORS[(i - 1) % len(COLORS)]
        ax.scatter(p[:, 0], p[:, 1], s=16, alpha=0.75, marker=marker, color=color, label=labels.get(name, name))
    ax.set_title("CLIP image embeddings (PCA): closer clouds, lower CMMD", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, dest)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _thumb(path: Path, size: int = 256) -> str:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    return _data_uri(buf.getvalue(), "image/jpeg")


def _fmt(entry: dict[str, Any] | None, key: str) -> str:
    if entry is None:
        return "–"
    v = entry["value"]
    if key == "kid":
        text = f"{v:.4g} ± {entry['std']:.2g}"
    elif key == "clip_score":
        text = f"{v:.2f} ± {entry['ci95']:.2f}"
    else:
        text = f"{v:.4g}"
    n = entry.get("n_generated", entry.get("n"))
    warn = " ⚠" if key == "fid" and not entry.get("reliable", True) else ""
    return f"{text}{warn}<div class=n>N={n}</div>"


def _table(report: dict[str, Any]) -> str:
    metrics, sets = report["metrics"], report["sets"]
    cols = [n for n in sets if n in metrics and n != "real"] + (["real"] if "real" in metrics else [])
    head = "".join(f"<th>{html.escape(sets[n]['label'])}<div class=n>N={sets[n]['n']}</div></th>" for n in cols)
    body = []
    for key, title, hint in METRIC_ROWS:
        entries = {n: metrics[n].get(key) for n in cols}
        present = {n: e for n, e in entries.items() if e is not None and n != "real"}
        if not present:
            continue
        lower = next(iter(present.values()))["lower_is_better"]
        values = [e["value"] for e in present.values()]
        best = None
        if len(set(values)) > 1:  # a tie has no winner to highlight
            best = (min if lower else max)(present, key=lambda n: present[n]["value"])
        cells = "".join(f"<td class='{'best' if n == best else ''}'>{_fmt(entries[n], key)}</td>" for n in cols)
        body.append(f"<tr><th>{title}<div class=n>{html.escape(hint)}</div></th>{cells}</tr>")
    return f"<table class=metrics><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _side_by_side(report: dict[str, Any], out: Path) -> str:
    sets = report["sets"]
    order = [n for n in sets if n != "real"] + (["real"] if "real" in sets else [])
    rows = report["items"][:MAX_ROWS]
    parts = []
    for row in rows:
        cells = []
        for n in order:
            img = row["images"].get(n)
            if img is None:
                continue
            path = Path(img["file"]) if Path(img["file"]).is_absolute() else out / img["file"]
            score = f" · CLIP {img['clip_score']:.1f}" if "clip_score" in img else ""
            seed = f" · seed {img['seed']}" if "seed" in img else ""
            cells.append(
                f"<figure><a href='{html.escape(img['file'])}'><img src='{_thumb(path)}' loading=lazy></a>"
                f"<figcaption>{html.escape(sets[n]['label'])}{seed}{score}</figcaption></figure>"
            )
        prompt = html.escape(row.get("prompt") or row["key"])
        parts.append(f"<div class=row><p class=prompt>{prompt}</p><div class=imgs>{''.join(cells)}</div></div>")
    more = len(report["items"]) - len(rows)
    if more > 0:
        parts.append(f"<p class=n>{more} more rows are in report.json and the images folder.</p>")
    return "".join(parts)


def _details(report: dict[str, Any]) -> str:
    rows = []
    models = report.get("models", {})
    if "base" in models:
        rows.append(("base model", f"{models['base']['name']} [{models['base']['hash']}]"))
    for lo in models.get("loras", []):
        rows.append(("LoRA", f"{lo['name']} [{lo['hash']}] × {lo['scale']:g}"))
    if "clip" in models:
        rows.append(("CLIP", f"{models['clip']['ref']} [{models['clip']['hash']}], {models['clip']['input_size']} px"))
    if "inception" in models:
        rows.append(("Inception", f"{models['inception']['ref']} [{models['inception']['hash']}]"))
    gen = report.get("generation") or {}
    if gen:
        keys = ("scheduler", "steps", "guidance", "width", "height", "negative_prompt", "seed", "per_prompt", "dtype")
        rows.append(("generation", ", ".join(f"{k} {gen[k]}" for k in keys if gen.get(k) not in (None, ""))))
        rows.append(
            (
                "images made / cached",
                ", ".join(f"{n} {gen['generated'][n]}/{gen['cached'][n]}" for n in gen.get("generated", {})),
            )
        )
    for name, s in report["sets"].items():
        rows.append((f"set '{name}'", f"{s['n']} images from {s['source']}"))
    rows.append(("software", ", ".join(f"{k} {v}" for k, v in report["lanskap"].items())))
    return (
        "<table class=details>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        + "</table>"
    )


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f6f7f9;color:#1d2733}
header{background:#1f4e79;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}main{padding:18px 28px;max-width:1400px}
section{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:16px;box-shadow:0 1px 2px #0001}
h2{font-size:16px;margin:0 0 10px}.verdict li{margin:3px 0}.warn{background:#fff4e5;border-left:4px solid #e67e22}
table{border-collapse:collapse;font-size:14px}th,td{border-bottom:1px solid #e3e6ea;padding:6px 12px;text-align:left;
vertical-align:top}td.best{background:#e8f5e9;font-weight:600}.n{font-size:11px;color:#6b7785;font-weight:400}
.plots img{max-width:100%;margin:4px 8px 4px 0;border:1px solid #e3e6ea}
.row{border-bottom:1px solid #eceff2;padding:8px 0}.prompt{margin:0 0 6px;font-size:13px}
.imgs{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}figure img{width:200px;height:auto;border-radius:4px}
figcaption{font-size:11px;color:#4a5561;max-width:200px}
"""


def render_html(report: dict[str, Any], plots: list[Path], out: Path) -> str:
    esc = html.escape
    verdict = "".join(f"<li>{esc(line)}</li>" for line in report["verdict"]) or "<li>No comparison made.</li>"
    warnings = "".join(f"<li>{esc(w)}</li>" for w in report["warnings"])
    warn_html = f"<section class=warn><h2>Warnings</h2><ul>{warnings}</ul></section>" if warnings else ""
    plot_html = "".join(f"<img src='{_data_uri(p.read_bytes(), 'image/png')}' alt='{esc(p.stem)}'>" for p in plots)
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><title>{esc(report["title"])}</title>
<style>{CSS}</style></head><body>
<header><h1>{esc(report["title"])}</h1><p>lanskap evaluation · {esc(report["created"])} · {esc(report["mode"])} mode ·
{esc(report["device"])}</p></header><main>
<section class=verdict><h2>Verdict</h2><ul>{verdict}</ul></section>{warn_html}
<section><h2>Metrics</h2>{_table(report)}</section>
<section class=plots><h2>Plots</h2>{plot_html}</section>
<section><h2>Side by side</h2>{_side_by_side(report, out)}</section>
<section><h2>Details</h2>{_details(report)}</section>
</main></body></html>
"""


def write_report(
    report: dict[str, Any], sets: list[ImageSet], out: Path, embeddings: dict[str, np.ndarray] | None = None
) -> tuple[Path, Path, list[Path]]:
    """Write the plots, ``report.json`` and ``report.html`` into ``out``; return their paths."""
    plots = [
        p
        for p in (
            plot_metrics(report, out / "metrics.png"),
            plot_clip_pairs(report, out / "clip_scores.png"),
            plot_embedding_map(embeddings or {}, {s.name: s.label for s in sets}, out / "embeddings.png"),
        )
        if p is not None
    ]
    report["plots"] = [p.name for p in plots]
    json_path = atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    html_path = atomic_write_text(out / "report.html", render_html(report, plots, out))
    return json_path, html_path, plots
