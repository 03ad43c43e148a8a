"""Generate page: the thesis's input form (figure 4.8) plus LoRA, sampler, seed tools and picture-based modes.

Every button builds a GenerationRequest and hands it to the shared Service, so
the checks, the queue, the gallery rows and the files are the CLI's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import streamlit as st

from lanskap.config import THESIS_NEGATIVE_PROMPT
from lanskap.errors import LanskapError
from lanskap.generation import levers
from lanskap.generation.panorama import Panorama
from lanskap.generation.params import (
    MAX_CLIP_SKIP,
    MAX_SEED,
    MAX_SIDE,
    MIN_SIDE,
    GenerationRequest,
    InitImage,
    InpaintMask,
    LoraSpec,
)
from lanskap.generation.schedulers import DEFAULT_SAMPLER, sampler_names
from lanskap.prompts.styles import apply_styles, load_styles
from lanskap.ui.common import download_buttons, finished_header, service, try_action, user_message
from lanskap.ui.control_section import UNITS_KEY, control_section, depth_tab
from lanskap.ui.control_section import prefill as prefill_control
from lanskap.ui.jobs_panel import cancel_all, forget_finished, jobs_panel, remember, session_jobs
from lanskap.ui.panorama_tab import PANORAMA_TAB, panorama_tab, prefill_composition, region_editor, regions_request
from lanskap.ui.sdxl_section import fit_sdxl_size, prefill_sdxl, sdxl_fields, sdxl_inputs
from lanskap.ui.upscale_tab import UPSCALE_TAB, hires_controls, hires_request, prefill_hires, upscale_results
from lanskap.ui.viewer import clickable_image, open_viewer, sharp, show_viewer

if TYPE_CHECKING:
    from PIL import Image

    from lanskap.generation.engine import EngineInfo
    from lanskap.generation.upscale_params import UpscaleRequest
    from lanskap.service.queue import Job
    from lanskap.service.service import GenerationOutput, Service


NO_LORA = "(none)"
SERVER_SPEED = "server's"  # the speed level the app was started with
DEPTH_TAB = "Depth"
TABS = ["Text to image", "Image to image", "Inpaint", "Outpaint", PANORAMA_TAB, UPSCALE_TAB, DEPTH_TAB]
HISTORY = 100
#: The thesis's web-app defaults (tables 4.5-4.7): seed 777, guidance 7.5, 768x512, its negative prompt.
DEFAULTS: dict[str, Any] = {
    "g_prompt": "",
    "g_negative": THESIS_NEGATIVE_PROMPT,
    "g_lora": NO_LORA,
    "g_lora_scale": 1.0,
    "g_num": 1,
    "g_seed": 777,
    "g_steps": 25,
    "g_guidance": 7.5,
    "g_width": 768,
    "g_height": 512,
    "g_sampler": DEFAULT_SAMPLER,
    "g_clip_skip": 1,
    "g_ensd": 0,
    "g_styles": [],
    "g_tiling": "off",
    "g_speed": SERVER_SPEED,
    "g_cache": None,  # None: the speed level's choice
    "g_cache_start": None,
    "g_tome": None,
}
FORM_KEYS = tuple(DEFAULTS)


def prefill(params: dict[str, Any]) -> None:
    """Put a gallery image's settings into the form ("use these settings")."""
    lora = (params.get("loras") or [None])[0]
    spec = LoraSpec.parse(lora) if lora else None
    values = {
        "g_prompt": params.get("prompt", ""),
        "g_negative": params.get("negative_prompt", ""),
        "g_lora": spec.name if spec else NO_LORA,
        "g_lora_scale": float(spec.scale) if spec else 1.0,
        "g_num": 1,
        "g_seed": int(params.get("seed", -1)),
        "g_steps": int(params.get("steps", 25)),
        "g_guidance": float(params.get("guidance", 7.5)),
        "g_width": int(params.get("width") or 768),
        "g_height": int(params.get("height") or 512),
        "g_sampler": _sampler_label(params.get("scheduler")),
        "g_clip_skip": int(params.get("clip_skip") or 1),
        "g_ensd": int(params.get("ensd") or 0),
        "g_styles": [],  # the recorded prompt already holds the styles' text
        "g_tiling": params.get("tiling") or "off",
        "g_speed": SERVER_SPEED,  # the recorded levers are explicit, so no level is needed to remake it
        "g_cache": params.get("cache_interval"),
        "g_cache_start": params.get("cache_start"),
        "g_tome": params.get("token_merging"),
    }
    for key, value in values.items():
        st.session_state[key] = value
    prefill_hires(params)
    prefill_composition(params)
    prefill_control(params)
    prefill_sdxl(service(), params)


def _sampler_label(name: str | None) -> str:
    """A recorded sampler as one of the dropdown's labels (older records may name it differently)."""
    from lanskap.errors import LanskapError
    from lanskap.generation.schedulers import get_sampler

    try:
        return get_sampler(name).label if name else DEFAULT_SAMPLER
    except LanskapError:
        return DEFAULT_SAMPLER


def _set_seed(value: int) -> None:
    st.session_state["g_seed"] = value


def _request(**extra: Any) -> GenerationRequest:
    """The form as a request; ``extra`` adds or replaces fields (a picture, a mask, a size, a hires fix)."""
    s = st.session_state
    loras = (LoraSpec(s["g_lora"], float(s["g_lora_scale"])),) if s["g_lora"] != NO_LORA else ()
    fields: dict[str, Any] = {
        "prompt": s["g_prompt"],
        "negative_prompt": s["g_negative"],
        "seed": int(s["g_seed"]),
        "steps": int(s["g_steps"]),
        "guidance": float(s["g_guidance"]),
        "width": int(s["g_width"]),
        "height": int(s["g_height"]),
        "num_images": int(s["g_num"]),
        "scheduler": s["g_sampler"],
        "clip_skip": int(s["g_clip_skip"]),
        "ensd": int(s["g_ensd"]),
        "loras": loras,
        "tiling": "" if s.get("g_tiling") in (None, "off") else s["g_tiling"],
        "cache_interval": None if s.get("g_cache") is None else int(s["g_cache"]),
        "cache_start": None if s.get("g_cache_start") is None else float(s["g_cache_start"]),
        "token_merging": None if s.get("g_tome") is None else float(s["g_tome"]),
        "control": s.get(UNITS_KEY, ()),  # the open tab's ControlNet units (ui/control_section.py)
        **sdxl_fields(service()),  # the second prompt and the refiner (ui/sdxl_section.py)
    }
    request = GenerationRequest(**{**fields, **extra})
    if s.get("g_speed", SERVER_SPEED) != SERVER_SPEED:
        request = levers.resolve(request, s["g_speed"])
    return request


def _submit(folder: str | None = None, **extra: Any) -> None:
    if not st.session_state["g_prompt"].strip():
        st.session_state["g_notice"] = ("warning", "Write a prompt first: what should the landscape show?")
        return

    def submit() -> Job:
        return service().submit_generation(_styled_request(**extra), source="ui", folder=folder)

    remember(submit().id)


def _snap8(key: str) -> None:
    """Sizes are multiples of 8 (the latent grid): a typed 130 becomes 128, not an error."""
    st.session_state[key] = max(MIN_SIDE, min(MAX_SIDE, round(st.session_state[key] / 8) * 8))


def _history(svc: Service) -> None:
    """The prompt history: the gallery's latest prompts, searchable by typing; picking one fills both prompts."""
    past = try_action(lambda: svc.gallery.prompts(HISTORY))
    st.selectbox(
        "Prompt history",
        past or [],
        index=None,
        key="g_history",
        format_func=lambda pair: pair[0] if len(pair[0]) <= 110 else pair[0][:109] + "…",
        placeholder=f"Prompt history: type to search your last {HISTORY} prompts…",
        label_visibility="collapsed",
        on_change=_use_history,
        disabled=not past,
    )


def _use_history() -> None:
    picked = st.session_state.get("g_history")
    if picked:
        st.session_state["g_prompt"], st.session_state["g_negative"] = picked
    st.session_state["g_history"] = None


def _fit_size(native: int | None) -> None:
    """On a small model (lanskap-mini: 128 px) the thesis's 768x512 would tile; use its own size.

    Done once per session, when the model is known, and only if the size is still the default.
    """
    s = st.session_state
    if not native or native >= 512 or s.get("g_size_fitted"):
        return
    if (s["g_width"], s["g_height"]) == (DEFAULTS["g_width"], DEFAULTS["g_height"]):
        s["g_width"] = s["g_height"] = native
    s["g_size_fitted"] = True


def _fit_distilled(recommended: dict[str, Any] | None) -> None:
    """A distilled model (SD-Turbo, LCM) burns at 25 steps and CFG 7.5: the form takes its own values,
    once per session and only while the form still holds the defaults."""
    s = st.session_state
    if not recommended or s.get("g_distilled_fitted"):
        return
    defaults = ("g_steps", "g_guidance", "g_sampler")
    if all(s.get(k, DEFAULTS[k]) == DEFAULTS[k] for k in defaults):
        s["g_steps"], s["g_guidance"] = recommended["steps"], recommended["guidance"]
        s["g_sampler"] = recommended["scheduler"]
        s["g_notice"] = ("info", f"{recommended['kind']}: steps, guidance and sampler set to the model's own.")
    s["g_distilled_fitted"] = True


def _inputs(svc: Service, info: EngineInfo) -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    _fit_size(info.native_size)
    fit_sdxl_size(info, (DEFAULTS["g_width"], DEFAULTS["g_height"]))
    loras = [NO_LORA, *svc.lora_names()]
    if st.session_state["g_lora"] not in loras:
        st.session_state["g_lora"] = NO_LORA
    keep = {"persist_state": "session"}
    _history(svc)
    st.text_area(
        "Prompt",
        key="g_prompt",
        height=110,
        placeholder="a majestic castle on a misty mountain at sunset, fantasy landscape, concept art",
        help="Any length; A1111 syntax: (word:1.3), [word], BREAK, <lora:NAME:0.8>, <hypernet:NAME:1>, "
        "embedding names.",
        **keep,
    )
    st.text_area("Negative prompt", key="g_negative", height=80, help="What to avoid.", **keep)
    sdxl_inputs(svc, info, keep)
    styles = try_action(lambda: list(load_styles(svc.settings.home)))
    if styles:
        st.session_state["g_styles"] = [n for n in st.session_state["g_styles"] if n in styles]
        st.multiselect(
            "Styles",
            styles,
            key="g_styles",
            help="From styles.csv in the data folder (A1111's format); added to the prompts when you generate.",
            **keep,
        )
    c = st.columns([3, 2])
    c[0].selectbox("LoRA", loras, key="g_lora", help="LoRA files in the LoRA folder.", **keep)
    c[1].slider("LoRA scale", 0.0, 2.0, step=0.05, key="g_lora_scale", **keep)
    _network_pickers(svc)
    c = st.columns(3)
    c[0].number_input("Number of images", 1, 16, key="g_num", **keep)
    c[1].slider("Steps", 1, 150, key="g_steps", **keep)
    c[2].slider("Guidance scale", 0.0, 20.0, step=0.5, key="g_guidance", **keep)
    c = st.columns([2, 2, 3, 2])
    for col, label, key in ((c[0], "Width", "g_width"), (c[1], "Height", "g_height")):
        col.number_input(label, MIN_SIDE, MAX_SIDE, step=8, key=key, on_change=_snap8, args=(key,), **keep)
    c[2].selectbox("Scheduler", sampler_names(), key="g_sampler", **keep)
    c[3].number_input(
        "Clip skip", 1, MAX_CLIP_SKIP, key="g_clip_skip", help="1 uses the text encoder's last layer.", **keep
    )
    c = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    c[0].number_input("Seed", -1, MAX_SEED, key="g_seed", help="-1 picks a random seed (it is recorded).", **keep)
    c[3].number_input(
        "ENSD", 0, MAX_SEED, key="g_ensd", help="Eta noise seed delta (A1111's): text-to-image sampler noise.", **keep
    )
    c[1].button(":material/casino: Random", on_click=_set_seed, args=(-1,), width="stretch", help="New seed each time.")
    last = st.session_state.get("g_last_seed")
    c[2].button(
        ":material/replay: Reuse",
        on_click=_set_seed,
        args=(last if last is not None else -1,),
        disabled=last is None,
        width="stretch",
        help=f"The last image's seed ({last})." if last is not None else "Generate once first.",
    )
    _speed_inputs(keep)


def _insert(text: str) -> None:
    """Append an embedding's name or a hypernetwork's tag to the prompt, as A1111's extra-networks cards do."""
    prompt = st.session_state.get("g_prompt", "").rstrip()
    joined = f"{prompt}, {text}" if prompt and not prompt.endswith(",") else f"{prompt} {text}"
    st.session_state["g_prompt"] = joined.strip()


def _network_pickers(svc: Service) -> None:
    """Embeddings (by name) and hypernetworks (by tag), inserted into the prompt where they act."""
    embeddings = try_action(svc.embedding_names) or []
    hypernets = try_action(svc.hypernetwork_names) or []
    if not embeddings and not hypernets:
        return
    c = st.columns([3, 1, 3, 1], vertical_alignment="bottom")
    if embeddings:
        c[0].selectbox("Embedding", embeddings, key="g_embedding", help="Textual-inversion embeddings: used by name.")
        c[1].button("Insert", key="g_embedding_add", on_click=lambda: _insert(st.session_state["g_embedding"]),
                    width="stretch", help="Add the embedding's name to the prompt.")  # fmt: skip
    if hypernets:
        c[2].selectbox("Hypernetwork", hypernets, key="g_hypernet", help="A1111 hypernetworks: used by tag.")
        tag = "<hypernet:{}:1>"
        c[3].button("Insert", key="g_hypernet_add", on_click=lambda: _insert(tag.format(st.session_state.g_hypernet)),
                    width="stretch", help="Add <hypernet:NAME:1> to the prompt; edit the strength there.")  # fmt: skip


def _speed_inputs(keep: dict[str, Any]) -> None:
    """The speed level and its levers; an empty lever box takes the level's choice."""
    c = st.columns([2, 2, 2, 2])
    c[0].selectbox(
        "Speed",
        [SERVER_SPEED, *levers.SPEED_LEVELS],
        key="g_speed",
        help="quality: full compute. balanced and fast reuse deep UNet features across steps "
        "(docs/performance.md has what each costs in quality).",
        **keep,
    )
    c[1].number_input(
        "Cache interval", 0, levers.MAX_CACHE_INTERVAL, key="g_cache", placeholder="from the speed",
        help="Deep UNet blocks run every N steps (DeepCache); 0 = every step.", **keep,
    )  # fmt: skip
    c[2].number_input(
        "Cache start", 0.0, 0.95, step=0.05, key="g_cache_start", placeholder="from the speed",
        help="Share of the steps run in full before caching starts (where layout and colours settle).", **keep,
    )  # fmt: skip
    c[3].number_input(
        "Token merging", 0.0, levers.MAX_TOKEN_MERGING, step=0.05, key="g_tome", placeholder="from the speed",
        help="Share of self-attention tokens merged (ToMe, A1111's token merging ratio); 0 = none.", **keep,
    )  # fmt: skip


@dataclass
class Action:
    """What the Generate button does on the open tab; ``submit`` is None until its inputs are there."""

    label: str
    key: str
    submit: Callable[[], None] | None
    why: str = ""


def _modes() -> Action:
    """The open tab's inputs (only the open one runs), and the action the Generate button takes."""
    tabs = st.tabs(TABS, key="g_tab", on_change="rerun")
    st.session_state[UNITS_KEY] = ()  # only the text, image, inpaint and outpaint tabs have units
    action = Action("Generate", "go-txt2img",
                    lambda: _submit("txt2img", hires=hires_request(), regions=regions_request()))  # fmt: skip
    with tabs[1]:
        if tabs[1].open:
            action = _img2img_tab()
    with tabs[2]:
        if tabs[2].open:
            action = _inpaint_tab()
    with tabs[3]:
        if tabs[3].open:
            action = _outpaint_tab()
    with tabs[4]:
        if tabs[4].open:
            action = _panorama_tab()
    with tabs[5]:
        if tabs[5].open:
            action = _upscale_tab()
    with tabs[6]:
        if tabs[6].open:
            action = _depth_tab()
    with tabs[0]:
        if tabs[0].open:
            st.caption("A picture from the prompt alone. Ctrl+Enter generates from anywhere on the page.")
            st.segmented_control(
                "Seamless tiling",
                ["off", "x", "y", "xy"],
                key="g_tiling",
                persist_state="session",
                help="The picture repeats without a seam along these axes (textures, backdrops).",
            )
            hires_controls()
            width, height = int(st.session_state["g_width"]), int(st.session_state["g_height"])
            region_editor(width, height)
            control_section(None, width, height)
    return action


def _depth_tab() -> Action:
    image = _picture("Picture whose depth to keep", "d-image", DEPTH_TAB)
    fields, why = depth_tab(image)
    if fields is None:
        return Action("Repaint keeping depth", "go-depth", None, why)
    return Action("Repaint keeping depth", "go-depth", lambda: _submit("depth2img", **fields))


def _panorama_tab() -> Action:
    fields = panorama_tab()
    region_editor(fields["width"], fields["height"])
    return Action("Generate panorama", "go-panorama", lambda: _submit("txt2img", regions=regions_request(), **fields))


def _upscale_tab() -> Action:
    from lanskap.ui.upscale_tab import upscale_tab

    image = _picture("Picture to upscale", "up-image", UPSCALE_TAB)
    run = upscale_tab(image, _styled_request, _submit_upscale)
    return Action("Upscale", "go-upscale", run, "" if run else "Add a picture first.")


def _styled_request(**extra: Any) -> GenerationRequest:
    svc = service()
    return apply_styles(_request(**extra), st.session_state.get("g_styles") or [], svc.settings.home)[0]


def _submit_upscale(picture: Image.Image, request: UpscaleRequest) -> None:
    """Queue an upscale of ``picture``; one sent from the gallery carries its id and infotext along."""
    from lanskap.jobs.upscale import UpscaleSource

    svc = service()
    sent = st.session_state.get("g_sent") or {}
    entry = try_action(lambda: svc.gallery.get(int(sent["id"]))) if sent.get("tab") == UPSCALE_TAB else None
    source = UpscaleSource(picture, f"#{entry.id}" if entry else "upload", entry.infotext if entry else None,
                           entry.id if entry else None, entry.path if entry else None)  # fmt: skip
    remember(svc.submit_upscale(request, [source], source="ui").id)


def _img2img_tab() -> Action:
    image = _picture("Start from this picture", "i2i-image", TABS[1])
    c = st.columns(3, vertical_alignment="bottom")
    strength = c[0].slider("Denoising strength", 0.0, 1.0, 0.6, 0.05, key="i2i-strength")
    resize = c[1].selectbox("Resize mode", ["just-resize", "crop-and-resize", "resize-and-fill"], key="i2i-rm")
    windows = c[2].toggle("Panorama windows", key="i2i-pano", help="At a wide Width × Height: repaint in windows "
                          "of the model's size, fused every step.")  # fmt: skip
    if not windows:
        control_section(image, int(st.session_state["g_width"]), int(st.session_state["g_height"]))
    if image is None:
        return Action("Generate from picture", "go-img2img", None, "Add a picture first.")
    pano = {"panorama": Panorama()} if windows else {}
    return Action("Generate from picture", "go-img2img",
                  lambda: _submit("img2img", init=InitImage(image, strength, resize), **pano))  # fmt: skip


def _inpaint_tab() -> Action:
    from lanskap.images import load_mask

    image = _picture("Picture to repaint", "inp-image", TABS[2])
    st.caption("Works at the picture's own size (rounded down to a multiple of 8); Width and Height don't apply.")
    how = st.radio("Mask", ["Draw", "Upload"], horizontal=True, key="inp-how")
    mask = None
    if image is not None and how == "Draw":
        from lanskap.ui.mask_canvas import draw_mask

        mask = draw_mask(image, key="inp-canvas")
    elif how == "Upload":
        f = st.file_uploader("Mask (white = repaint)", type=["png", "jpg", "jpeg", "webp", "bmp"], key="inp-mask")
        mask = try_action(lambda: load_mask(f)) if f is not None else None
    c = st.columns(4)
    strength = c[0].slider("Denoising strength", 0.0, 1.0, 0.75, 0.05, key="inp-strength")
    blur = c[1].slider("Mask blur", 0, 64, 4, key="inp-blur")
    fill = c[2].selectbox("Masked content", ["original", "fill", "noise"], key="inp-fill")
    only = c[3].checkbox("Only masked", key="inp-only", help="Work on the masked area at full resolution.")
    if image is not None:
        control_section(image, image.width // 8 * 8, image.height // 8 * 8)
    if image is None or mask is None:
        return Action("Inpaint", "go-inpaint", None, "Add a picture and paint (or upload) a mask first.")
    size = {"width": image.width // 8 * 8, "height": image.height // 8 * 8}
    return Action("Inpaint", "go-inpaint", lambda: _submit(
        "inpaint", init=InitImage(image, strength), mask=InpaintMask(mask, blur, fill, only), **size
    ))  # fmt: skip


def _outpaint_tab() -> Action:
    from lanskap.generation.prepare import outpaint_inputs

    image = _picture("Picture to extend", "out-image", TABS[3])
    c = st.columns(5)
    margins = {
        side: c[i].number_input(f"{side.title()} px", 0, 1024, 128 if i < 2 else 0, 8, key=f"o-{side}")
        for i, side in enumerate(("left", "right", "up", "down"))
    }
    overlap = c[4].number_input("Overlap px", 0, 64, 8, key="o-overlap")
    windows = st.toggle("Panorama windows", key="o-pano", help="Denoise the wider canvas in windows of the model's "
                        "size, fused every step: extends a picture sideways into a panorama.")  # fmt: skip
    if image is None:
        return Action("Outpaint", "go-outpaint", None, "Add a picture first.")

    def submit() -> None:
        init, mask = outpaint_inputs(image, **margins, overlap=overlap)
        w, h = init.image.size
        pano = {"panorama": Panorama()} if windows else {}
        _submit("outpaint", init=init, mask=mask, width=w // 8 * 8, height=h // 8 * 8, **pano)

    return Action("Outpaint", "go-outpaint", submit)


def _picture(label: str, key: str, tab: str) -> Image.Image | None:
    """The tab's picture: one sent from the viewer ("send to"), else an upload."""
    from lanskap.images import load_rgb

    sent = st.session_state.get("g_sent")
    if sent and sent.get("tab") == tab:
        entry = try_action(lambda: service().gallery.get(int(sent["id"])))
        if entry is not None:
            c = st.columns([3, 2], vertical_alignment="center")
            c[0].image(sharp(entry.path, 256), caption=f"#{entry.id} from the gallery · {entry.width}×{entry.height}")
            c[1].button(":material/close: Use another picture", key=f"{key}-unsend", on_click=st.session_state.pop,
                        args=("g_sent", None))  # fmt: skip
            return try_action(lambda: load_rgb(entry.path, "picture"))
    f = st.file_uploader(label, type=["png", "jpg", "jpeg", "webp", "bmp"], key=key)
    image = try_action(lambda: load_rgb(f, "picture")) if f is not None else None
    if image is not None:
        st.image(image, caption=f"{image.width}×{image.height}", width=320)
    return image


def _action_bar(action: Action, jobs: list[Job]) -> None:
    """Generate and Cancel, pinned to the bottom of the window so they never scroll away."""
    svc = service()
    with st.bottom, st.container(key="lk-actions"):
        kind, text = st.session_state.pop("g_notice", (None, ""))
        if kind == "warning":
            st.warning(text, icon=":material/edit:")
        elif kind == "error":
            st.error(text, icon=":material/warning:")
        elif kind == "info":
            st.info(text, icon=":material/bolt:")
        c = st.columns([4, 2], vertical_alignment="center")
        clicked = c[0].button(action.label, type="primary", key=action.key,
                              disabled=action.submit is None, help=action.why or None, shortcut="Ctrl+Enter",
                              width="stretch")  # fmt: skip
        running = [j for j in jobs if j.active]
        c[1].button(":material/stop_circle: Cancel", key="g-cancel", on_click=cancel_all, args=(svc, running),
                    disabled=not running, width="stretch",
                    help="Stop this page's jobs at the next step; finished images are kept.")  # fmt: skip
    if clicked and action.submit is not None:
        try:
            action.submit()
        except LanskapError as exc:  # shown above the button after the rerun
            st.session_state["g_notice"] = ("error", user_message(exc))
        st.rerun()  # so the new job shows in the list at once


def _results(job: Job) -> None:
    if job.kind == "upscale":
        upscale_results(job)
        return
    out: GenerationOutput = job.result
    result = out.result
    if not finished_header(result.notices, len(out.paths), "image"):
        return
    seeds = result.complete().seeds  # the saved images: those that ran every step
    st.success(
        f"{len(out.paths)} image(s) in {result.seconds:.1f}s on {result.device}/{result.dtype}, "
        f"seed {seeds[0]} · saved to the gallery"
        + (" · cancelled, the rest were not made" if result.interrupted else ""),
        icon=":material/check_circle:",
    )
    svc = service()
    ids = [e.id for e in out.entries if e is not None and _exists(svc, e.id)]  # some may be deleted since
    cols = st.columns(min(2, len(out.paths)))
    for i, (path, entry) in enumerate(zip(out.paths, out.entries, strict=True)):
        with cols[i % len(cols)]:
            caption = f"#{entry.id if entry else '-'} · seed {seeds[i]}"
            if entry is None or entry.id not in ids:  # not in the gallery (any more): a plain picture
                st.image(sharp(path), caption=caption, width="stretch")
            else:
                clickable_image(sharp(path), f"res-{job.id}-{entry.id}", ids, ids.index(entry.id), caption)
                st.button(":material/open_in_full: View", key=f"view-{job.id}-{entry.id}", on_click=open_viewer,
                          args=(ids, ids.index(entry.id)), width="stretch")  # fmt: skip
                download_buttons(entry, key=f"res-{entry.id}")
                st.button(":material/zoom_out_map: Upscale", key=f"ups-{job.id}-{entry.id}", on_click=_to_upscale,
                          args=(entry.id,), width="stretch", help="Open it in the Upscale tab.")  # fmt: skip
    if len(ids) > 1:
        _grid_download(svc, ids, job.id)


def _to_upscale(entry_id: int) -> None:
    st.session_state["g_sent"] = {"tab": UPSCALE_TAB, "id": entry_id}
    st.session_state["g_tab"] = UPSCALE_TAB


def _grid_download(svc: Service, ids: list[int], key: str) -> None:
    from lanskap.gallery.export import grid_bytes

    st.download_button(
        f":material/grid_view: Grid of {len(ids)} (PNG)",
        data=functools.partial(lambda i: grid_bytes([svc.gallery.get(x) for x in i]), ids),  # made on click
        file_name=f"grid-{ids[0]}.png",
        mime="image/png",
        key=f"grid-{key}",
        on_click="ignore",
        width="stretch",
    )


def _exists(svc: Service, entry_id: int) -> bool:
    try:
        svc.gallery.get(entry_id)
    except LanskapError:
        return False
    return True


def page() -> None:
    svc = service()
    info = svc.engine.info()
    jobs, reconnected = session_jobs(svc)
    if reconnected and not st.session_state.get("g_prompt") and jobs[0].params and jobs[0].kind == "generate":
        prefill(jobs[0].params)  # a reload: the form shows what the newest job asked for
    done = next((j for j in jobs if j.result is not None and j.kind == "generate"), None)
    if done is not None and done.result.result.seeds:  # before the inputs, so "Reuse" offers its seed
        st.session_state["g_last_seed"] = done.result.result.seeds[0]
    left, right = st.columns([5, 4], gap="large")
    with left:
        _fit_distilled(info.recommended)
        _inputs(svc, info)
        action = _modes()
    with right:
        c = st.columns([3, 2], vertical_alignment="center")
        c[0].subheader("Results")
        c[1].button(":material/clear_all: Clear finished", key="g-clear", on_click=forget_finished, args=(svc,),
                    disabled=not any(not j.active for j in jobs), width="stretch")  # fmt: skip
        if not jobs:
            st.caption("Your images appear here, and in the gallery. Jobs stay here when you reload the page.")
        jobs_panel(jobs, _results)
    _action_bar(action, jobs)
    show_viewer()
