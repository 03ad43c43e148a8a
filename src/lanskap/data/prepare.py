"""``lanskap dataset prepare``: from a messy folder to a captioned, split, documented dataset.

The output is built in a temporary sibling folder and swapped in at the end, so
an interrupted run leaves the previous dataset (or nothing) and never a half one.
The result depends only on the input and the settings: running it again gives
the same files.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lanskap import __version__
from lanskap.data.captions import DEFAULT_CAPTIONER, BlipCaptioner, lookup, metadata_captions, sidecar_caption
from lanskap.data.enrich import enrich, load_rules
from lanskap.data.layout import MANIFEST, caption_source_counts, read_manifest, write_captions
from lanskap.data.scan import Picture, Rejected, dedupe, scan
from lanskap.errors import LanskapError, SettingError

TOKEN_WINDOW = 77
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PrepareOptions:
    min_side: int = 512
    background: tuple[int, int, int] = (255, 255, 255)
    near_duplicate_distance: int = 4  # perceptual-hash bits; -1 turns near-duplicate detection off
    captioner: str = DEFAULT_CAPTIONER  # hub id, local path, or "none"
    caption_batch_size: int = 8
    enrich: bool = False
    rules: str | None = None
    test_fraction: float = 0.2
    seed: int = 42
    tokenizer: str | None = None  # a model (hub id or folder) whose CLIP tokenizer counts tokens
    update: bool = False

    def check(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise SettingError(
                f"test_fraction must be at least 0 and below 1, got {self.test_fraction:g}", "test_fraction"
            )
        if self.min_side < 1:
            raise SettingError("min_side must be at least 1", "min_side")
        if self.caption_batch_size < 1:
            raise SettingError("caption_batch_size must be at least 1", "caption_batch_size")


def _safe_stem(rel: str) -> str:
    stem = Path(rel).stem
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "image")[:60]


def split_items(shas: list[str], test_fraction: float, seed: int) -> set[str]:
    """The test set: a seeded shuffle of the sorted image hashes, so the split is the same on every run."""
    order = sorted(shas)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_test = int(n * test_fraction + 0.5)  # half up, not Python's banker's rounding
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return set(order[:n_test])


def load_tokenizer(spec: str | None) -> Any:
    """The CLIP tokenizer of a diffusers model folder or hub id (cached), or None."""
    if not spec:
        return None
    from transformers import CLIPTokenizer

    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            folder = path / "tokenizer" if (path / "tokenizer").is_dir() else path
            return CLIPTokenizer.from_pretrained(str(folder))
        return CLIPTokenizer.from_pretrained(spec, subfolder="tokenizer")
    except (OSError, ValueError):
        return None


def _check_folders(src: Path, out: Path, update: bool) -> None:
    src, out = src.resolve(), out.resolve()
    if not src.is_dir():
        raise LanskapError(f"source folder not found: {src}")
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        raise LanskapError("OUT must be outside SRC (lanskap never writes into the source folder)")
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise LanskapError(f"{out} exists and is not a lanskap dataset; choose an empty or new folder")
        if not update:
            raise LanskapError(f"{out} already holds a dataset; use --update to refresh it (caption edits are kept)")


def prepare_dataset(src: Path, out: Path, opts: PrepareOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Ingest, caption, enrich, split and write; return the manifest."""
    opts.check()
    src, out = Path(src), Path(out)
    _check_folders(src, out, opts.update)
    rules = load_rules(opts.rules) if opts.enrich else []
    previous = {it["sha256"]: it for it in read_manifest(out)["items"]} if (out / MANIFEST).is_file() else {}

    def stage(name: str) -> Callable[[int, int], None]:
        return lambda done, total: progress(name, done, total) if progress else None

    pictures, rejected = scan(src, min_side=opts.min_side, background=opts.background, progress=stage("reading"))
    pictures, dupes = dedupe(pictures, opts.near_duplicate_distance)
    rejected = sorted([*rejected, *dupes], key=lambda r: r.source)

    table = metadata_captions(src)
    captions: dict[str, tuple[str, str]] = {}
    need_blip: list[Picture] = []
    for pic in pictures:
        prev = previous.get(pic.sha256)
        if prev and prev.get("caption_source") == "edited":
            captions[pic.sha256] = (prev["raw_caption"], "edited")
            continue
        side = sidecar_caption(src, pic.source)
        found = (side, "sidecar") if side else lookup(table, pic.source)
        if found:
            captions[pic.sha256] = found
        elif prev and prev.get("caption_source") == "blip" and prev.get("captioner") == opts.captioner:
            captions[pic.sha256] = (prev["raw_caption"], "blip")  # reuse: BLIP is the slow part
        else:
            need_blip.append(pic)
    uncaptioned: list[Rejected] = []
    if need_blip and opts.captioner.lower() != "none":
        blip = BlipCaptioner(opts.captioner, batch_size=opts.caption_batch_size)
        for pic, text in zip(need_blip, blip.caption([p.image for p in need_blip], stage("captioning")), strict=True):
            if text:
                captions[pic.sha256] = (text, "blip")
            else:
                uncaptioned.append(Rejected(pic.source, "BLIP produced an empty caption"))
    else:
        uncaptioned = [Rejected(p.source, "no caption (captioner is none)") for p in need_blip]
    left_out = {r.source for r in uncaptioned}
    pictures = [p for p in pictures if p.source not in left_out]
    rejected = sorted([*rejected, *uncaptioned], key=lambda r: r.source)

    tokenizer = load_tokenizer(opts.tokenizer)
    test = split_items([p.sha256 for p in pictures], opts.test_fraction, opts.seed)
    items: list[dict[str, Any]] = []
    used: set[str] = set()
    for pic in pictures:
        raw, source = captions[pic.sha256]
        text = enrich(raw, rules) if (rules and source != "edited") else raw
        split = "test" if pic.sha256 in test else "train"
        name = f"{_safe_stem(pic.source)}-{pic.sha256[:8]}.png"
        while name in used:  # two files with the same stem and hash prefix: vanishingly rare
            name = f"{Path(name).stem}x.png"
        used.add(name)
        tokens = len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids) if tokenizer else None
        items.append(
            {
                "file": f"{split}/{name}",
                "split": split,
                "source": pic.source,
                "sha256": pic.sha256,
                "phash": pic.phash,
                "width": pic.width,
                "height": pic.height,
                "caption": text,
                "raw_caption": raw,
                "caption_source": source,
                "captioner": opts.captioner if source == "blip" else None,
                "enriched": text != raw,
                "tokens": tokens,
                "over_token_window": None if tokens is None else tokens + 2 > TOKEN_WINDOW,
            }
        )
    items.sort(key=lambda it: it["file"])
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items() if k != "update"}
    manifest = {
        "format": "lanskap-dataset/1",
        "created_by": f"lanskap {__version__}",
        "settings": settings,
        "counts": {
            "images": len(items),
            "train": sum(it["split"] == "train" for it in items),
            "test": sum(it["split"] == "test" for it in items),
            "rejected": len(rejected),
            "caption_sources": caption_source_counts(items),
            "enriched": sum(it["enriched"] for it in items),
            "over_token_window": sum(bool(it["over_token_window"]) for it in items),
        },
        "token_window": TOKEN_WINDOW,
        "tokens_counted": tokenizer is not None,
        "items": items,
        "rejected": [{"source": r.source, "reason": r.reason} for r in rejected],
    }
    if not items:
        raise LanskapError(f"no usable images in {src} ({len(rejected)} rejected); nothing written")
    _write(out, manifest, {it["sha256"]: it for it in items}, pictures, progress)
    return manifest


def _write(out: Path, manifest: dict, by_sha: dict, pictures: list[Picture], progress: Progress | None) -> None:
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for i, pic in enumerate(pictures, 1):
            dest = tmp / by_sha[pic.sha256]["file"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            pic.image.save(dest, "PNG", optimize=False)
            if progress:
                progress("writing", i, len(pictures))
        write_captions(tmp, manifest)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(Exception):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
