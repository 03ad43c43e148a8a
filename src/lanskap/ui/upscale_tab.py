"""The web app's upscaling: the hires-fix controls of Text to image, the Upscale tab (Extras and SD
upscale), and an upscale job's results as a before/after view.

Every control maps onto the core's own types (``HiresFix``, ``UpscaleRequest``, ``TiledPass``),
and the job goes through ``Service.submit_upscale``, like the API's Extras.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import streamlit as st

from lanskap.generation.params import MAX_HIRES_SCALE, HiresFix
from lanskap.ui.common import download_buttons, finished_header, service, try_action

if TYPE_CHECKING:
    from collections.abc import Callable

    from PIL import Image

    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.upscale_params import UpscaleRequest
    from lanskap.service.queue import Job

UPSCALE_TAB = "Upscale"
SAME = "Use same sampler"  # A1111's label
HIRES_DEFAULTS: dict[str, Any] = {
    "g_hr": False,
    "g_hr_upscaler": "Latent",
    "g_hr_scale": 2.0,
    "g_hr_steps": 0,
    "g_hr_denoise": 0.7,
    "g_hr_resize_x": 0,
    "g_hr_resize_y": 0,
    "g_hr_sampler": SAME,
    "g_hr_prompt": "",
    "g_hr_negative": "",
}


def _names(latent: bool) -> list[str]:
    from lanskap.upscale.upscalers import BUILTIN, LATENT_MODES, installed

    found = try_action(lambda: [u.name for u in installed(service().settings)]) or [u.name for u in BUILTIN]
    return [*LATENT_MODES, *found[1:]] if latent else found


def hires_controls() -> None:
    """A1111's hires fix, under Text to image: off unless ticked."""
    for key, value in HIRES_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    keep = {"persist_state": "session"}
    on = st.toggle("Hires fix", key="g_hr", help="Upscale the first pass, then repaint it larger (img2img).", **keep)
    if not on:
        return
    names = _names(latent=True)
    if st.session_state["g_hr_upscaler"] not in names:
        st.session_state["g_hr_upscaler"] = "Latent"
    c = st.columns([3, 2, 2, 2])
    c[0].selectbox("Upscaler", names, key="g_hr_upscaler", **keep)
    c[1].slider("Upscale by", 1.0, MAX_HIRES_SCALE, step=0.05, key="g_hr_scale", **keep)
    c[2].slider("Hires steps", 0, 150, key="g_hr_steps", help="0: as many as the first pass.", **keep)
    c[3].slider("Denoising strength", 0.0, 1.0, step=0.05, key="g_hr_denoise", **keep)
    with st.expander("More hires options"):
        c = st.columns(3)
        c[0].number_input("Resize width to", 0, 4096, step=8, key="g_hr_resize_x", help="0: by the scale.", **keep)
        c[1].number_input("Resize height to", 0, 4096, step=8, key="g_hr_resize_y", help="0: by the scale.", **keep)
        from lanskap.generation.schedulers import sampler_names

        c[2].selectbox("Hires sampler", [SAME, *sampler_names()], key="g_hr_sampler", **keep)
        st.text_area("Hires prompt", key="g_hr_prompt", height=68, help="Empty: the prompt above.", **keep)
        st.text_area("Hires negative prompt", key="g_hr_negative", height=68, help="Empty: the one above.", **keep)
    w, h = int(st.session_state["g_width"]), int(st.session_state["g_height"])
    _, _, tw, th = _fix().target(w, h)
    st.caption(f"From {w}×{h} to {tw}×{th}.")


def _fix() -> HiresFix:
    s = st.session_state
    sampler = s.get("g_hr_sampler", SAME)
    return HiresFix(
        scale=float(s["g_hr_scale"]),
        upscaler=s["g_hr_upscaler"],
        steps=int(s["g_hr_steps"]),
        denoise=float(s["g_hr_denoise"]),
        resize_x=int(s.get("g_hr_resize_x", 0)),
        resize_y=int(s.get("g_hr_resize_y", 0)),
        sampler="" if sampler == SAME else sampler,
        prompt=s.get("g_hr_prompt", ""),
        negative_prompt=s.get("g_hr_negative", ""),
    )


def hires_request() -> HiresFix | None:
    """The hires fix the form asks for, or None."""
    return _fix() if st.session_state.get("g_hr") else None


def prefill_hires(params: dict[str, Any]) -> None:
    """Put a recorded hires fix back into the form ("use these settings", a reload)."""
    h = params.get("hires") or None
    st.session_state["g_hr"] = h is not None
    if h:
        st.session_state.update(
            g_hr_upscaler=h.get("upscaler", "Latent"),
            g_hr_scale=float(h.get("scale", 2.0)),
            g_hr_steps=int(h.get("steps", 0)),
            g_hr_denoise=float(h.get("denoise", 0.7)),
            g_hr_resize_x=int(h.get("resize_x", 0)),
            g_hr_resize_y=int(h.get("resize_y", 0)),
            g_hr_sampler=h.get("sampler") or SAME,
            g_hr_prompt=h.get("prompt", ""),
            g_hr_negative=h.get("negative_prompt", ""),
        )


def upscale_tab(
    picture: Image.Image | None,
    make_request: Callable[..., GenerationRequest],
    submit: Callable[[Image.Image, UpscaleRequest], None],
) -> Callable[[], None] | None:
    """The Upscale tab's inputs (A1111's Extras, and SD upscale); returns what the action button runs
    (None until there is a picture).

    SD upscale takes the prompt, seed, steps, sampler and LoRA from the form above (``make_request``).
    """
    from lanskap.generation.upscale_params import TiledPass

    request = _extras_inputs()
    sd = st.toggle("SD upscale", key="u-sd", help="Repaint the enlarged picture tile by tile with the prompt above.")
    tiled = None
    if sd:
        c = st.columns(3)
        tile = c[0].number_input("Tile size", 64, 2048, 512, 64, key="u-tile")
        overlap = c[1].number_input("Overlap", 0, 256, 64, 8, key="u-overlap")
        denoise = c[2].slider("Denoising strength", 0.0, 1.0, 0.35, 0.05, key="u-denoise")
        tiled = (int(tile), int(overlap), float(denoise))
    if picture is None:
        return None
    size = try_action(lambda: request.sizes(picture.width, picture.height))
    if size is not None:
        (w, h), crop = size
        w, h = crop or (w, h)
        st.caption(f"From {picture.width}×{picture.height} to {w}×{h}.")

    def run() -> None:
        t = None
        if tiled is not None:
            t = TiledPass(make_request(width=tiled[0], height=tiled[0], num_images=1), tiled[2], tiled[1])
        submit(picture, replace(request, tiled=t))

    return run


def _extras_inputs() -> UpscaleRequest:
    """A1111's Extras: an upscaler, by a factor or to a size (cropped to it), and a second one blended in."""
    from lanskap.generation.upscale_params import UpscaleRequest

    names = _names(latent=False)
    c = st.columns([3, 2])
    upscaler = c[0].selectbox("Upscaler", names, index=1, key="u-upscaler")
    how = c[1].radio("Resize", ["Scale by", "Scale to"], horizontal=True, key="u-how")
    width = height = 0
    crop = True
    scale = 2.0
    if how == "Scale by":
        scale = st.slider("Upscale by", 1.0, 8.0, 2.0, 0.25, key="u-scale")
    else:
        c = st.columns([2, 2, 2], vertical_alignment="bottom")
        width = int(c[0].number_input("Width", 64, 8192, 1920, 8, key="u-w"))
        height = int(c[1].number_input("Height", 64, 8192, 1080, 8, key="u-h"))
        crop = c[2].checkbox("Crop to fit", True, key="u-crop")
    c = st.columns([3, 2])
    second = c[0].selectbox("Upscaler 2", names, index=0, key="u-upscaler2")
    visibility = c[1].slider("Upscaler 2 visibility", 0.0, 1.0, 0.0, 0.05, key="u-vis2")
    return UpscaleRequest(upscaler, scale, width, height, crop, second, visibility)


def upscale_results(job: Job) -> None:
    """A finished upscale: each picture before and after, side by side, the after one clickable."""
    from lanskap.ui.viewer import clickable_image, open_viewer, sharp

    out = job.result
    if not finished_header(out.notices, len(out.paths), "picture"):
        return
    sizes = ", ".join(f"{im.width}×{im.height}" for im in out.images)
    st.success(f"{len(out.paths)} picture(s) upscaled to {sizes} in {out.seconds:.1f}s · saved to the gallery",
               icon=":material/check_circle:")  # fmt: skip
    ids = [e.id for e in out.entries if e is not None]
    for i, (path, entry, src) in enumerate(zip(out.paths, out.entries, out.sources, strict=True)):
        with st.container(key=f"lk-ba-{job.id}-{i}"):
            before, after = st.columns(2)
        before.image(src.image, caption=f"Before · {src.image.width}×{src.image.height}", width="stretch")
        with after:
            caption = f"After · {out.images[i].width}×{out.images[i].height}"
            if entry is None:
                st.image(sharp(path), caption=caption, width="stretch")
                continue
            clickable_image(sharp(path), f"up-{job.id}-{entry.id}", ids, ids.index(entry.id), caption)
            st.button(":material/open_in_full: View", key=f"uview-{job.id}-{entry.id}", on_click=open_viewer,
                      args=(ids, ids.index(entry.id)), width="stretch")  # fmt: skip
            download_buttons(entry, key=f"up-{entry.id}")
