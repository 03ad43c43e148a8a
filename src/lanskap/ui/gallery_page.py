"""Gallery page: every saved image, newest first, with search, filters, the viewer, downloads and delete.

Reads and deletes through :class:`lanskap.gallery.Gallery`, the same store the
CLI's ``lanskap gallery`` uses, so both always show the same images.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from typing import TYPE_CHECKING, Any

import streamlit as st

from lanskap.generation.params import TASKS
from lanskap.ui.common import service, thumb_of, try_action
from lanskap.ui.viewer import clickable_image, open_viewer, show_viewer

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator

    from lanskap.gallery.store import Entry, Gallery


PAGE_SIZE = 12
ALL = "All"


def _selected() -> list[int]:
    return sorted(
        int(k[4:]) for k, v in st.session_state.items() if isinstance(k, str) and k.startswith("sel-") and v is True
    )


def _select_page(ids: list[int], on: bool) -> None:
    for i in ids:
        st.session_state[f"sel-{i}"] = on


def _clear_selection(ids: list[int]) -> None:
    for i in ids:
        st.session_state.pop(f"sel-{i}", None)


def _filters(g: Gallery) -> dict[str, Any]:
    c = st.columns([4, 2, 2, 2, 2])
    search = c[0].text_input("Search prompts", key="gl_search", placeholder="castle mist", persist_state="session")
    lora = c[1].selectbox("LoRA", [ALL, *g.loras()], key="gl_lora", persist_state="session")
    sizes = [f"{w}×{h}" for w, h in g.sizes()]
    size = c[2].selectbox("Size", [ALL, *sizes], key="gl_size", persist_state="session")
    since = c[3].date_input("From", value=None, key="gl_since", persist_state="session")
    until = c[4].date_input("To", value=None, key="gl_until", persist_state="session")
    c = st.columns([2, 3, 2, 5])
    mode = c[0].selectbox("Mode", [ALL, *TASKS], key="gl_mode", persist_state="session")
    model = c[1].selectbox("Model", [ALL, *g.models()], key="gl_model", persist_state="session")
    seed = c[2].number_input("Seed", min_value=0, value=None, step=1, key="gl_seed", persist_state="session")
    width = height = None
    if size != ALL:
        width, height = (int(x) for x in size.split("×"))
    return {
        "search": search or None,
        "lora": None if lora == ALL else lora,
        "width": width,
        "height": height,
        "since": since.isoformat() if since else None,
        "until": (until + dt.timedelta(days=1)).isoformat() if until else None,
        "mode": None if mode == ALL else mode,
        "model": None if model == ALL else model,
        "seed": int(seed) if seed is not None else None,
    }


def _confirm_delete(g: Gallery) -> None:
    ids = st.session_state.get("gl_confirm") or []
    if not ids:
        return
    what = f"image #{ids[0]}" if len(ids) == 1 else f"{len(ids)} images"
    with st.container(border=True):
        question = f"Delete {what}? The file and its gallery record are removed; this can't be undone."
        st.warning(question, icon=":material/delete:")
        c = st.columns([1, 1, 4])
        if c[0].button("Yes, delete", type="primary", key="gl-yes"):
            removed = try_action(lambda: g.delete(ids))
            st.session_state["gl_confirm"] = []
            _clear_selection(ids)
            st.toast(f"Deleted {removed or 0} image(s).", icon=":material/delete:")
            st.rerun()
        if c[1].button("Keep", key="gl-no"):
            st.session_state["gl_confirm"] = []
            st.rerun()


def _grid(entries: list[Entry]) -> None:
    # Row by row, not column by column: on a narrow screen the columns stack, and a row's cells
    # then follow each other, so newest-first holds at every width.
    ids = [e.id for e in entries]
    for start in range(0, len(entries), 4):
        cols = st.columns(4)
        for i, (col, e) in enumerate(zip(cols, entries[start : start + 4], strict=False), start):
            _card(col, e, ids, i)


def _card(col: DeltaGenerator, e: Entry, ids: list[int], at: int) -> None:
    with col, st.container(border=True):
        thumb = thumb_of(e.path)
        if thumb is not None:
            clickable_image(thumb, f"gl-{e.id}", ids, at)
        else:
            st.caption("file missing")
        prompt = e.prompt if len(e.prompt) <= 70 else e.prompt[:69] + "…"
        st.caption(f"**#{e.id}** · {e.width}×{e.height} · seed {e.seed}\n\n{prompt}")
        c = st.columns(2, vertical_alignment="center")
        c[0].checkbox("Select", key=f"sel-{e.id}", persist_state="session")
        c[1].button("Details", key=f"open-{e.id}", on_click=open_viewer, args=(ids, at), width="stretch")


def page() -> None:
    from lanskap.gallery.export import zip_bytes
    from lanskap.ui import nav

    g = service().gallery
    if g.query(limit=0)[1] == 0:
        empty = "No images yet. Generate your first landscape and it will be kept here."
        st.info(empty, icon=":material/photo_library:")
        if st.button("Go and generate", type="primary", key="gl-go"):
            st.switch_page(nav.page("generate"))
        return
    filters = _filters(g)
    _confirm_delete(g)
    total = g.query(**filters, limit=0)[1]
    if total == 0:
        st.info("No images match these filters.", icon=":material/search_off:")
        return
    pages = math.ceil(total / PAGE_SIZE)
    number = st.pagination(pages, key="gl_page") if pages > 1 else 1
    entries, _ = g.query(**filters, limit=PAGE_SIZE, offset=(min(number, pages) - 1) * PAGE_SIZE)
    selected = _selected()
    c = st.columns([3, 2, 2, 2], vertical_alignment="center")
    c[0].caption(f"{total} image(s), newest first · {len(selected)} selected")
    page_ids = [e.id for e in entries]
    every = all(st.session_state.get(f"sel-{i}") is True for i in page_ids)
    c[1].button(
        ":material/deselect: Unselect this page" if every else ":material/select_all: Select all on page",
        key="gl-sel-page",
        on_click=_select_page,
        args=(page_ids, not every),
        width="stretch",
    )
    c[2].download_button(
        f":material/folder_zip: ZIP of {len(selected)} selected",
        data=functools.partial(lambda ids: zip_bytes([g.get(i) for i in ids]), selected),
        file_name="lanskap-images.zip",
        mime="application/zip",
        disabled=not selected,
        on_click="ignore",
        key="gl-zip",
        width="stretch",
    )
    if c[3].button(":material/delete: Delete selected…", disabled=not selected, key="gl-del-sel", width="stretch"):
        st.session_state["gl_confirm"] = selected
        st.rerun()
    _grid(entries)
    show_viewer(deletable=True)
