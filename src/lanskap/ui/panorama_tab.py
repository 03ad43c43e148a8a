"""The Panorama tab (wide and 360° canvases) and the region editor (prompts by region).

Both only build request fields (a ``Panorama``, a region ``Layout``) and draw what they will do;
the Generate page submits them through the Service like any other request.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image, ImageDraw

from lanskap.generation.panorama import MAX_PANORAMA_SIDE, PRESETS, Panorama
from lanskap.generation.regions import DEFAULT_BASE, Layout, Region

PANORAMA_TAB = "Panorama"
PANO_DEFAULTS: dict[str, Any] = {
    "g_pano_preset": "3:1",
    "g_pano_window": 0,
    "g_pano_stride": 0,
    "g_pano_batch": 4,
    "g_pano_wrap": False,
}
REGION_DEFAULTS: dict[str, Any] = {"g_regions_on": False, "g_region_base": DEFAULT_BASE}
#: Two regions to start from: the left and right halves.
STARTER = [
    {"left": 0.0, "top": 0.0, "right": 0.5, "bottom": 1.0, "prompt": "", "negative": "", "weight": 1.0},
    {"left": 0.5, "top": 0.0, "right": 1.0, "bottom": 1.0, "prompt": "", "negative": "", "weight": 1.0},
]
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def panorama_size(height: int) -> tuple[int, int]:
    """The canvas the preset makes at ``height`` (the form's height)."""
    ratio = PRESETS.get(st.session_state.get("g_pano_preset") or "3:1", 3.0)
    return min(MAX_PANORAMA_SIDE, round(ratio * height / 8) * 8), height


def panorama_tab() -> dict[str, Any]:
    """The tab's inputs; returns the request fields it adds (size, panorama, tiling)."""
    for key, value in PANO_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    keep = {"persist_state": "session"}
    st.caption("A wide canvas denoised in overlapping windows at the model's own size, fused every step: "
               "one horizon, no repeated subjects. Height is the form's Height.")  # fmt: skip
    c = st.columns([3, 2], vertical_alignment="bottom")
    c[0].segmented_control("Shape", list(PRESETS), key="g_pano_preset", **keep)
    c[1].toggle("Wrap around", key="g_pano_wrap", help="The right edge runs into the left (a looping backdrop).",
                **keep)  # fmt: skip
    with st.expander("Windows"):
        c = st.columns(3)
        c[0].number_input("Window px", 0, 2048, step=8, key="g_pano_window", help="0: the model's size.", **keep)
        c[1].number_input("Stride px", 0, 2048, step=8, key="g_pano_stride", help="0: half the window.", **keep)
        c[2].number_input("Windows at once", 1, 64, key="g_pano_batch", help="Memory, not the picture.", **keep)
    s = st.session_state
    width, height = panorama_size(int(s["g_height"]))
    sky = s["g_pano_preset"] == "360°"
    pano = Panorama(int(s["g_pano_window"]), int(s["g_pano_stride"]), int(s["g_pano_batch"]), sky)
    st.caption(f"Makes {width}×{height}" + (" · a 360° sky: wraps round, calm poles" if sky else ""))
    tiling = "x" if s["g_pano_wrap"] and not sky else ""
    return {"panorama": pano, "width": width, "height": height, "tiling": tiling}


def prefill_composition(params: dict[str, Any]) -> None:
    """A recorded panorama and region layout back into the form ("use these settings")."""
    s = st.session_state
    pano = params.get("panorama") or None
    if pano:
        w, h = int(params.get("width") or 0), int(params.get("height") or 1)
        nearest = min((k for k in PRESETS if k != "360°"), key=lambda k: abs(PRESETS[k] - w / h))
        s.update(g_pano_preset="360°" if pano.get("equirectangular") else nearest,
                 g_pano_window=int(pano.get("window", 0)), g_pano_stride=int(pano.get("stride", 0)),
                 g_pano_batch=int(pano.get("batch", 4)), g_pano_wrap="x" in (params.get("tiling") or ""))  # fmt: skip
        s["g_tab"] = PANORAMA_TAB
    regions = params.get("regions") or None
    s["g_regions_on"] = bool(regions)
    if regions:
        rows, painted = [], []
        for r in regions:
            if r.get("mask"):
                from lanskap.generation.regions import from_list

                painted.append({"prompt": r.get("prompt", ""), "mask": from_list([r]).regions[0].mask})
                continue
            left, top, right, bottom = (float(v) for v in r.get("box", (0, 0, 1, 1)))
            rows.append({"left": left, "top": top, "right": right, "bottom": bottom, "prompt": r.get("prompt", ""),
                         "negative": r.get("negative_prompt", ""), "weight": float(r.get("weight", 1.0))})  # fmt: skip
        _set_rows(rows)
        s["g_regions_painted"] = painted
        s["g_region_base"] = float(params.get("region_base", DEFAULT_BASE))


def _set_rows(rows: list[dict[str, Any]]) -> None:
    """New rows for the editor; its key changes so it starts from them, not from its old edits."""
    st.session_state["g_regions_rows"] = rows
    st.session_state["g_regions_gen"] = st.session_state.get("g_regions_gen", 0) + 1


def region_editor(width: int, height: int) -> None:
    """Regional prompts: a table of rectangles (fractions of the canvas), drawn over the canvas."""
    for key, value in REGION_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    keep = {"persist_state": "session"}
    if not st.toggle("Regional prompts", key="g_regions_on", help="Each region gets its own prompt.", **keep):
        return
    import pandas as pd

    rows = st.session_state.setdefault("g_regions_rows", STARTER)
    number = {"min_value": 0.0, "max_value": 1.0, "step": 0.05, "format": "%.2f"}
    edited = st.data_editor(
        pd.DataFrame(rows, columns=list(STARTER[0])),
        key=f"g_regions_ed{st.session_state.get('g_regions_gen', 0)}",
        num_rows="dynamic",
        width="stretch",
        column_config={
            **{k: st.column_config.NumberColumn(k.title(), **number) for k in ("left", "top", "right", "bottom")},
            "prompt": st.column_config.TextColumn("Prompt", width="large"),
            "negative": st.column_config.TextColumn("Negative"),
            "weight": st.column_config.NumberColumn("Weight", min_value=0.05, max_value=10.0, step=0.1),
        },
    )
    st.session_state["g_regions_value"] = edited.to_dict("records")
    st.slider("Base prompt's share inside regions", 0.0, 1.0, step=0.05, key="g_region_base",
              help="How much the main prompt still shapes a region (A1111's Regional Prompter: base ratio).",
              **keep)  # fmt: skip
    _painted_regions(width, height)
    st.image(layout_picture(_rows_now(), width, height, _painted()),
             caption=f"The regions on the {width}×{height} canvas")  # fmt: skip


def _painted() -> list[dict[str, Any]]:
    return st.session_state.setdefault("g_regions_painted", [])


def _painted_regions(width: int, height: int) -> None:
    """Regions painted with a brush instead of typed as boxes (kept beside the table)."""
    from lanskap.ui.mask_canvas import draw_mask

    painted = _painted()
    for i, r in enumerate(painted):
        c = st.columns([5, 1], vertical_alignment="center")
        c[0].caption(f"Painted {len(_rows_now()) + i + 1}. {r['prompt']}")
        c[1].button(":material/delete:", key=f"g-paint-del-{i}", on_click=painted.pop, args=(i,), help="Remove it.")
    with st.expander("Paint a region"):
        prompt = st.text_input("Its prompt", key="g_paint_prompt")
        background = layout_picture(_rows_now(), width, height, painted).resize((width, height))
        mask = draw_mask(background, key=f"g-paint-canvas-{width}x{height}")
        st.button(":material/add: Add painted region", key="g-paint-add", disabled=mask is None or not prompt.strip(),
                  on_click=_add_painted, args=(prompt.strip(), mask))  # fmt: skip


def _add_painted(prompt: str, mask: Image.Image | None) -> None:
    if mask is not None and prompt:
        _painted().append({"prompt": prompt, "mask": mask})
        st.session_state["g_paint_prompt"] = ""


def _rows_now() -> list[dict[str, Any]]:
    return list(st.session_state.get("g_regions_value") or st.session_state.get("g_regions_rows") or [])


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return default if number != number else number


def regions_request() -> Layout | None:
    """The layout the editor holds (rows without a prompt are left out), or None when it is off."""
    s = st.session_state
    if not s.get("g_regions_on"):
        return None
    regions = []
    for r in _rows_now():
        prompt = str(r.get("prompt") or "").strip()
        if not prompt:
            continue
        box = tuple(_number(r.get(k), d) for k, d in (("left", 0), ("top", 0), ("right", 1), ("bottom", 1)))
        regions.append(Region(prompt, box, str(r.get("negative") or "").strip(), _number(r.get("weight"), 1.0)))  # type: ignore[arg-type]
    regions += [Region(r["prompt"], mask=r["mask"]) for r in _painted()]
    return Layout(tuple(regions), float(s.get("g_region_base", DEFAULT_BASE))) if regions else None


def layout_picture(
    rows: list[dict[str, Any]], width: int, height: int, painted: list[dict[str, Any]] | None = None, side: int = 480
) -> Image.Image:
    """The canvas in the right shape with each region's rectangle (or painted area), number and first words."""
    scale = side / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    im = Image.new("RGB", (w, h), (40, 44, 52))
    draw = ImageDraw.Draw(im, "RGBA")
    for i, r in enumerate(rows):
        colour = COLOURS[i % len(COLOURS)]
        x0, y0 = _number(r.get("left"), 0) * w, _number(r.get("top"), 0) * h
        x1, y1 = _number(r.get("right"), 1) * w, _number(r.get("bottom"), 1) * h
        if x1 <= x0 or y1 <= y0:
            continue
        rgb = tuple(int(colour[j : j + 2], 16) for j in (1, 3, 5))
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=(*rgb, 60), outline=(*rgb, 255), width=2)
        label = f"{i + 1}. {str(r.get('prompt') or '(no prompt)')[:28]}"
        draw.text((x0 + 5, y0 + 4), label, fill="white", stroke_width=2, stroke_fill="black")
    for i, r in enumerate(painted or [], start=len(rows)):
        rgb = tuple(int(COLOURS[i % len(COLOURS)][j : j + 2], 16) for j in (1, 3, 5))
        area = r["mask"].convert("L").resize((w, h))
        im.paste(Image.new("RGB", (w, h), rgb), (0, 0), area.point(lambda v: v * 100 // 255))
        box = area.getbbox()
        if box:
            draw.text((box[0] + 5, box[1] + 4), f"{i + 1}. {r['prompt'][:28]}", fill="white", stroke_width=2,
                      stroke_fill="black")  # fmt: skip
    return im


def panorama_views(path: str, width: int, height: int, infotext: str, key: str) -> None:
    """In the viewer: pan along a wide picture, see it repeated 2×2, and see a 360° sky as a camera would."""
    wide = width >= 2 * height
    sky = "Equirectangular: True" in infotext
    if not (wide or "Tiling:" in infotext):
        return
    views = ["Pan", "Repeat 2×2", *(["Camera views"] if sky else [])] if wide else ["Repeat 2×2"]
    how = st.segmented_control("See it as", views, key=f"{key}-how", default=None)
    if how == "Pan":
        st.html(f'<div style="overflow-x:auto;width:100%"><img src="{_data_url(path, 512)}" '
                f'style="height:min(60vh,{height}px);max-width:none" alt="panorama"></div>')  # fmt: skip
        st.caption("Scroll sideways to pan.")
    elif how == "Repeat 2×2":
        st.image(_tiled(path), caption="Repeated 2×2: a seam would show as a cross", width="stretch")
    elif how == "Camera views":
        st.image(_camera(path), caption="Front, right, back, left, up and down, 90° each", width="stretch")


@st.cache_data(show_spinner=False, max_entries=16)
def _data_url(path: str, max_height: int) -> str:
    import base64
    import io

    with Image.open(path) as im:
        shown = im.convert("RGB")
    if shown.height > max_height:
        shown = shown.resize((round(shown.width * max_height / shown.height), max_height), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    shown.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@st.cache_data(show_spinner=False, max_entries=16)
def _tiled(path: str) -> Image.Image:
    with Image.open(path) as im:
        tile = im.convert("RGB")
    tile.thumbnail((1024, 1024))
    out = Image.new("RGB", (2 * tile.width, 2 * tile.height))
    for x in (0, tile.width):
        for y in (0, tile.height):
            out.paste(tile, (x, y))
    return out


@st.cache_data(show_spinner=False, max_entries=16)
def _camera(path: str) -> Image.Image:
    from lanskap.generation.skyview import preview

    with Image.open(path) as im:
        return preview(im.convert("RGB"), size=256)
