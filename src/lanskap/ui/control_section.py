"""The web app's ControlNet section (a switch, then up to three units) and its Depth tab.

Each unit takes a picture (uploaded, drawn on a canvas as a scribble, or the tab's own picture),
a preprocessor, a model, a weight, the share of the steps it acts on, a control mode and a resize
mode, as the extension's panel does; its preprocessed map is shown before anything is queued.
The units are built here and added to the request by the generate page; everything they do is
the core's (``lanskap.control``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

from lanskap.control.units import CONTROL_MODES, HR_OPTIONS, MAX_UNITS, RESIZE_MODES, ControlUnit
from lanskap.ui.common import service, try_action

AUTO_MODEL = "Automatic (named for the preprocessor)"
SOURCES = ("Upload", "Draw a scribble", "The tab's picture")
UNITS_KEY = "g_control_units"  # the units of this run, for the request
SHOW_KEY = "cn_show"  # the section's switch


def _defaults(i: int) -> dict[str, Any]:
    return {
        f"cn{i}_on": False,
        f"cn{i}_module": "canny",
        f"cn{i}_model": AUTO_MODEL,
        f"cn{i}_weight": 1.0,
        f"cn{i}_range": (0.0, 1.0),
        f"cn{i}_mode": CONTROL_MODES[0],
        f"cn{i}_resize": "Crop and Resize",
        f"cn{i}_res": 512,
        f"cn{i}_a": -1.0,
        f"cn{i}_b": -1.0,
        f"cn{i}_pp": False,
        f"cn{i}_hr": "Both",
    }


def prefill(params: dict[str, Any]) -> None:
    """A gallery image's units into the form ("use these settings"); their pictures are given again."""
    units = params.get("control") or []
    st.session_state[SHOW_KEY] = bool(units)
    for i in range(MAX_UNITS):
        values = _defaults(i)
        if i < len(units):
            u = units[i]
            values.update({
                f"cn{i}_on": True, f"cn{i}_module": u.get("module", "none"),
                f"cn{i}_model": u.get("model") or AUTO_MODEL, f"cn{i}_weight": float(u.get("weight", 1.0)),
                f"cn{i}_range": (float(u.get("guidance_start", 0.0)), float(u.get("guidance_end", 1.0))),
                f"cn{i}_mode": u.get("control_mode", CONTROL_MODES[0]),
                f"cn{i}_resize": u.get("resize_mode", "Crop and Resize"),
                f"cn{i}_res": int(u.get("processor_res", 512)),
                f"cn{i}_a": float(u.get("threshold_a", -1)), f"cn{i}_b": float(u.get("threshold_b", -1)),
                f"cn{i}_pp": bool(u.get("pixel_perfect")), f"cn{i}_hr": u.get("hr_option", "Both"),
            })  # fmt: skip
        for key, value in values.items():
            st.session_state[key] = value


def control_section(picture: Image.Image | None, width: int, height: int) -> tuple[ControlUnit, ...]:
    """The ControlNet switch and, when on, its units; returns the enabled units that have a picture
    (kept for the request). Off, it is one widget: the page reruns as fast as without it."""
    from lanskap.control.models import installed
    from lanskap.control.preprocess import PREPROCESSORS

    st.session_state.setdefault(SHOW_KEY, False)
    if not st.toggle("ControlNet", key=SHOW_KEY, help="Keep a layout: up to three units steer the picture."):
        st.session_state[UNITS_KEY] = ()
        return ()
    for i in range(MAX_UNITS):
        for key, value in _defaults(i).items():
            st.session_state.setdefault(key, value)
    svc = service()
    models = [AUTO_MODEL, *(m.title for m in try_action(lambda: installed(svc.settings)) or [])]
    units: list[ControlUnit] = []
    with st.container(border=True):
        if len(models) == 1:
            st.caption(
                f"No ControlNet models installed: put ControlNet files for SD 2.x in {svc.settings.controlnet_dir}."
            )
        tabs = st.tabs([f"Unit {i}" for i in range(MAX_UNITS)])
        for i, tab in enumerate(tabs):
            with tab:
                unit = _unit(i, picture, width, height, list(PREPROCESSORS), models)
                if unit is not None:
                    units.append(unit)
    st.session_state[UNITS_KEY] = tuple(units)
    return tuple(units)


def _unit(i: int, picture: Image.Image | None, width: int, height: int, modules: list[str],
          models: list[str]) -> ControlUnit | None:  # fmt: skip
    p = f"cn{i}_"
    st.toggle("Enable", key=p + "on")
    if not st.session_state[p + "on"]:
        return None  # a unit's inputs show once it is on: a page of idle widgets reruns slower
    source = st.radio("Control picture", SOURCES if picture is not None else SOURCES[:2], horizontal=True,
                      key=p + "src")  # fmt: skip
    image = _source(p, source, picture, width, height)
    c = st.columns(2)
    c[0].selectbox("Preprocessor", modules, key=p + "module", help="none: the picture is already a control map.")
    if st.session_state[p + "model"] not in models:
        st.session_state[p + "model"] = AUTO_MODEL
    c[1].selectbox("Model", models, key=p + "model")
    c = st.columns(2)
    c[0].slider("Control weight", 0.0, 2.0, step=0.05, key=p + "weight")
    c[1].slider("Starting and ending step", 0.0, 1.0, step=0.01, key=p + "range",
                help="The share of the steps the unit acts on.")  # fmt: skip
    st.radio("Control mode", CONTROL_MODES, horizontal=True, key=p + "mode")
    c = st.columns(4)
    c[0].selectbox("Resize mode", RESIZE_MODES, key=p + "resize")
    c[1].number_input("Preprocessor resolution", 64, 2048, step=64, key=p + "res")
    c[2].number_input("Threshold A", -1.0, 255.0, key=p + "a", help="-1: the preprocessor's default.")
    c[3].number_input("Threshold B", -1.0, 255.0, key=p + "b", help="-1: the preprocessor's default.")
    c = st.columns(2, vertical_alignment="bottom")
    c[0].checkbox("Pixel perfect", key=p + "pp", help="The preprocessor resolution that fits the output size.")
    c[1].selectbox("Hires fix passes", HR_OPTIONS, key=p + "hr", help="Which passes of a hires fix the unit steers.")
    if image is None:
        return None
    s = st.session_state
    start, end = s[p + "range"]
    unit = ControlUnit(image, module=s[p + "module"], model="" if s[p + "model"] == AUTO_MODEL else s[p + "model"],
                       weight=float(s[p + "weight"]), guidance_start=float(start), guidance_end=float(end),
                       control_mode=s[p + "mode"], resize_mode=s[p + "resize"], processor_res=int(s[p + "res"]),
                       threshold_a=float(s[p + "a"]), threshold_b=float(s[p + "b"]),
                       pixel_perfect=bool(s[p + "pp"]), hr_option=s[p + "hr"])  # fmt: skip
    if st.button(":material/visibility: Show the preprocessed map", key=p + "preview"):
        shown = try_action(lambda: service().engine.controls.detect(unit.validate(index=i), width, height))
        if shown is not None:
            s[p + "map"] = shown
    if s.get(p + "map") is not None:
        st.image(s[p + "map"], caption=f"Unit {i}: {unit.module} map", width=320)
        st.download_button(":material/download: Save the map", _png(s[p + "map"]), f"controlnet{i}-{unit.module}.png",
                           "image/png", key=p + "save")  # fmt: skip
    return unit


def _png(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _source(p: str, source: str, picture: Image.Image | None, width: int, height: int) -> Image.Image | None:
    from lanskap.images import load_rgb

    if source == SOURCES[2]:
        return picture
    if source == SOURCES[1]:
        from lanskap.ui.mask_canvas import draw_mask

        drawn = draw_mask(Image.new("RGB", (width, height), "black"), key=p + "canvas",
                          hint="Draw the lines to keep: white on black (preprocessor none, a scribble model).",
                          clear="Clear")  # fmt: skip
        return drawn.convert("RGB") if drawn is not None else None
    f = st.file_uploader("Control picture", type=["png", "jpg", "jpeg", "webp", "bmp"], key=p + "file")
    return try_action(lambda: load_rgb(f, "control picture")) if f is not None else None


def depth_tab(picture: Image.Image | None) -> tuple[dict[str, Any] | None, str]:
    """The Depth tab's inputs: the request fields of a depth2img job, or None and why not."""
    from lanskap.generation.params import DepthInput, InitImage
    from lanskap.images import load_rgb

    svc = service()
    info = svc.engine.info()
    st.caption("SD 2's depth model repaints a picture while keeping its depth, so the layout stays.")
    if info.loaded and not info.depth:
        st.info(f"{info.model} is not a depth model. Load one (such as {svc.settings.depth_model}) below, "
                "or start the app with `--model` naming it.")  # fmt: skip
        c = st.columns([3, 1], vertical_alignment="bottom")
        name = c[0].selectbox("Model to load", list(svc.models()), key="d-model")
        if c[1].button("Load", key="d-load", width="stretch"):
            try_action(lambda: svc.submit_load(name))
    c = st.columns(2)
    strength = c[0].slider("Denoising strength", 0.0, 1.0, 0.8, 0.05, key="d-strength")
    f = c[1].file_uploader("Depth map (optional; white = near)", type=["png", "jpg", "jpeg", "webp"], key="d-map")
    given = try_action(lambda: load_rgb(f, "depth map")) if f is not None else None
    if picture is None:
        return None, "Add a picture first."
    if info.loaded and not info.depth:
        return None, "Load a depth model first."
    size = {"width": picture.width // 8 * 8, "height": picture.height // 8 * 8}
    return {"init": InitImage(picture, strength), "depth": DepthInput(given), **size}, ""
