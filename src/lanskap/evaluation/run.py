"""``evaluate``: the thesis's section 4.4, done right, as one core function.

Two ways in: a dataset split (its captions are rendered by the base model and by the
base plus LoRA, with the same seeds and settings, and compared with its real images),
or any folders of images (``real`` against one or more ``generated``). Every number
carries its N; small sets get warnings instead of confident-looking numbers. The CLI,
the API and the web app all call :func:`evaluate`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lanskap.config import Settings
from lanskap.errors import CancelledError, SettingError
from lanskap.evaluation import distances as D
from lanskap.evaluation.clip import DEFAULT_CLIP_MODEL
from lanskap.evaluation.imagesets import (
    ImageItem,
    ImageSet,
    attach_prompts,
    check_readable,
    load_folder,
    read_prompts,
)
from lanskap.fields import setting
from lanskap.prompts.lora_tags import LoraSpec

if TYPE_CHECKING:
    from lanskap.generation.engine import Progress


METRICS = ("cmmd", "fid", "kid", "clip", "palette")


@dataclass
class EvalConfig:
    """What to compare and how; ``None``/empty means "not used".

    The described fields are the settings a person types (``lanskap evaluate`` makes a flag of
    each); the rest come from the job's own options (the generation fields, LoRAs, seed).
    """

    out: Path | None = None  # None: a timestamped folder under $LANSKAP_HOME/evaluations
    # a dataset split whose captions are generated from (model mode)
    data: Path | None = None
    split: str = setting("test", "Which split's captions and images to use.")
    image_column: str = setting("image", "CSV column with image paths.")
    caption_column: str | None = setting(None, "Caption column [text, caption or captions].")
    limit: int | None = setting(None, "Use only the first N captions.")
    per_prompt: int = 1
    seed: int = 42
    request_fields: dict[str, Any] = field(default_factory=dict)  # negative_prompt, steps, guidance, size, sampler
    loras: tuple[LoraSpec, ...] = ()  # stacked: the "LoRA" set is base + all of them
    embedding: str | None = setting(
        None, "An embedding (a name in the embeddings folder, or a file): the second set's captions start with it."
    )
    # any folders (folder mode)
    real: Path | None = setting(None, "A folder of real (reference) images.")
    generated: list[Path] = setting(help="A folder of generated images; repeatable.", factory=list)
    prompts: Path | None = setting(None, "Prompts for the generated folders: .txt (a line each) or .jsonl/.csv.")
    # metric models
    clip_model: str | None = setting(  # None (or "none"): no CMMD and no CLIP score
        DEFAULT_CLIP_MODEL, "CLIP hub id or folder; 'none' skips CMMD and the CLIP score."
    )
    inception_model: str | None = setting(  # None: no FID/KID
        None, "FID Inception weights (pt_inception-2015-12-05) file or folder."
    )
    metrics: tuple[str, ...] = setting(
        METRICS, f"Which of {','.join(METRICS)} to compute [all].", text=True, show_default=False
    )
    kid_subsets: int = setting(100, "KID: random subsets to average.")
    kid_subset_size: int = setting(1000, "KID: images per subset (max).")
    batch_size: int = setting(32, "Images per CLIP/Inception batch.", flag="--metric-batch-size")
    title: str = setting("lanskap evaluation", "Report title.", show_default=False)

    def __post_init__(self) -> None:
        # Every front may hand over settings as typed: "cmmd, FID" or "clip_score"; "none" for no CLIP.
        if isinstance(self.metrics, str):
            self.metrics = tuple(m for m in self.metrics.split(",") if m.strip())
        self.metrics = tuple(m.strip().lower().replace("clip_score", "clip") for m in self.metrics)
        if self.clip_model is not None and self.clip_model.strip().lower() in ("", "none"):
            self.clip_model = None
        self.loras = tuple(self.loras)

    @property
    def mode(self) -> str:
        return "model" if self.data is not None else "folders"

    def check(self) -> EvalConfig:
        if self.data is not None and (self.real is not None or self.generated):
            raise SettingError(
                "give either a dataset to generate from, or real and generated folders, not both",
                "real",
                "generated",
            )
        if self.data is None and (self.real is None or not self.generated):
            raise SettingError(
                "give a dataset (its test split is generated and compared), or a folder of real images "
                "and one or more folders of generated images",
                "real",
                "generated",
            )
        if self.mode == "folders" and (self.loras or self.embedding):
            raise SettingError(
                "a LoRA applies when generating from a dataset; folders are compared as they are", "lora"
            )
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            names = ", ".join(unknown) or "(none)"
            raise SettingError(f"unknown metric(s) {names}; choose from {', '.join(METRICS)}", "metrics")
        if self.clip_model is None and self.inception_model is None and "palette" not in self.metrics:
            raise SettingError(
                "nothing to measure: give a CLIP model (CMMD, CLIP score) or Inception weights (FID, KID), "
                "or add palette to the metrics",
                "clip_model",
                "inception_model",
                "metrics",
            )
        if not 1 <= self.per_prompt <= 100:
            raise SettingError(f"images per prompt must be between 1 and 100, got {self.per_prompt}", "num_images")
        if self.limit is not None and self.limit < 1:
            raise SettingError(f"limit must be 1 or more, got {self.limit}", "limit")
        return self

    def wants(self, metric: str) -> bool:
        if metric == "palette":
            return metric in self.metrics
        if metric in ("cmmd", "clip"):
            return metric in self.metrics and self.clip_model is not None
        return metric in self.metrics and self.inception_model is not None


@dataclass(frozen=True)
class EvalEvent:
    """Progress for a shell: ``phase`` is loading, generating, cmmd, clip, inception or report."""

    phase: str
    done: int = 0
    total: int = 0
    message: str = ""
    step: Progress | None = None  # the engine's, while an image is being generated


@dataclass
class EvalResult:
    report: dict[str, Any]
    json_path: Path
    html_path: Path
    plots: list[Path]


Emit = Callable[[EvalEvent], None]


def _model_mode_sets(cfg: EvalConfig) -> tuple[ImageSet, list[str]]:
    from lanskap.training.sources import load_training_set

    data = load_training_set(cfg.data, cfg.image_column, cfg.caption_column, split=cfg.split)  # type: ignore[arg-type]
    records = data.records[: cfg.limit] if cfg.limit else data.records
    check_readable([r.path for r in records], f"the {cfg.split} split of {cfg.data}")
    items = [ImageItem(r.path, r.caption, key=f"{i:04d}-0") for i, r in enumerate(records)]
    real = ImageSet("real", f"real ({cfg.split} split)", items, source=str(cfg.data))
    return real, [r.caption for r in records]


def _folder_mode_sets(cfg: EvalConfig) -> tuple[ImageSet, list[ImageSet]]:
    real = load_folder(cfg.real, "real images", name="real")  # type: ignore[arg-type]
    real.label = f"real ({Path(cfg.real).name})"  # type: ignore[arg-type]
    gens, names = [], set()
    for folder in cfg.generated:
        s = load_folder(folder, "generated images")
        base = s.name
        n = 2
        while s.name in names or s.name == "real":  # two folders both called "out"
            s.name = s.label = f"{base}-{n}"
            n += 1
        names.add(s.name)
        gens.append(s)
    if cfg.prompts is not None:
        table = read_prompts(cfg.prompts)
        gens = [attach_prompts(g, table, cfg.prompts) for g in gens]
    return real, gens


def _check_sizes(cfg: EvalConfig, sizes: dict[str, int]) -> None:
    if cfg.wants("fid") or cfg.wants("kid"):
        for label, n in sizes.items():
            if n < 2:
                raise SettingError(
                    f"FID and KID need at least 2 images in each set; {label} has {n}. "
                    "Add images, or measure CMMD and CLIP score only (metrics cmmd,clip)",
                    "metrics",
                )


def _device(settings: Settings) -> str:
    from lanskap.models.device import resolve_placement

    return str(resolve_placement(settings.device, "fp32").device)  # metrics run in fp32, like the references


def with_report_folder(cfg: EvalConfig, settings: Settings) -> EvalConfig:
    """``cfg`` with its report folder (a timestamped one when none was given), checked."""
    if cfg.out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg = replace(cfg, out=settings.evaluations_dir / stamp)
    cfg.check()
    return cfg


def evaluate(
    cfg: EvalConfig,
    settings: Settings,
    *,
    events: Emit | None = None,
    cancel: threading.Event | None = None,
) -> EvalResult:
    """Generate (when given a dataset), measure, and write ``report.json`` + ``report.html`` to ``cfg.out``.

    A run that fails or is cancelled before anything is written leaves no empty report folder behind.
    """
    cfg = with_report_folder(cfg, settings)
    assert cfg.out is not None  # with_report_folder fills it
    existed = Path(cfg.out).exists()
    try:
        return _evaluate(cfg, settings, events, cancel)
    except BaseException:
        if not existed:
            _remove_if_empty(Path(cfg.out))
        raise


def _remove_if_empty(folder: Path) -> None:
    """Remove a folder this run made if it holds no file (empty subfolders count as empty)."""
    import os
    import shutil

    if folder.is_dir() and not folder.is_symlink() and not any(files for _, _, files in os.walk(folder)):
        shutil.rmtree(folder, ignore_errors=True)


def _evaluate(cfg: EvalConfig, settings: Settings, events: Emit | None, cancel: threading.Event | None) -> EvalResult:
    emit: Emit = events or (lambda e: None)
    warnings: list[str] = []
    started = _dt.datetime.now(_dt.UTC)

    # 1. Every input is checked before any model is loaded.
    if cfg.mode == "model":
        real, prompts = _model_mode_sets(cfg)
        gens: list[ImageSet] = []
        _check_sizes(cfg, {real.label: len(real), "the generated set": len(prompts) * cfg.per_prompt})
    else:
        real, gens = _folder_mode_sets(cfg)
        prompts = []
        _check_sizes(cfg, {s.label: len(s) for s in [real, *gens]})
    from lanskap.generation.output import ensure_writable_dir

    assert cfg.out is not None  # with_report_folder fills it
    out = ensure_writable_dir(Path(cfg.out))

    # 2. Metric models, before any slow generation, so a missing one fails fast.
    device = _device(settings)
    clip = inception = None
    models: dict[str, Any] = {}
    if cfg.clip_model is not None and (cfg.wants("cmmd") or cfg.wants("clip")):
        from lanskap.evaluation.clip import ClipEvaluator

        emit(EvalEvent("loading", message=f"CLIP {cfg.clip_model}"))
        clip = ClipEvaluator(
            cfg.clip_model, device=device, allow_pickle=settings.allow_pickle, batch_size=cfg.batch_size
        )
        models["clip"] = {"ref": cfg.clip_model, "hash": clip.hash, "input_size": clip.input_size}
    if cfg.inception_model is not None and (cfg.wants("fid") or cfg.wants("kid")):
        from lanskap.evaluation.inception import load_inception, weights_hash

        emit(EvalEvent("loading", message=f"Inception {cfg.inception_model}"))
        inception = load_inception(cfg.inception_model, allow_pickle=settings.allow_pickle)
        models["inception"] = {
            "ref": str(cfg.inception_model),
            "hash": weights_hash(Path(cfg.inception_model)) if Path(cfg.inception_model).exists() else "hub",
            "features": inception.features,
        }

    # 3. Model mode: render every caption with the base model and with base + LoRA.
    generation: dict[str, Any] = {}
    if cfg.mode == "model":
        gens, generation = _generate(cfg, settings, prompts, out, emit, cancel, models)

    # 4. Features, then the numbers.
    sets = [real, *gens]
    feats: dict[str, dict[str, np.ndarray]] = {s.name: {} for s in sets}
    clip_scores: dict[str, np.ndarray] = {}
    truncated = 0
    for s in sets:
        paths = [it.path for it in s.items]
        if clip is not None and cfg.wants("cmmd"):
            feats[s.name]["cmmd"] = clip.cmmd_embeddings(paths, _progress(emit, "cmmd", s.label))
        if inception is not None:
            from lanskap.evaluation.inception import inception_features

            feats[s.name]["inception"] = inception_features(
                inception,
                paths,
                device=device,
                batch_size=cfg.batch_size,
                progress=_progress(emit, "inception", s.label),
            )
        if cfg.wants("palette"):
            feats[s.name]["palette"] = _palette(paths)
        if clip is not None and cfg.wants("clip") and s.prompts is not None:
            img = clip.score_image_embeddings(paths, _progress(emit, "clip", s.label))
            clip_scores[s.name] = D.clip_score_values(img, clip.text_embeddings(s.prompts))
            truncated = max(truncated, sum(clip.truncated(p) for p in s.prompts))
        _check_cancel(cancel)
    if cfg.wants("clip") and clip is not None and not any(s.prompts for s in gens):
        warnings.append("no CLIP score: the generated images have no prompts (give a prompts file)")
    if truncated:
        warnings.append(
            f"{truncated} prompt(s) are longer than CLIP's {clip.max_tokens} tokens; the CLIP score reads only "  # type: ignore[union-attr]
            "their beginning (the generator reads them whole)"
        )

    metrics = _metrics(cfg, real, gens, feats, clip_scores, warnings)
    report = {
        "title": cfg.title,
        "created": started.isoformat(timespec="seconds"),
        "mode": cfg.mode,
        "lanskap": _versions(),
        "device": device,
        "sets": {
            s.name: {"label": s.label, "n": len(s), "source": s.source, **({"info": s.info} if s.info else {})}
            for s in sets
        },
        "metrics": metrics,
        "models": models,
        "generation": generation,
        "items": _items(sets, clip_scores, out),
        "warnings": warnings,
        "verdict": verdict(metrics, {s.name: s.label for s in gens}),
    }
    from lanskap.evaluation.report import write_report

    emit(EvalEvent("report", message=str(out)))
    embeddings = {name: f["cmmd"] for name, f in feats.items() if "cmmd" in f}
    json_path, html_path, plots = write_report(report, sets, out, embeddings)
    return EvalResult(report, json_path, html_path, plots)


def _palette(paths: list[Path]) -> np.ndarray:
    """The set's pooled colour histogram, each image read at 128 px so large images don't dominate."""
    from PIL import Image

    total = np.zeros(D.PALETTE_BINS**3)
    for path in paths:
        with Image.open(path) as im:
            total += D.palette_histogram(np.asarray(im.convert("RGB").resize((128, 128))))
    return total


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("evaluation interrupted; images made so far are cached and a rerun continues from them")


def _progress(emit: Emit, phase: str, label: str) -> Callable[[int, int], None]:
    return lambda done, total: emit(EvalEvent(phase, done, total, label))


def _generate(
    cfg: EvalConfig,
    settings: Settings,
    prompts: list[str],
    out: Path,
    emit: Emit,
    cancel: threading.Event | None,
    models: dict[str, Any],
) -> tuple[list[ImageSet], dict[str, Any]]:
    from lanskap.evaluation.samples import SamplePlan, generate_set
    from lanskap.generation.engine import Engine
    from lanskap.generation.lora import inspect_lora, lora_display_name, resolve_lora
    from lanskap.generation.params import GenerationRequest
    from lanskap.prompts.embeddings import find_embedding

    # Validate the shared settings and LoRA files before the model loads.
    GenerationRequest(prompt="x", seed=cfg.seed, loras=tuple(cfg.loras), **cfg.request_fields).validate()
    infos = [inspect_lora(resolve_lora(spec.name, settings), settings) for spec in cfg.loras]
    emb = find_embedding(cfg.embedding, settings.embeddings_dir) if cfg.embedding else None
    emit(EvalEvent("loading", message=f"model {settings.model}"))
    engine = Engine(settings=settings)
    loaded = engine.load()
    if emb is not None:
        engine.networks.extra[emb.name] = emb  # a file given by path is used by its name too
    for notice in loaded.notices:
        emit(EvalEvent("notice", message=notice))
    plan = SamplePlan(prompts, cfg.per_prompt, cfg.seed, dict(cfg.request_fields))
    variants: list[tuple[str, str, tuple]] = [("base", "base model", ())]
    if cfg.loras or emb is not None:
        names = " + ".join(f"{lora_display_name(s.name)} ×{s.scale:g}" for s in cfg.loras)
        label = " + ".join(([f"LoRA {names}"] if cfg.loras else []) + ([f"embedding {emb.name}"] if emb else []))
        variants.append(("lora", label, tuple(cfg.loras)))
    gens = []
    for name, label, loras in variants:
        with_emb = emb is not None and name == "lora"
        s, _ = generate_set(
            engine,
            replace(plan, prompts=[f"{emb.name}, {p}" for p in plan.prompts]) if with_emb and emb else plan,
            name=name,
            label=label,
            loras=loras,
            lora_hashes=tuple(info.hash for info in infos) if loras else (),
            out_dir=out / "images",
            cache_dir=settings.cache_dir / "evaluation",
            progress=lambda done, total, fresh, label=label: emit(
                EvalEvent("generating", done, total, f"{label}{'' if fresh else ' (cached)'}")
            ),
            step_progress=lambda p, label=label: emit(EvalEvent("step", message=label, step=p)),
            cancel=cancel,
        )
        gens.append(s)
    lora_info = [
        {"name": info.name, "hash": info.hash, "scale": spec.scale, "path": str(info.path)}
        for info, spec in zip(infos, cfg.loras, strict=True)
    ]
    models["base"] = {"name": loaded.name, "hash": loaded.hash, "prediction_type": loaded.prediction_type}
    models["loras"] = lora_info
    if emb is not None:
        models["embedding"] = {"name": emb.name, "hash": emb.shorthash, "vectors": emb.count, "path": str(emb.path)}
    size = cfg.request_fields.get("width") or loaded.native_size, cfg.request_fields.get("height") or loaded.native_size
    generation = {
        **{k: v for k, v in cfg.request_fields.items() if k not in ("width", "height")},
        "width": size[0],
        "height": size[1],
        "seed": cfg.seed,
        "per_prompt": cfg.per_prompt,
        "seeds": [job[3] for job in plan.jobs()],
        "device": str(engine.placement.device),
        "dtype": engine.placement.dtype_name,
        "generated": {s.name: s.info.get("generated", 0) for s in gens},
        "cached": {s.name: s.info.get("cached", 0) for s in gens},
    }
    return gens, generation


def _metrics(
    cfg: EvalConfig,
    real: ImageSet,
    gens: list[ImageSet],
    feats: dict[str, dict[str, np.ndarray]],
    clip_scores: dict[str, np.ndarray],
    warnings: list[str],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    fid_warned = False
    for s in gens:
        m: dict[str, Any] = {}
        n_real, n_gen = len(real), len(s)
        for name, distance in (("cmmd", D.cmmd_distance), ("palette", D.palette_distance)):
            if name in feats[s.name]:
                m[name] = {
                    "value": distance(feats["real"][name], feats[s.name][name]),
                    "n_real": n_real,
                    "n_generated": n_gen,
                    "lower_is_better": True,
                }
        if "inception" in feats[s.name]:
            fr, fg = feats["real"]["inception"], feats[s.name]["inception"]
            dim = fr.shape[1]
            if cfg.wants("fid"):
                entry = {
                    "value": D.fid_from_features(fr, fg),
                    "n_real": n_real,
                    "n_generated": n_gen,
                    "feature_dim": dim,
                    "lower_is_better": True,
                    "reliable": min(n_real, n_gen) >= dim,
                }
                m["fid"] = entry
                if not entry["reliable"] and not fid_warned:
                    fid_warned = True
                    warnings.append(
                        f"FID IS NOT MEANINGFUL HERE: {min(n_real, n_gen)} images against {dim} feature dimensions. "
                        "With fewer images than dimensions the covariances are singular and FID is dominated by "
                        "its bias (the thesis's 10-image FID of 29.96 is such a number). Use KID, which is "
                        "unbiased, or CMMD; FID needs thousands of images"
                    )
            if cfg.wants("kid"):
                k = D.kid(fr, fg, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, seed=cfg.seed)
                m["kid"] = {
                    "value": k.mean,
                    "std": k.std,
                    "subset_size": k.subset_size,
                    "subsets": k.subsets,
                    "n_real": n_real,
                    "n_generated": n_gen,
                    "lower_is_better": True,
                }
        if s.name in clip_scores:
            mean, std, ci = D.mean_ci95(clip_scores[s.name])
            m["clip_score"] = {"value": mean, "std": std, "ci95": ci, "n": n_gen, "lower_is_better": False}
        out[s.name] = m
    if "real" in clip_scores and gens:
        mean, std, ci = D.mean_ci95(clip_scores["real"])
        out["real"] = {"clip_score": {"value": mean, "std": std, "ci95": ci, "n": len(real), "lower_is_better": False}}
    return out


def _items(sets: list[ImageSet], clip_scores: dict[str, np.ndarray], out: Path) -> list[dict[str, Any]]:
    """One row per key (prompt × replicate, or file stem): each set's file and CLIP score."""
    rows: dict[str, dict[str, Any]] = {}
    order = [s for s in sets if s.name != "real"] + [s for s in sets if s.name == "real"]
    for s in order:
        for idx, it in enumerate(s.items):
            if s.name == "real" and it.key not in rows:
                continue  # real pictures only appear beside a generated one
            row = rows.setdefault(it.key, {"key": it.key, "prompt": it.prompt, "images": {}})
            if row["prompt"] is None:
                row["prompt"] = it.prompt
            try:
                rel = it.path.resolve().relative_to(out.resolve()).as_posix()
            except ValueError:  # outside the report: an absolute path (a relative one would be read from out/)
                rel = str(it.path.resolve())
            entry: dict[str, Any] = {"file": rel}
            if it.seed is not None:
                entry["seed"] = it.seed
            if s.name in clip_scores:
                entry["clip_score"] = float(clip_scores[s.name][idx])
            row["images"][s.name] = entry
    return list(rows.values())


_NAMES = {"cmmd": "CMMD", "fid": "FID", "kid": "KID", "clip_score": "CLIP score", "palette": "Palette distance"}


def verdict(metrics: dict[str, dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """Plain sentences: which set is closest to the real images, and which follows the prompts best."""
    names = [n for n in labels if n in metrics]
    lines = []
    for key, title in _NAMES.items():
        have = [(n, metrics[n][key]) for n in names if key in metrics[n]]
        if not have:
            continue
        lower = have[0][1]["lower_is_better"]
        what = "closest to the real images" if lower else "follows its prompts best"
        if len(have) == 1:
            n, e = have[0]
            lines.append(f"{title}: {labels[n]} {e['value']:.4g} (N={e.get('n_generated', e.get('n'))}).")
            continue
        best = min(have, key=lambda t: t[1]["value"]) if lower else max(have, key=lambda t: t[1]["value"])
        ref = have[0]
        if all(e["value"] == ref[1]["value"] for _, e in have):
            lines.append(f"{title}: every set scores {ref[1]['value']:.4g}, so none is closer than another.")
            if key == "palette" and ref[1]["value"] >= 1:  # the worst value: "the same" would read as good news
                lines[-1] += " That is the worst possible: no generated colour is among the real images' colours."
        elif best[0] == ref[0]:
            others = ", ".join(f"{labels[n]} {e['value']:.4g}" for n, e in have[1:])
            lines.append(f"{title}: {labels[ref[0]]} {what} ({ref[1]['value']:.4g}; {others}).")
        else:
            a, b = ref[1]["value"], best[1]["value"]
            change = f", {100 * (b - a) / abs(a):+.1f}%" if a else ""
            lines.append(f"{title}: {labels[best[0]]} {what} ({labels[ref[0]]} {a:.4g} → {b:.4g}{change}).")
        if key == "fid" and not all(e.get("reliable", True) for _, e in have):
            lines[-1] += " Too few images for FID to mean anything; see KID."
    return lines


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lanskap", "torch", "diffusers", "transformers", "numpy", "scipy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out
