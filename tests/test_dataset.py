"""Dataset preparation on a deliberately messy folder (issue #4)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, main_cli, run_cli
from lanskap.data.augment import Augment, augment, color_jitter, hflip, random_resized_crop
from lanskap.data.edit import export_csv, import_csv, list_captions, replace_text, set_caption
from lanskap.data.enrich import enrich, load_rules
from lanskap.data.prepare import PrepareOptions, prepare_dataset
from lanskap.data.preview import augmentation_grid, contact_sheet
from lanskap.errors import LanskapError


def landscape(seed: int, size: tuple[int, int] = (576, 520)) -> Image.Image:
    """A smooth random picture; different seeds give perceptually different images."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def tiny_blip(models_dir: Path) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-blip-captioner", "blip")


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(6):  # good RGB images; three with sidecars
        landscape(i).save(src / f"good{i}.png")
    (src / "good0.txt").write_text("a castle on a cliff above the sea\n")
    (src / "good1.txt").write_text("a misty mountain valley at sunset")
    (src / "good2.txt").write_text("a quiet beach village")
    landscape(10).convert("L").save(src / "grey.jpg", quality=95)
    rgba = landscape(11).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, 100, 100))  # a transparent corner
    rgba.putalpha(alpha)
    rgba.save(src / "alpha.png")
    landscape(12).convert("CMYK").save(src / "cmyk.jpg", quality=95)
    rotated = landscape(13, (600, 520))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated.save(src / "sub" / "rotated.jpg", exif=exif, quality=95)
    good = io.BytesIO()
    landscape(14).save(good, "PNG")
    (src / "truncated.png").write_bytes(good.getvalue()[:300])
    (src / "notes.jpg").write_text("this is not a picture")
    (src / "archive.zip").write_bytes(b"PK\x03\x04")
    (src / "sub" / "copy-of-good3.png").write_bytes((src / "good3.png").read_bytes())
    landscape(4).save(src / "sub" / "good4-resaved.jpg", quality=90)  # near duplicate of good4.png
    landscape(15, (300, 200)).save(src / "small.png")
    (src / "metadata.jsonl").write_text(
        json.dumps({"file_name": "good3.png", "text": "ancient ruins in a forest"}) + "\n"
    )
    with (src / "thesis.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "captions"])
        w.writerow(["/content/drive/MyDrive/dataset_result/grey.jpg", "a grey landscape with a mountain"])
    return src


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def prepare(src: Path, out: Path, blip: Path | None, **kw) -> dict:  # type: ignore[no-untyped-def]
    opts = PrepareOptions(captioner=str(blip) if blip else "none", **kw)
    return prepare_dataset(src, out, opts)


def test_prepare_a_messy_folder(messy: Path, tiny_blip: Path, tiny_sd: Path, tmp_path: Path) -> None:
    before = snapshot(messy)
    out = tmp_path / "ds"
    m = prepare(messy, out, tiny_blip, tokenizer=str(tiny_sd))
    assert snapshot(messy) == before, "SRC is never modified"

    reasons = {r["source"]: r["reason"] for r in m["rejected"]}
    assert reasons["truncated.png"].startswith("corrupt or truncated")
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["archive.zip"].startswith("not an image")
    assert reasons["small.png"].startswith("too small: 300x200")
    assert reasons["sub/copy-of-good3.png"] == "exact duplicate of good3.png"
    assert reasons["sub/good4-resaved.jpg"].startswith("near duplicate of good4.png")

    items = {it["source"]: it for it in m["items"]}
    assert set(items) == {f"good{i}.png" for i in range(6)} | {"grey.jpg", "alpha.png", "cmyk.jpg", "sub/rotated.jpg"}
    for it in items.values():
        with Image.open(out / it["file"]) as im:
            assert im.mode == "RGB" and im.format == "PNG"
    assert (items["sub/rotated.jpg"]["width"], items["sub/rotated.jpg"]["height"]) == (520, 600), "EXIF rotation"
    with Image.open(out / items["alpha.png"]["file"]) as im:
        assert im.getpixel((10, 10)) == (255, 255, 255), "alpha flattened onto the background"

    sources = {s: items[s]["caption_source"] for s in items}
    assert sources["good0.png"] == sources["good1.png"] == "sidecar"
    assert items["good0.png"]["caption"] == "a castle on a cliff above the sea"
    assert sources["good3.png"] == "metadata.jsonl" and items["good3.png"]["caption"] == "ancient ruins in a forest"
    assert sources["grey.jpg"] == "thesis-csv"
    assert sources["alpha.png"] == "blip" and items["alpha.png"]["caption"]
    assert all(isinstance(it["tokens"], int) for it in items.values()) and m["tokens_counted"]

    # 80/20 split, imagefolder layout, thesis CSV
    assert (m["counts"]["train"], m["counts"]["test"]) == (8, 2)
    for split in ("train", "test"):
        rows = [json.loads(x) for x in (out / split / "metadata.jsonl").read_text().splitlines()]
        assert len(rows) == m["counts"][split]
        assert all((out / split / r["file_name"]).is_file() and r["text"] for r in rows)
    with (out / "captions.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {"image", "captions"} <= set(table[0]) and len(table) == 10
    assert json.loads((out / "dataset.json").read_text())["settings"]["seed"] == 42


def test_prepare_is_deterministic_and_seeded(messy: Path, tmp_path: Path) -> None:
    a = prepare(messy, tmp_path / "a", None)
    b = prepare(messy, tmp_path / "b", None)
    assert (tmp_path / "a" / "dataset.json").read_bytes() == (tmp_path / "b" / "dataset.json").read_bytes()
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert a == b
    other = prepare(messy, tmp_path / "c", None, seed=7, test_fraction=0.5)
    assert other["counts"]["test"] == 3 and other["settings"]["seed"] == 7


def test_captioner_none_leaves_out_and_reports(messy: Path, tmp_path: Path) -> None:
    m = prepare(messy, tmp_path / "ds", None)
    reasons = {r["source"]: r["reason"] for r in m["rejected"]}
    for name in ("good5.png", "alpha.png", "cmyk.jpg", "sub/rotated.jpg"):
        assert reasons[name] == "no caption (captioner is none)"
    assert m["counts"]["images"] == 5


def test_enrichment_rules_and_idempotence(tmp_path: Path) -> None:
    rules = load_rules()
    keywords = {k for r in rules for k in r.keywords}
    assert {"landscape", "castle", "sea", "beach", "village", "mountain", "sunset", "mist"} <= keywords
    once = enrich("a castle on a hill", rules)
    assert once.startswith("a castle on a hill. A majestic castle")
    assert enrich(once, rules) == once, "idempotent"
    assert enrich("a red door", rules) == "a red door"
    yml = tmp_path / "rules.yaml"
    yml.write_text("rules:\n  - keywords: [dragon]\n    sentence: A dragon circles overhead.\n")
    assert enrich("a dragon", load_rules(yml)) == "a dragon. A dragon circles overhead."
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nkeywords = ['x']\n")
    with pytest.raises(LanskapError, match="sentence"):
        load_rules(bad)


def test_enrich_in_prepare_and_token_window(messy: Path, tiny_sd: Path, tmp_path: Path) -> None:
    m = prepare(messy, tmp_path / "ds", None, enrich=True, tokenizer=str(tiny_sd))
    it = next(i for i in m["items"] if i["source"] == "good0.png")
    assert it["enriched"] and "A majestic castle" in it["caption"] and "endless sea" in it["caption"]
    assert it["raw_caption"] == "a castle on a cliff above the sea"
    assert it["tokens"] > 20 and it["over_token_window"] is False
    (messy / "good5.txt").write_text(" ".join(["castle"] * 90))
    m = prepare(messy, tmp_path / "ds2", None, tokenizer=str(tiny_sd))
    long = next(i for i in m["items"] if i["source"] == "good5.png")
    assert long["over_token_window"] is True and m["counts"]["over_token_window"] == 1


def test_caption_editing_survives_update(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare(messy, out, None)
    set_caption(out, "good1.png", "a misty mountain valley at dawn")
    assert replace_text(out, "castle", "fortress") == 1
    csv_path = tmp_path / "edit.csv"
    assert export_csv(out, csv_path) == 5
    rows = list(csv.DictReader(csv_path.open()))
    for r in rows:
        if r["source"] == "good2.png":
            r["caption"] = "a quiet beach village at noon"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert import_csv(out, csv_path) == 1
    caps = {it["source"]: (it["caption"], it["caption_source"]) for it in list_captions(out)}
    assert caps["good1.png"] == ("a misty mountain valley at dawn", "edited")
    assert caps["good0.png"][0] == "a fortress on a cliff above the sea"
    train = (out / "train" / "metadata.jsonl").read_text() + (out / "test" / "metadata.jsonl").read_text()
    assert "at dawn" in train and "at noon" in train

    with pytest.raises(LanskapError, match="--update"):
        prepare(messy, out, None)
    prepare(messy, out, None, update=True)
    caps = {it["source"]: it["caption"] for it in list_captions(out)}
    assert caps["good1.png"] == "a misty mountain valley at dawn", "edits survive prepare --update"
    assert caps["good2.png"] == "a quiet beach village at noon"
    assert not list(tmp_path.glob(".ds.*")), "no temporary folders left behind"
    with pytest.raises(LanskapError, match="no image"):
        set_caption(out, "nope.png", "x")


def test_augmentation_is_torchvision_free_and_seeded() -> None:
    im = landscape(1, (640, 480))
    crop = random_resized_crop(im, 256, random.Random(0), (0.5, 1.0), (0.75, 1.33))
    assert crop.size == (256, 256)
    assert np.array_equal(np.asarray(hflip(crop))[:, ::-1], np.asarray(crop))
    jit = color_jitter(crop, 0.3, random.Random(1))
    assert np.abs(np.asarray(jit).astype(int) - np.asarray(crop)).mean() > 1
    a, fa = augment(im, Augment(256, jitter=0.1), random.Random(5))
    b, fb = augment(im, Augment(256, jitter=0.1), random.Random(5))
    assert a.size == (256, 256) and fa == fb and np.array_equal(np.asarray(a), np.asarray(b))
    flips = [augment(im, Augment(64), random.Random(s))[1] for s in range(40)]
    assert 5 < sum(flips) < 35, "horizontal flip with p = 0.5"


def test_preview_writes_two_pictures(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare(messy, out, None)
    sheet = contact_sheet(out, out / "preview" / "contact-sheet.png")
    grid = augmentation_grid(out, out / "preview" / "augmentations.png", Augment(256, jitter=0.1), samples=3)
    with Image.open(sheet) as s, Image.open(grid) as g:
        assert s.width > 500 and s.height > 200
        assert g.height > 3 * 160 and g.width >= 6 * 160
        assert len(set(np.asarray(g.convert("L")).ravel().tolist())) > 50, "real pictures, not a blank canvas"


def test_dataset_cli(
    messy: Path, tiny_blip: Path, tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    proc = run_cli(  # one real process; the rest run the same entry point in this one
        "dataset", "prepare", str(messy), str(out), "--captioner", str(tiny_blip), "--enrich",
        "--tokenizer", str(tiny_sd), "--json", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["counts"]["images"] == 10 and summary["counts"]["rejected"] == 6
    shown = main_cli(capsys, "dataset", "captions", "list", str(out), "--search", "castle")
    assert shown.returncode == 0 and "castle" in shown.stdout
    assert main_cli(capsys, "dataset", "captions", "set", str(out), "good0.png", "a red fortress").returncode == 0
    prev = main_cli(capsys, "dataset", "preview", str(out), "--resolution", "128", "--samples", "2")
    assert prev.returncode == 0 and (out / "preview" / "augmentations.png").is_file()

    assert_one_line_error(main_cli(capsys, "dataset", "prepare", str(messy), str(messy / "out")), "outside SRC")
    assert_one_line_error(
        main_cli(capsys, "dataset", "prepare", str(tmp_path / "nope"), str(tmp_path / "o")), "not found"
    )
    bad = main_cli(capsys, "dataset", "prepare", str(messy), str(tmp_path / "o2"), "--test-fraction", "1.5")
    assert_one_line_error(bad, "--test-fraction")
    assert_one_line_error(main_cli(capsys, "dataset", "captions", "list", str(tmp_path)), "not a prepared dataset")


def test_untrusted_folders_leak_nothing_and_stop_nothing(messy: Path, tmp_path: Path) -> None:
    """Links out of SRC, FIFOs, hidden files, non-UTF-8 names and sparse giants: each listed, none read."""
    import os

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the vault code is 0451")
    landscape(20).save(outside / "secret.png")
    (messy / "leak.txt").symlink_to(outside / "secret.txt")  # a sidecar for leak.png, below
    (messy / "leak.png").write_bytes((messy / "good5.png").read_bytes())  # an ordinary picture...
    (messy / "good5.png").unlink()  # ...not a duplicate of anything
    (messy / "outside.png").symlink_to(outside / "secret.png")
    (messy / "inside.png").symlink_to(messy / "good4.png")  # a link within SRC is fine
    (messy / "world").symlink_to(outside, target_is_directory=True)
    os.mkfifo(messy / "pipe.png")  # reading it would block the run for ever
    (messy / ".hidden.png").write_bytes((messy / "good3.png").read_bytes())
    odd = os.fsencode(str(messy)) + b"/caf\xe9.png"  # Latin-1 bytes: not a UTF-8 name
    with open(odd, "wb") as f:
        f.write((messy / "good2.png").read_bytes())
    giant = messy / "giant.png"
    giant.write_bytes((messy / "good1.png").read_bytes())
    with open(giant, "r+b") as f:
        f.truncate(5 * 1024**3)  # 5 GB on paper, a few KB on disk

    manifest = prepare(messy, tmp_path / "ds", None)
    reasons = {r["source"]: r["reason"] for r in manifest["rejected"]}
    assert reasons["outside.png"] == "a link that leads out of the folder"
    assert reasons["leak.txt"] == "a link that leads out of the folder"
    assert reasons["world"].startswith("a link to a folder")
    assert reasons["pipe.png"] == "a FIFO, not a file"
    assert reasons[".hidden.png"] == "hidden"
    assert reasons["caf\\xe9.png"].startswith("the name is not valid UTF-8")
    assert reasons["giant.png"].startswith("too large: 5.0 GB")
    everything = json.dumps(manifest) + "".join(p.read_text() for p in (tmp_path / "ds").rglob("*.csv"))
    everything += "".join(p.read_text() for p in (tmp_path / "ds").rglob("*.jsonl"))
    assert "vault code" not in everything
    assert reasons["leak.png"].startswith("no caption"), "the secret did not become its caption"
    assert reasons["inside.png"] == "exact duplicate of good4.png", "a link within SRC is read"
    assert "outside.png" not in {it["source"] for it in manifest["items"]}
