"""Evaluation (issue #6): the metric maths against independent computations, the reference
preprocessing, cached generation, the report, folder comparison and the error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, main_cli, run_cli
from lanskap.config import Settings
from lanskap.errors import LanskapError
from lanskap.evaluation import (
    EvalConfig,
    clip_score_values,
    cmmd_distance,
    evaluate,
    fid_from_features,
    frechet_distance,
    kid,
)
from lanskap.evaluation.distances import polynomial_mmd2_unbiased
from lanskap.generation.params import GenerationRequest, LoraSpec

CAPTIONS = [
    "a castle in the mountains under two moons",
    "a waterfall in a glowing forest",
    "a misty lake at dawn with a tower",
    "a village by the river at sunset",
    "snowy peaks above a green valley",
]


# -- the formulas ----------------------------------------------------------------------------
def test_cmmd_distance_is_the_reference_v_statistic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    y = rng.normal(loc=0.8, size=(4, 5))  # n != m

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * 10.0**2)))

    def mean_k(a: np.ndarray, b: np.ndarray) -> float:  # every pair, diagonal included
        return sum(k(p, q) for p in a for q in b) / (len(a) * len(b))

    by_hand = 1000 * (mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y))
    got = cmmd_distance(x, y)
    assert isinstance(got, float)
    assert got == pytest.approx(by_hand, rel=1e-9)
    assert got > 0
    assert cmmd_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert cmmd_distance(y, x) == pytest.approx(got, rel=1e-12)
    with pytest.raises(ValueError):
        cmmd_distance(x, np.zeros((3, 4)))


def test_frechet_distance_matches_closed_forms() -> None:
    rng = np.random.default_rng(1)
    # Diagonal covariances: |mu1-mu2|^2 + sum (a + b - 2 sqrt(ab)).
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.5, 2, size=6), rng.uniform(0.5, 2, size=6)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-10)
    # Full covariances: Tr((S1 S2)^1/2) is the sum of the square roots of S1 S2's eigenvalues.
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = m1 @ m1.T + np.eye(6), m2 @ m2.T + np.eye(6)
    tr_sqrt = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    # One dimension: (m1-m2)^2 + (sd1-sd2)^2.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)


def test_kid_is_the_unbiased_cubic_mmd_and_stays_honest_where_fid_is_biased() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 4)), rng.normal(0.5, size=(6, 4))

    def kern(p: np.ndarray, q: np.ndarray) -> float:
        return (p @ q / 4 + 1) ** 3

    m = 6
    xx = sum(kern(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kern(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(kern(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    full = kid(x, y, subsets=5, subset_size=1000)  # subsets shrink to the set: every one is the full set
    assert full.subset_size == 6 and full.mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert full.std == pytest.approx(0.0, abs=1e-9)
    # Two samples of ONE distribution, far fewer than the dimensions: FID reports a large
    # distance (its bias), KID averages to about zero (it is unbiased).
    same1, same2 = rng.normal(size=(20, 64)), rng.normal(size=(20, 64))
    assert fid_from_features(same1, same2) > 50
    values = [kid(rng.normal(size=(20, 64)), rng.normal(size=(20, 64)), subsets=1).mean for _ in range(200)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))


def test_clip_score_values_are_clamped_cosines() -> None:
    img = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    txt = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(clip_score_values(img, txt), [100.0, 0.0, 100 / np.sqrt(2)])


def test_palette_distance_is_total_variation_of_colour_histograms() -> None:
    from lanskap.evaluation.distances import palette_distance, palette_histogram

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 250
    teal = np.zeros((4, 4, 3), np.uint8)
    teal[..., 1:] = 120
    half = red.copy()
    half[:2] = teal[:2]
    h = palette_histogram(red)
    assert h.sum() == 16 and h.max() == 16  # one bin
    assert palette_distance(h, palette_histogram(red) * 3) == 0.0  # scale-free: set sizes may differ
    assert palette_distance(h, palette_histogram(teal)) == 1.0
    assert palette_distance(h, palette_histogram(half)) == 0.5


# -- the metric models ------------------------------------------------------------------------
def _picture(i: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(100 + i)
    base = rng.integers(0, 255, size=(4, 4, 3)).astype(np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("metric") / "clip", "clip")


@pytest.fixture(scope="module")
def tiny_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("metric") / "inception", "inception")


def test_cmmd_embeddings_follow_the_reference_preprocessing(tiny_clip: Path, tmp_path: Path) -> None:
    from transformers import CLIPModel

    from lanskap.evaluation.clip import ClipEvaluator

    paths = []
    for i, size in enumerate([(60, 40), (40, 70), (50, 50), (33, 90), (64, 48)]):
        paths.append(tmp_path / f"{i}.png")
        _picture(i, size).save(paths[-1])
    clip = ClipEvaluator(str(tiny_clip), batch_size=2)  # 5 images in batches of 2: none may be dropped
    emb = clip.cmmd_embeddings(paths)
    assert emb.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-9)

    # The reference, step by step: centre square, PIL bicubic to the input size, /255, CLIP mean/std.
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    size = 32
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        arr = np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=box), np.float32) / 255.0
        pixels.append(((arr - mean) / std).transpose(2, 0, 1))
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.tensor(np.stack(pixels), dtype=torch.float32))
    ref = getattr(ref, "pooler_output", ref).numpy()
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_clip_score_matches_the_transformers_computation(tiny_clip: Path, tmp_path: Path) -> None:
    from transformers import CLIPModel, CLIPProcessor

    from lanskap.evaluation.clip import ClipEvaluator

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        _picture(i, (80, 60)).save(paths[-1])
    prompts = CAPTIONS[:3]
    clip = ClipEvaluator(str(tiny_clip))
    scores = clip_score_values(clip.score_image_embeddings(paths), clip.text_embeddings(prompts))

    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    proc = CLIPProcessor.from_pretrained(str(tiny_clip))
    inputs = proc(text=prompts, images=[Image.open(p) for p in paths], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).numpy()
    np.testing.assert_allclose(scores, np.maximum(100 * cos, 0), atol=1e-3)
    assert not clip.truncated(prompts[0]) and clip.truncated(" ".join(["castle"] * 100))


def test_inception_features_take_mixed_sizes_without_dropping_any(tiny_inception: Path, tmp_path: Path) -> None:
    from lanskap.evaluation.inception import inception_features, load_inception

    paths = []
    for i, size in enumerate([(64, 64), (64, 64), (80, 48), (64, 64), (80, 48)]):
        paths.append(tmp_path / f"{i}.png")
        _picture(i, size).save(paths[-1])
    model = load_inception(tiny_inception)
    together = inception_features(model, paths, batch_size=2)
    alone = np.concatenate([inception_features(model, [p]) for p in paths])
    assert together.shape == (5, model.features)
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)
    assert together.std(axis=0).mean() > 1e-4  # the tiny net tells pictures apart
    assert fid_from_features(together, together) == pytest.approx(0.0, abs=1e-6)


# -- the whole evaluation ---------------------------------------------------------------------
def write_split(root: Path, n: int = 5) -> Path:
    """An imagefolder dataset with a test split, as `lanskap dataset prepare` lays it out."""
    test = root / "test"
    test.mkdir(parents=True)
    rows = []
    for i in range(n):
        _picture(i, (72, 64)).save(test / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": CAPTIONS[i % len(CAPTIONS)]}))
    (test / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.e2e
def test_evaluate_base_vs_lora_writes_report_and_reruns_from_cache(
    tiny_sd: Path,
    tiny_lora: Path,
    tiny_clip: Path,
    tiny_inception: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_split(tmp_path / "data")
    out = tmp_path / "report"
    args = [
        "evaluate", str(data), "--model", str(tiny_sd), "--lora", f"{tiny_lora}:0.8",
        "--clip-model", str(tiny_clip), "--inception-model", str(tiny_inception),
        "--steps", "2", "-W", "64", "-H", "64", "--seed", "7", "--kid-subsets", "10", "--out", str(out),
    ]  # fmt: skip
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and "CMMD" in proc.stdout
    assert "FID IS NOT MEANINGFUL" in proc.stderr  # 5 images against 256 feature dimensions
    report = json.loads((out / "report.json").read_text())

    # Same prompts, same seeds for base and LoRA; every number has its N.
    assert report["generation"]["seeds"] == [7, 8, 9, 10, 11]
    assert report["generation"]["generated"] == {"base": 5, "lora": 5}
    for name in ("base", "lora"):
        m = report["metrics"][name]
        assert set(m) == {"cmmd", "fid", "kid", "clip_score", "palette"}
        assert m["cmmd"]["n_real"] == 5 and m["cmmd"]["n_generated"] == 5
        assert m["fid"]["reliable"] is False and m["fid"]["feature_dim"] == 256
        assert m["kid"]["subset_size"] == 5
    assert report["models"]["base"]["hash"] and report["models"]["loras"][0]["scale"] == 0.8
    assert report["models"]["clip"]["hash"] != "unknown" and report["models"]["inception"]["hash"]
    rows = report["items"]
    assert [r["prompt"] for r in rows] == CAPTIONS
    for r in rows:
        assert r["images"]["base"]["seed"] == r["images"]["lora"]["seed"]
        base = np.asarray(Image.open(out / r["images"]["base"]["file"]), np.int16)
        lora = np.asarray(Image.open(out / r["images"]["lora"]["file"]), np.int16)
        assert np.abs(base - lora).max() > 0  # the LoRA changed the picture

    # The numbers are the formulas applied to the report's own images.
    from lanskap.evaluation.clip import ClipEvaluator

    clip = ClipEvaluator(str(tiny_clip))
    real = clip.cmmd_embeddings([Path(r["images"]["real"]["file"]) for r in rows])
    gen = clip.cmmd_embeddings([out / r["images"]["lora"]["file"] for r in rows])
    assert report["metrics"]["lora"]["cmmd"]["value"] == pytest.approx(cmmd_distance(real, gen), rel=1e-6)

    # The base image is exactly what `lanskap generate` makes with these settings.
    from lanskap.generation.engine import Engine

    engine = Engine(settings=Settings(home=tmp_path / "gen-home", model=str(tiny_sd)))
    req = GenerationRequest(CAPTIONS[0], seed=7, steps=2, width=64, height=64)
    again = np.asarray(engine.generate(req).images[0], np.int16)
    assert np.abs(again - np.asarray(Image.open(out / rows[0]["images"]["base"]["file"]), np.int16)).max() <= 1

    # The HTML stands alone: metric table, embedded plots, every prompt beside its images.
    page = (out / "report.html").read_text()
    assert "<table class=metrics>" in page and page.count("data:image/png;base64,") == len(report["plots"]) >= 2
    assert all(c in page for c in CAPTIONS) and page.count("data:image/jpeg;base64,") == 15
    assert "Verdict" in page and "FID IS NOT MEANINGFUL" in page
    assert (out / "metrics.png").stat().st_size > 5000
    with Image.open(out / "metrics.png") as plot:  # panels in rows of at most three: never a squashed strip
        assert plot.width / plot.height < 3.2 and plot.width <= 3 * 3.6 * 110 + 1, plot.size

    # A rerun regenerates nothing (in this process: the real process ran above).
    before = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    proc = main_cli(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    again_report = json.loads((out / "report.json").read_text())
    assert again_report["generation"]["generated"] == {"base": 0, "lora": 0}
    assert again_report["generation"]["cached"] == {"base": 5, "lora": 5}
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == before
    assert again_report["metrics"] == report["metrics"]


def test_cache_is_keyed_by_settings_and_shared_across_reports(tiny_sd: Path, tiny_clip: Path, tmp_path: Path) -> None:
    data = write_split(tmp_path / "data", n=2)
    settings = Settings(home=tmp_path / "home", model=str(tiny_sd))
    fields = {"steps": 1, "width": 64, "height": 64}

    def run(out: str, **kw) -> dict:  # type: ignore[no-untyped-def]
        cfg = EvalConfig(out=tmp_path / out, data=data, clip_model=str(tiny_clip), metrics=("cmmd",),
                         request_fields={**fields, **kw})  # fmt: skip
        return evaluate(cfg, settings).report

    assert run("a")["generation"]["generated"] == {"base": 2}
    assert run("b")["generation"]["cached"] == {"base": 2}  # another report folder reuses them
    changed = run("b", guidance=3.0)  # other settings: other pixels, nothing stale is reused
    assert changed["generation"]["generated"] == {"base": 2}
    assert len(list((tmp_path / "b" / "images" / "base").glob("*.png"))) == 2  # stale files removed


@pytest.mark.e2e
def test_evaluate_two_folders_with_prompts(
    tiny_clip: Path, tiny_inception: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir()
    gen.mkdir()
    for i in range(4):
        _picture(i, (64, 64)).save(real / f"{i}.png")
        _picture(i + 10, (96, 64)).save(gen / f"{i}.jpg")
    (gen / "notes.txt").write_text("not an image, ignored")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(CAPTIONS[:4]) + "\n")
    out = tmp_path / "cmp"
    proc = main_cli(
        capsys, "evaluate", "--real", str(real), "--generated", str(gen), "--prompts", str(prompts),
        "--clip-model", str(tiny_clip), "--inception-model", str(tiny_inception), "--out", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    m = summary["metrics"]["gen"]
    assert m["cmmd"]["n_real"] == 4 and m["cmmd"]["n_generated"] == 4 and m["clip_score"]["n"] == 4
    assert summary["sets"]["real"]["n"] == 4
    report = json.loads((out / "report.json").read_text())
    assert [r["prompt"] for r in report["items"]] == CAPTIONS[:4]
    assert (out / "report.html").is_file()

    # Without prompts there is no CLIP score, and the report says why.
    proc = main_cli(capsys, "evaluate", "--real", str(real), "--generated", str(gen), "--clip-model",
                    str(tiny_clip), "--metrics", "cmmd,clip", "--out", str(tmp_path / "np"), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "clip_score" not in json.loads(proc.stdout)["metrics"]["gen"]
    assert "give a prompts file" in proc.stderr


def _inproc(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The real CLI entry point in this process (no torch start-up per call); returns the error line."""
    from lanskap.cli.main import main

    rc = main(list(args))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc != 0 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_folders_get_one_line_errors(
    tiny_clip: Path, tiny_inception: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, empty, single, broken = (tmp_path / n for n in ("good", "empty", "single", "broken"))
    for d in (good, empty, single, broken):
        d.mkdir()
    for i in range(3):
        _picture(i).save(good / f"{i}.png")
        _picture(i).save(broken / f"{i}.png")
    _picture(0).save(single / "only.png")
    (broken / "cut.png").write_bytes((good / "0.png").read_bytes()[:60])
    (broken / "fake.jpg").write_text("hello")
    common = ["--clip-model", str(tiny_clip), "--inception-model", str(tiny_inception), "--out", str(tmp_path / "o")]

    # One real process: exit code and no traceback as a user sees them.
    assert_one_line_error(run_cli("evaluate", "--real", str(good), "--generated", str(empty), *common), "no images")
    line = _inproc(capsys, "evaluate", "--real", str(good), "--generated", str(single), *common)
    assert "at least 2" in line and "has 1" in line
    line = _inproc(capsys, "evaluate", "--real", str(broken), "--generated", str(good), *common)
    assert "2 unreadable" in line and "cut.png" in line and "fake.jpg" in line
    assert "--generated" in _inproc(capsys, "evaluate", "--real", str(good), *common)
    assert "not found" in _inproc(
        capsys, "evaluate", "--real", str(tmp_path / "nope"), "--generated", str(good), *common
    )
    prompts = tmp_path / "p.txt"
    prompts.write_text("only one prompt\n")
    line = _inproc(
        capsys, "evaluate", "--real", str(good), "--generated", str(good), "--prompts", str(prompts), *common
    )
    assert "1 prompts" in line and "3 images" in line
    line = _inproc(capsys, "evaluate", "--real", str(good), "--generated", str(good), "--clip-model",
                   "nobody/no-such-clip", "--out", str(tmp_path / "o2"))  # fmt: skip
    assert "not available offline" in line and "hf download" in line
    assert not (tmp_path / "o2").exists(), "a failed run leaves no empty report folder"
    line = _inproc(capsys, "evaluate", "--real", str(good), "--generated", str(good), "--clip-model", "none",
                   "--inception-model", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o3"))  # fmt: skip
    assert "Inception weights not found" in line
    assert not (tmp_path / "o3").exists()
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_single_image_is_fine_without_fid(tiny_clip: Path, tmp_path: Path) -> None:
    """CMMD and the CLIP score are defined for one image; only FID/KID need two."""
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir()
    gen.mkdir()
    _picture(1).save(real / "a.png")
    _picture(2).save(gen / "a.png")
    cfg = EvalConfig(out=tmp_path / "o", real=real, generated=[gen], clip_model=str(tiny_clip), inception_model=None)
    result = evaluate(cfg, Settings(home=tmp_path / "home"))
    assert result.report["metrics"]["gen"]["cmmd"]["n_generated"] == 1
    assert result.html_path.is_file() and os.stat(result.json_path).st_mode & 0o044  # readable by others


def test_config_refuses_contradictions() -> None:
    with pytest.raises(LanskapError, match="not both"):
        EvalConfig(out=Path("x"), data=Path("d"), real=Path("r"), generated=[Path("g")]).check()
    with pytest.raises(LanskapError, match="a LoRA applies when generating from a dataset"):
        EvalConfig(out=Path("x"), real=Path("r"), generated=[Path("g")], loras=(LoraSpec("mist"),)).check()
    with pytest.raises(LanskapError, match="nothing to measure"):
        EvalConfig(out=Path("x"), data=Path("d"), clip_model=None, metrics=("cmmd", "fid", "kid", "clip")).check()
    with pytest.raises(LanskapError, match="unknown metric"):
        EvalConfig(out=Path("x"), data=Path("d"), metrics=("fidd",)).check()


def test_pytorch_fid_pth_is_refused_then_imported_once(
    tiny_inception: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The FID weights ship as a pickle (.pth): refused by default, converted once with opt-in."""
    from safetensors.torch import load_file

    from lanskap.evaluation.inception import inception_features, load_inception

    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(load_file(str(tiny_inception / "model.safetensors")), pth)
    assert_one_line_error(
        main_cli(capsys, "models", "import-inception", str(pth), str(tmp_path / "inc")), "--allow-pickle"
    )
    proc = run_cli("models", "import-inception", str(pth), str(tmp_path / "inc"), "--allow-pickle")
    assert proc.returncode == 0, proc.stderr
    pic = tmp_path / "a.png"
    _picture(3).save(pic)
    np.testing.assert_allclose(
        inception_features(load_inception(tmp_path / "inc"), [pic]),
        inception_features(load_inception(tiny_inception), [pic]),
        rtol=1e-6,
    )


def test_a_renamed_pickle_is_known_by_its_bytes(
    tiny_inception: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pickles are found by content (zip or pickle header), not by name; every refusal is one line."""
    from safetensors.torch import load_file, save_file

    from lanskap.errors import UnsafeFileError
    from lanskap.evaluation.inception import load_inception
    from lanskap.models.safety import is_pickle, sniff

    state = load_file(str(tiny_inception / "model.safetensors"))
    renamed = tmp_path / "weights.dat"
    torch.save(state, renamed)  # torch's zip archive of pickles, under a harmless-looking name
    bare = tmp_path / "weights"
    torch.save(state, bare, _use_new_zipfile_serialization=False)  # a bare pickle stream, no suffix at all
    as_dat = tmp_path / "converted.dat"
    save_file(state, str(as_dat))  # safetensors under another name is fine
    assert (sniff(renamed), sniff(bare), sniff(as_dat)) == ("zip", "pickle", "safetensors")
    assert is_pickle(renamed) and is_pickle(bare) and not is_pickle(as_dat)
    assert not is_pickle(tiny_inception / "config.json")  # configs beside the weights are not pickles
    for path in (renamed, bare):
        with pytest.raises(UnsafeFileError, match="pickle files can run code"):
            load_inception(path)
    assert load_inception(as_dat) is not None
    assert load_inception(renamed, allow_pickle=True) is not None  # tensors only, when opted in

    garbage = tmp_path / "noise.dat"
    garbage.write_bytes(b"\x80\x04not really a pickle at all")
    for name in ("real", "gen"):
        (tmp_path / name).mkdir()
        for i in range(2):
            _picture(i).save(tmp_path / name / f"{i}.png")
    folders = ["--real", str(tmp_path / "real"), "--generated", str(tmp_path / "gen"), "--clip-model", "none"]
    line = _inproc(capsys, "evaluate", *folders, "--inception-model", str(garbage), "--allow-pickle",
                   "--out", str(tmp_path / "o"))  # fmt: skip
    assert "noise.dat is not FID Inception-v3 weights: torch could not read it" in line
    line = _inproc(capsys, "evaluate", *folders, "--inception-model", str(renamed), "--out", str(tmp_path / "o"))
    assert "refusing to load pickled weights weights.dat" in line and line.endswith("(--allow-pickle)")


def test_the_verdict_says_when_every_set_scores_the_same_and_when_that_is_the_worst() -> None:
    from lanskap.evaluation.run import verdict

    labels = {"base": "base model", "lora": "with LoRA"}
    worst = {n: {"palette": {"value": 1.0, "lower_is_better": True, "n_generated": 4}} for n in labels}
    (line,) = verdict(worst, labels)
    assert "every set scores 1" in line and "worst possible" in line and "no difference" not in line
    same = {n: {"palette": {"value": 0.4, "lower_is_better": True, "n_generated": 4}} for n in labels}
    (line,) = verdict(same, labels)
    assert "every set scores 0.4" in line and "worst" not in line
    better = {
        "base": {"palette": {"value": 0.9, "lower_is_better": True}},
        "lora": {"palette": {"value": 0.6, "lower_is_better": True}},
    }
    (line,) = verdict(better, labels)
    assert line.startswith("Palette distance: with LoRA closest to the real images") and "-33.3%" in line


def test_the_metrics_plot_wraps_its_title_and_stacks_panels(tmp_path: Path) -> None:
    """Six metrics make a 2x3 block; a long title is wrapped inside the picture (it was cut off)."""
    from lanskap.evaluation.report import METRIC_ROWS, plot_metrics

    keys = [k for k, _, _ in METRIC_ROWS][:6]
    value = {"value": 0.5, "lower_is_better": True, "std": 0.1, "ci95": 0.1}
    report = {
        "title": "base model against base + a LoRA with a very long name indeed " * 2,
        "metrics": {"base": dict.fromkeys(keys, value), "lora": dict.fromkeys(keys, value)},
        "sets": {n: {"label": f"{n} set with a long label", "n": 300} for n in ("base", "lora")},
    }
    path = plot_metrics(report, tmp_path / "metrics.png")
    assert path is not None
    with Image.open(path) as plot:
        rows = -(-min(6, len(keys)) // 3)
        assert plot.size == (round(3.6 * min(3, len(keys)) * 110), round((3.2 * rows + 0.5) * 110)), plot.size
        # the top band holds the wrapped title: ink there, not a blank margin with the title cut off
        top = np.asarray(plot.convert("L"))[:40]
        assert (top < 128).any()


def test_evaluate_an_embedding_by_file_renders_its_name_first(tiny_sd: Path, tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    data = write_split(tmp_path / "data", n=2)
    emb = tmp_path / "glow-style.safetensors"
    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(1))}, str(emb))
    settings = Settings(home=tmp_path / "home", model=str(tiny_sd))
    cfg = EvalConfig(out=tmp_path / "r", data=data, clip_model=None, metrics=("palette",), embedding=str(emb),
                     request_fields={"steps": 2, "width": 64, "height": 64})  # fmt: skip
    report = evaluate(cfg, settings).report
    assert report["models"]["embedding"]["name"] == "glow-style" and report["models"]["embedding"]["vectors"] == 2
    infos = [Image.open(p).info["parameters"] for p in sorted((tmp_path / "r" / "images" / "lora").glob("*.png"))]
    assert len(infos) == 2 and all(t.startswith("glow-style, ") and 'TI hashes: "glow-style: ' in t for t in infos)
    assert report["generation"]["generated"] == {"base": 2, "lora": 2}
    base = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "r" / "images" / "base").glob("*.png"))]
    styled = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "r" / "images" / "lora").glob("*.png"))]
    assert any(not np.array_equal(a, b) for a, b in zip(base, styled, strict=True))
