"""The image viewer: a large view of any result or gallery image, in a dialog, with arrow keys.

It shows the picture (small ones enlarged pixel-sharp), its parameters and infotext (with a copy
button), and the peers' actions: reuse this seed, use these settings, and send the picture to
img2img, inpaint, outpaint or upscale. The viewer is opened by storing which gallery ids it walks through;
every page calls :func:`show_viewer` on each run, so a rerun (a job finishing) keeps it open
until it is closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from lanskap.errors import LanskapError
from lanskap.ui.common import download_buttons, service

if TYPE_CHECKING:
    from lanskap.gallery.store import Entry

VIEW_IDS, VIEW_AT, AFTER = "v_ids", "v_at", "v_after"
#: Below this many pixels on the longer side a picture is enlarged by a whole factor, nearest-neighbour,
#: so a 64 or 128 px image shows crisp pixels rather than the browser's blur.
SHARP_BELOW = 512
#: The Generate page's tabs a picture can be sent to, by the label the button shows.
SEND_TO = {"img2img": "Image to image", "inpaint": "Inpaint", "outpaint": "Outpaint", "upscale": "Upscale"}


#: A picture that opens the viewer when clicked: Streamlit images take no clicks, so an invisible
#: button is laid over the picture (it stays a real, focusable button for the keyboard).
CLICKABLE_CSS = """<style>
div[class*="st-key-lk-click-"] { position: relative; gap: 0; }
div[class*="st-key-lk-click-"] div[data-testid="stElementContainer"]:has(div[data-testid="stButton"]) {
  position: absolute; inset: 0; z-index: 1; margin: 0; }
div[class*="st-key-lk-click-"] div[data-testid="stButton"],
div[class*="st-key-lk-click-"] div[data-testid="stButton"] button { width: 100%; height: 100%; }
div[class*="st-key-lk-click-"] div[data-testid="stButton"] button { opacity: 0; cursor: zoom-in; }
</style>"""


def clickable_image(image: bytes | str, key: str, ids: list[int], at: int, caption: str | None = None) -> None:
    """A picture that opens the viewer on ``ids[at]`` when clicked (see CLICKABLE_CSS)."""
    with st.container(key=f"lk-click-{key}"):
        st.image(image, caption=caption, width="stretch")
        st.button("Open in the viewer", key=f"{key}-click", on_click=open_viewer, args=(ids, at))


def open_viewer(ids: list[int], at: int) -> None:
    """Button callback: view ``ids[at]``, with the arrows walking through ``ids``."""
    st.session_state[VIEW_IDS], st.session_state[VIEW_AT] = list(ids), at


def close_viewer() -> None:
    st.session_state.pop(VIEW_IDS, None)
    st.session_state.pop(VIEW_AT, None)


def show_viewer(*, deletable: bool = False) -> None:
    """Draw the viewer if one is open (every page calls this once per run)."""
    if st.session_state.get(VIEW_IDS):
        _dialog(deletable)


def follow_up() -> None:
    """Carry out a viewer action's page change, early in a full run of the app (``app.py`` calls it).

    Not from inside the dialog: a page switch started in a fragment's run could leave the new
    page blank under load, so the dialog only asks for a full rerun and this does the rest.
    """
    if st.session_state.pop(AFTER, None) == "generate":
        from lanskap.ui import nav

        st.switch_page(nav.page("generate"))


def sharp(path: Path, min_side: int = SHARP_BELOW) -> bytes | str:
    """The picture to show: small ones enlarged by a whole factor without smoothing, others as they are."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return str(path)
    return _enlarged(str(path), mtime, min_side) or str(path)


@st.cache_data(show_spinner=False, max_entries=256)
def _enlarged(path: str, mtime: float, min_side: int) -> bytes | None:
    """PNG bytes of the nearest-neighbour enlargement, or None when the picture is big enough (cached:
    a widget change reruns the page, and it must not decode and scale every result again)."""
    import io

    from PIL import Image

    try:
        with Image.open(path) as im:
            side = max(im.size)
            if side >= min_side:
                return None
            factor = -(-min_side // side)
            big = im.convert("RGB").resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    except OSError:
        return None
    buf = io.BytesIO()
    big.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _go(target: int) -> None:
    """Arrow callback: view ``ids[target]``.

    The target, not a step: a key press that reaches both the old and the new arrow button
    during a rerun must still move one picture, never two.
    """
    ids = st.session_state.get(VIEW_IDS) or []
    st.session_state[VIEW_AT] = max(0, min(len(ids) - 1, target))


def _after(what: str) -> None:
    """What the dialog does on its next run: ``rerun`` the page, or go to ``generate``."""
    st.session_state[AFTER] = what
    close_viewer()


def _reuse_seed(entry: Entry) -> None:
    st.session_state["g_seed"] = entry.seed
    _after("generate")


def _use_settings(entry: Entry) -> None:
    from lanskap.ui.generate_page import prefill

    prefill({**entry.params, "width": entry.width, "height": entry.height, "seed": entry.seed})
    _after("generate")


def _send_to(entry: Entry, tab: str) -> None:
    """Put the picture into a Generate tab (as if uploaded there) and open that tab."""
    st.session_state["g_sent"] = {"tab": tab, "id": entry.id}
    st.session_state["g_tab"] = tab
    _after("generate")


def _delete(entry: Entry) -> None:
    st.session_state["gl_confirm"] = [entry.id]
    _after("rerun")


@st.dialog("Image", width="large", on_dismiss=close_viewer)
def _dialog(deletable: bool) -> None:
    if st.session_state.get(AFTER):  # an action was taken: the whole app reruns, and follow_up acts
        st.rerun(scope="app")
    ids: list[int] = st.session_state.get(VIEW_IDS) or []
    at = min(st.session_state.get(VIEW_AT, 0), len(ids) - 1)
    try:
        e = service().gallery.get(ids[at])
    except (LanskapError, IndexError):
        st.warning("This image is no longer in the gallery.", icon=":material/hide_image:")
        return
    c = st.columns([1, 6, 1], vertical_alignment="center")
    c[0].button(":material/arrow_back:", key="v-prev", on_click=_go, args=(at - 1,), disabled=at == 0,
                shortcut="Left", help="Previous (←)")  # fmt: skip
    c[1].caption(f"**#{e.id}** · {e.width}×{e.height} · seed {e.seed} · {e.mode} · {at + 1} of {len(ids)}")
    c[2].button(":material/arrow_forward:", key="v-next", on_click=_go, args=(at + 1,), disabled=at >= len(ids) - 1,
                shortcut="Right", help="Next (→)")  # fmt: skip
    left, right = st.columns([3, 2])  # the picture beside its actions, so both fit one screen
    left.image(sharp(e.path), width="stretch")
    with left:
        from lanskap.ui.panorama_tab import panorama_views

        panorama_views(str(e.path), e.width, e.height, e.infotext or "", f"v-pano-{e.id}")
    with right:
        _actions(e, deletable)
    _details(e)


def _actions(e: Entry, deletable: bool) -> None:
    c = st.columns(2)
    c[0].button(":material/replay: Reuse this seed", key="v-seed", on_click=_reuse_seed, args=(e,), width="stretch")
    c[1].button(":material/tune: Use these settings", key="v-use", on_click=_use_settings, args=(e,),
                type="primary", width="stretch")  # fmt: skip
    for name, tab in SEND_TO.items():
        st.button(f":material/send: Send to {name}", key=f"v-send-{name}", on_click=_send_to, args=(e, tab),
                   width="stretch")  # fmt: skip
    download_buttons(e, key=f"v-dl-{e.id}")
    if deletable:
        st.button(":material/delete: Delete…", key="v-del", on_click=_delete, args=(e,), width="stretch")


def _details(e: Entry) -> None:
    st.markdown(f"**Prompt:** {cell(e.prompt)}")
    if e.negative_prompt:
        st.markdown(f"**Negative prompt:** {cell(e.negative_prompt)}")
    loras = ", ".join(f"{lo['name']} × {lo['scale']:g}" for lo in e.loras) or "none"
    rows = {
        "Steps": e.steps,
        "Guidance": e.guidance,
        "Sampler": e.sampler,
        "LoRA": loras,
        "Model": f"{e.model} [{e.model_hash}]",
        "Time": f"{e.seconds:.2f}s on {e.device}/{e.dtype}" if e.seconds is not None else "-",
        "Created": e.created,
        "Made by": e.source,
    }
    st.markdown("| | |\n|---|---|\n" + "\n".join(f"| {k} | {cell(v)} |" for k, v in rows.items()))
    st.caption("A1111 parameters (infotext); the copy button is at its top right")
    st.code(e.infotext or "", language=None, wrap_lines=True)


def cell(value: object) -> str:
    """A value for a markdown table cell: no pipes or newlines, markdown characters escaped."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    for ch in "*_`[]<>":
        text = text.replace(ch, "\\" + ch)
    return text
