"""img2img, inpainting, outpainting and the pixel rules behind them (issue #3, points 3-5)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lanskap.errors import LanskapError
from lanskap.generation.imageops import (
    blur_mask,
    crop_region,
    expand_region,
    fill_masked,
    outpaint_canvas,
    resize_image,
)
from lanskap.generation.params import GenerationRequest, InitImage, InpaintMask
from lanskap.generation.prepare import outpaint_inputs

BASE = {"prompt": "a castle in the mist", "steps": 6, "seed": 5, "watermark": False}


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A smooth colourful 128x96 picture (not a multiple-of-64 size on purpose)."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((128, 96), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def box_mask() -> Image.Image:
    m = Image.new("L", (128, 96), 0)
    m.paste(255, (48, 32, 80, 64))
    return m


def far_from(mask: Image.Image, margin: int) -> np.ndarray:
    """Pixels more than ``margin`` away from any white pixel of ``mask``."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * margin + 1))
    return np.asarray(grown) == 0


# -- pure pixel rules -----------------------------------------------------------------------------
def test_resize_modes() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (100, 0, 200, 100))  # left red, right blue
    wide.paste((0, 255, 0), (0, 0, 200, 10))  # green top edge
    just = resize_image(wide, 64, 64, "just-resize")
    crop = resize_image(wide, 64, 64, "crop-and-resize")
    fill = resize_image(wide, 64, 64, "resize-and-fill")
    assert just.size == crop.size == fill.size == (64, 64)
    assert np.array_equal(arr(just), arr(wide.resize((64, 64), Image.Resampling.LANCZOS)))
    # crop keeps the centre at full height: the seam between red and blue is in the middle, red fills the left.
    c = arr(crop)
    assert c[40, 2].tolist() == [255, 0, 0] and c[40, 61].tolist() == [0, 0, 255]
    # fill fits the whole picture (32 rows high) and stretches its top edge (green) into the gap above.
    f = arr(fill)
    assert f[2, 32, 1] > 200 and f[2, 32, 0] < 60
    assert f[32, 2].tolist()[0] > 200 and f[32, 61].tolist()[2] > 200
    with pytest.raises(ValueError):
        resize_image(wide, 64, 64, "stretch")


def test_fill_takes_colours_from_around_the_hole() -> None:
    im = Image.new("RGB", (64, 64), (200, 40, 40))
    im.paste((0, 255, 0), (20, 20, 44, 44))  # content to be replaced
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    out = arr(fill_masked(im, mask))
    assert np.abs(out[32, 32] - [200, 40, 40]).max() < 30, "the hole takes the surrounding red"
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], arr(im)[keep]), "pixels outside the mask are untouched"


def test_crop_region_and_aspect_expansion() -> None:
    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (90, 40, 110, 50))
    region = crop_region(mask, 8)
    assert region == (82, 32, 118, 58)
    x1, y1, x2, y2 = expand_region(region, 64, 64, 200, 100)
    assert (x2 - x1) == (y2 - y1) and x1 >= 0 and x2 <= 200 and y1 >= 0 and y2 <= 100
    assert x1 <= 82 and x2 >= 118 and y1 <= 32 and y2 >= 58
    assert crop_region(Image.new("L", (10, 10), 0), 4) is None


def test_outpaint_canvas_and_seam_blend() -> None:
    im = Image.new("RGB", (64, 48), (10, 200, 30))
    canvas, mask = outpaint_canvas(im, 32, 0, 16, 0, overlap=8)
    assert canvas.size == mask.size == (96, 64)
    assert np.array_equal(arr(canvas)[16:, 32:], arr(im)), "the original sits where the margins put it"
    m = np.asarray(mask)
    assert (m[:, :32] == 255).all() and (m[:16, :] == 255).all()
    assert (m[24:, 40:] == 0).all() and (m[30, 32:40] == 255).all(), "an 8-px band of the original is repainted"
    # the blend ramps over many pixels instead of jumping 0 -> 255 at the seam
    soft = np.asarray(blur_mask(mask, 8)).astype(int)
    row = soft[40, 20:70]
    assert np.abs(np.diff(row)).max() < 60
    assert ((row > 10) & (row < 245)).sum() >= 8
    assert (soft[52:, 70:] == 0).all(), "far from the seam the original is kept exactly"


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda im, m: GenerationRequest("x", init=InitImage(im, 1.5)), "strength must be between 0.0 and 1.0"),
        (lambda im, m: GenerationRequest("x", init=InitImage(im, -0.1)), "strength must be between 0.0 and 1.0"),
        (lambda im, m: GenerationRequest("x", init=InitImage(im, 0.5, "zoom")), "unknown resize mode"),
        (
            lambda im, m: GenerationRequest("x", init=InitImage(im), mask=InpaintMask(m.resize((64, 64)))),
            "mask is 64x64 but the image is 128x96",
        ),
        (
            lambda im, m: GenerationRequest("x", init=InitImage(im), mask=InpaintMask(Image.new("L", im.size))),
            "mask is empty",
        ),
        (lambda im, m: GenerationRequest("x", init=InitImage(im), mask=InpaintMask(m, fill="x")), "masked content"),
        (lambda im, m: GenerationRequest("x", mask=InpaintMask(m)), "needs an image"),
    ],
)
def test_bad_image_parameters(picture: Image.Image, box_mask: Image.Image, build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LanskapError, match=message):
        build(picture, box_mask).validate()


def test_outpaint_margins_are_checked(picture: Image.Image) -> None:
    with pytest.raises(LanskapError, match="at least one"):
        outpaint_inputs(picture)
    with pytest.raises(LanskapError, match="left must be between"):
        outpaint_inputs(picture, left=-8)


# -- img2img through the engine -------------------------------------------------------------------
def test_img2img_strength(engine, picture: Image.Image) -> None:  # type: ignore[no-untyped-def]
    def run(strength: float) -> np.ndarray:
        r = engine.generate(GenerationRequest(**{**BASE, "steps": 20}, init=InitImage(picture, strength)))
        assert r.images[0].size == (128, 96), "size defaults to the input's"
        assert r.request.mode == "img2img"
        return arr(r.images[0])

    assert np.array_equal(run(0.0), arr(picture)), "strength 0 keeps the picture"
    low = run(0.05)
    d = [np.abs(run(s) - low).mean() for s in (0.2, 0.5, 1.0)]
    assert d[0] < d[1] < d[2], f"more strength must mean more change, got {d}"
    again = engine.generate(GenerationRequest(**{**BASE, "steps": 20}, init=InitImage(picture, 0.5)))
    assert np.array_equal(arr(again.images[0]), run(0.5)), "same seed, same pixels"


def test_img2img_resize_modes_and_infotext(engine, picture: Image.Image) -> None:  # type: ignore[no-untyped-def]
    outs = {}
    for mode in ("just-resize", "crop-and-resize", "resize-and-fill"):
        r = engine.generate(GenerationRequest(**BASE, width=64, height=64, init=InitImage(picture, 0.5, mode)))
        assert r.images[0].size == (64, 64)
        assert "Denoising strength: 0.5" in r.infotexts[0] and f"Resize mode: {mode}" in r.infotexts[0]
        outs[mode] = arr(r.images[0])
    assert not np.array_equal(outs["just-resize"], outs["crop-and-resize"])
    assert not np.array_equal(outs["crop-and-resize"], outs["resize-and-fill"])


# -- inpainting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", ["original", "fill", "noise"])
def test_inpaint_keeps_pixels_outside_the_mask(engine, picture, box_mask, fill: str) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(**BASE, init=InitImage(picture, 0.8), mask=InpaintMask(box_mask, blur=4, fill=fill))
    r = engine.generate(req)
    out, src = arr(r.images[0]), arr(picture)
    assert r.images[0].size == picture.size
    keep = far_from(box_mask, 12)  # beyond the blur's reach
    assert np.array_equal(out[keep], src[keep]), "outside the mask the picture is unchanged"
    inside = np.asarray(box_mask) == 255
    assert np.abs(out[inside] - src[inside]).mean() > 5, "inside the mask it is repainted"
    assert f"Masked content: {fill}" in r.infotexts[0] and "Mask blur: 4" in r.infotexts[0]


def test_inpaint_fill_modes_differ(engine, picture, box_mask) -> None:  # type: ignore[no-untyped-def]
    outs = [
        arr(
            engine.generate(
                GenerationRequest(**BASE, init=InitImage(picture, 0.6), mask=InpaintMask(box_mask, fill=f))
            ).images[0]
        )
        for f in ("original", "fill", "noise")
    ]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])


def test_inpaint_mask_blur_feathers_the_edge(engine, picture, box_mask) -> None:  # type: ignore[no-untyped-def]
    hard = engine.generate(GenerationRequest(**BASE, init=InitImage(picture, 1.0), mask=InpaintMask(box_mask, blur=0)))
    soft = engine.generate(GenerationRequest(**BASE, init=InitImage(picture, 1.0), mask=InpaintMask(box_mask, blur=6)))
    src = arr(picture)
    ring = (np.asarray(box_mask) == 0) & ~far_from(box_mask, 4)
    assert np.array_equal(arr(hard.images[0])[ring], src[ring]), "no blur: a hard edge right at the mask"
    assert not np.array_equal(arr(soft.images[0])[ring], src[ring]), "blur: the edge blends outwards"


def test_inpaint_only_masked_works_at_full_resolution(engine, picture, box_mask) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(
        **BASE,
        width=64,
        height=64,
        init=InitImage(picture, 0.9),
        mask=InpaintMask(box_mask, blur=2, only_masked=True, padding=8),
    )
    r = engine.generate(req)
    assert r.images[0].size == picture.size
    assert "Inpaint area: Only masked" in r.infotexts[0] and "Masked area padding: 8" in r.infotexts[0]
    out, src = arr(r.images[0]), arr(picture)
    keep = far_from(box_mask, 8)
    assert np.array_equal(out[keep], src[keep])
    assert np.abs(out[np.asarray(box_mask) == 255] - src[np.asarray(box_mask) == 255]).mean() > 5


def test_dedicated_inpainting_model(tiny_inpaint: Path, picture, box_mask, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    e = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_inpaint)))
    assert e.model.inpainting and e.model.pipe.unet.config.in_channels == 9
    r = e.generate(GenerationRequest(**BASE, init=InitImage(picture, 1.0), mask=InpaintMask(box_mask)))
    out, src = arr(r.images[0]), arr(picture)
    keep = far_from(box_mask, 12)
    assert np.array_equal(out[keep], src[keep])
    assert np.abs(out[np.asarray(box_mask) == 255] - src[np.asarray(box_mask) == 255]).mean() > 5
    # the same model also does txt2img and img2img (everything masked)
    assert e.generate(GenerationRequest(**BASE, width=64, height=64)).images[0].size == (64, 64)
    assert e.generate(GenerationRequest(**BASE, init=InitImage(picture, 0.5))).images[0].size == picture.size


# -- outpainting ----------------------------------------------------------------------------------
def test_outpaint_extends_and_keeps_the_original(engine, picture) -> None:  # type: ignore[no-untyped-def]
    init, mask = outpaint_inputs(picture, left=40, down=24, overlap=8, blur=4)
    r = engine.generate(GenerationRequest(**BASE, init=init, mask=mask))
    out = arr(r.images[0])
    assert r.images[0].size == (128 + 40, 96 + 24), "the requested size, exactly"
    inner = out[: 96 - 8 - 12, 40 + 8 + 12 :]
    assert np.array_equal(inner, arr(picture)[: 96 - 20, 20:]), "the original, away from the seam band, is intact"
    new = out[:, :30]
    assert np.abs(new - arr(init.image)[:, :30]).mean() > 3, "the new area is painted, not just edge-filled"


def test_outpaint_seam_has_no_hard_edge(engine) -> None:  # type: ignore[no-untyped-def]
    flat = Image.new("RGB", (96, 64), (30, 160, 60))
    init, mask = outpaint_inputs(flat, right=48, overlap=8, blur=8)
    r = engine.generate(GenerationRequest(**BASE, init=init, mask=mask))
    out = arr(r.images[0]).astype(float)
    # The jump between neighbouring columns at the seam is no larger than the typical jump inside the painted area.
    cols = np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))
    assert cols[85:100].max() <= 2.5 * np.median(cols[100:140]) + 1


# -- watermark ------------------------------------------------------------------------------------
def test_watermark_is_embedded_and_recorded(engine) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.watermark import check_watermark

    req = GenerationRequest("a castle", steps=2, seed=3, width=256, height=256)
    marked = engine.generate(req)
    plain = engine.generate(replace(req, watermark=False))
    assert check_watermark(marked.images[0]).found and check_watermark(marked.images[0]).message == "SDV2"
    assert not check_watermark(plain.images[0]).found
    assert "Watermark: SDV2" in marked.infotexts[0] and "Watermark" not in plain.infotexts[0]
    d = np.abs(arr(marked.images[0]) - arr(plain.images[0]))
    assert 0 < d.mean() < 10  # random-weight output is pure noise, the hardest case for the watermark


def test_watermark_is_invisible_on_a_smooth_picture(picture: Image.Image) -> None:
    from lanskap.generation.watermark import apply_watermark, check_watermark

    big = picture.resize((512, 384), Image.Resampling.BICUBIC)
    marked = apply_watermark(big)
    assert marked is not None and check_watermark(marked).found
    mse = ((arr(marked).astype(float) - arr(big)) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 35, "PSNR above 35 dB: not visible"
    assert apply_watermark(picture) is None, "128x96 is below imwatermark's minimum"


def test_small_images_skip_the_watermark_and_say_so(engine) -> None:  # type: ignore[no-untyped-def]
    r = engine.generate(GenerationRequest("a castle", steps=2, seed=3, width=64, height=64))
    assert "Watermark" not in r.infotexts[0]
    assert any("watermark skipped" in n for n in r.notices)


def test_watermark_survives_the_saved_formats(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.output import save_image
    from lanskap.generation.watermark import check_watermark

    r = engine.generate(GenerationRequest("a castle", steps=2, seed=4, width=256, height=256))
    for fmt in ("png", "jpg", "webp"):
        path = save_image(r.images[0], tmp_path, 4, r.infotexts[0], fmt)
        assert check_watermark(Image.open(path)).found, fmt


def test_an_upload_is_turned_upright_by_its_exif_orientation() -> None:
    """Phones save portraits sideways with Orientation=6; lanskap works on the picture as shown."""
    import io

    from PIL import Image

    from lanskap.images import open_image

    im = Image.new("RGB", (40, 20), (200, 0, 0))
    im.paste((0, 0, 200), (0, 0, 10, 20))  # blue on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    buf.seek(0)
    upright = open_image(buf, "upload")
    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 3))  # the left edge is now the top
    assert b > 150 and r < 80, (r, g, b)
    assert upright.getexif().get(0x0112) in (None, 1)
