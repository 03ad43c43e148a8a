"""The tutorial's textual-inversion and DreamBooth runs on lanskap-mini, measured and drawn.

    python benchmarks/personalise_mini.py --out /tmp/personalise      # about 15 minutes on 2 CPU cores

It builds the verdigris style set (60 training and 16 test scenes, as the LoRA demo), trains an
embedding and a DreamBooth LoRA on it with the settings docs/tutorial-mini.md shows, evaluates each
against the base model with the palette distance to the style set (`lanskap evaluate --metrics
palette`), measures how far DreamBooth moved the class prompt's pictures (prior preservation's
job), and draws docs/img/mini-verdigris-ti-dreambooth.png: rows base, embedding, DreamBooth, style set.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

TI = dict(method="textual-inversion", token="<verdigris-style>", init_word="painting", vectors=4,
          learning_rate=5e-3, output_name="verdigris-style")  # fmt: skip
DREAMBOOTH = dict(method="dreambooth", instance_prompt="a landscape in verdigris style", class_prompt="a landscape",
                  prior_preservation=True, num_class_images=50, class_inference_steps=20, rank=16, train_ff=True,
                  train_proj=True, learning_rate=2e-3, output_name="verdigris-db")  # fmt: skip
COMMON = dict(model="lanskap-mini", max_train_steps=300, train_batch_size=4, lr_warmup_steps=20,
              checkpointing_steps=300, validation_prompt=["snowy mountains and a lake at sunset, in verdigris style"],
              validation_inference_steps=20, report_to="none")  # fmt: skip


def run(out: Path) -> dict[str, object]:
    from lanskap.config import Settings
    from lanskap.evaluation import EvalConfig, evaluate
    from lanskap.mini.dataset import write_scene_set
    from lanskap.prompts.lora_tags import LoraSpec
    from lanskap.training import build_config, train

    settings = Settings(home=out / "home", model="lanskap-mini", device="cpu")
    data = write_scene_set(out / "verdigris", 60, test=16, style="verdigris")
    figures: dict[str, object] = {}
    results = {}
    for name, method in (("ti", TI), ("dreambooth", DREAMBOOTH)):
        start = time.perf_counter()
        cfg = build_config(None, None, {**COMMON, **method, "data": str(data), "out": str(out / f"run-{name}")})
        results[name] = train(cfg, settings)
        figures[f"{name}_train_seconds"] = round(time.perf_counter() - start, 1)
    fields = {"steps": 20}
    ti_eval = evaluate(EvalConfig(data=data, out=out / "report-ti", clip_model=None, metrics=("palette",),
                                  embedding=str(results["ti"].kohya), request_fields=fields), settings)  # fmt: skip
    db_eval = evaluate(EvalConfig(data=data, out=out / "report-db", clip_model=None, metrics=("palette",),
                                  loras=(LoraSpec(str(results["dreambooth"].kohya), 1.0),), request_fields=fields),
                       settings)  # fmt: skip
    for name, ev in (("ti", ti_eval), ("dreambooth", db_eval)):
        metrics = ev.report["metrics"]
        figures[f"{name}_palette_base"] = metrics["base"]["palette"]["value"]
        figures[f"{name}_palette_tuned"] = metrics["lora"]["palette"]["value"]
    figures["dreambooth_class_drift"] = class_drift(settings, results["dreambooth"].kohya)
    draw(out, data, Path(__file__).resolve().parents[1] / "docs" / "img" / "mini-verdigris-ti-dreambooth.png")
    return figures


def class_drift(settings, lora: Path) -> float:  # type: ignore[no-untyped-def]
    """Palette distance between the class prompt's pictures with and without the DreamBooth LoRA."""
    from lanskap.evaluation.distances import palette_distance, palette_histogram
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, LoraSpec

    engine = Engine(settings=settings)

    def hist(loras: tuple) -> np.ndarray:  # type: ignore[type-arg]
        req = GenerationRequest("a landscape", seed=1000, steps=20, num_images=8, watermark=False, loras=loras)
        return palette_histogram(np.concatenate([np.asarray(im).reshape(-1, 3) for im in engine.generate(req).images]))

    return palette_distance(hist(()), hist((LoraSpec(str(lora), 1.0),)))


def draw(out: Path, data: Path, target: Path, columns: int = 6) -> None:
    """Rows: base, embedding, DreamBooth, the style set's own test scenes (same captions and seeds)."""
    rows = [
        sorted((out / "report-ti" / "images" / "base").glob("*.png"))[:columns],
        sorted((out / "report-ti" / "images" / "lora").glob("*.png"))[:columns],
        sorted((out / "report-db" / "images" / "lora").glob("*.png"))[:columns],
    ]
    meta = [json.loads(line) for line in (data / "test" / "metadata.jsonl").read_text().splitlines()]
    rows.append([data / "test" / m["file_name"] for m in meta[:columns]])
    size = 128
    sheet = Image.new("RGB", (columns * size, len(rows) * size), "white")
    for r, paths in enumerate(rows):
        for c, path in enumerate(paths):
            with Image.open(path) as im:
                sheet.paste(im.convert("RGB").resize((size, size)), (c * size, r * size))
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    figures = run(args.out)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
