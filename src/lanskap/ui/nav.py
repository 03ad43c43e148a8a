"""The app's pages in one place, so any page can switch to another (``st.switch_page(nav.page(...))``)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lanskap.ui.common import guarded

#: name -> (title, icon); the name is also the URL path.
PAGES: dict[str, tuple[str, str]] = {
    "generate": ("Generate", ":material/brush:"),
    "gallery": ("Gallery", ":material/photo_library:"),
    "training": ("Training", ":material/model_training:"),
    "evaluation": ("Evaluation", ":material/analytics:"),
}


def _body(name: str) -> Callable[[], None]:
    from lanskap.ui import evaluation_page, gallery_page, generate_page, training_page

    module = {
        "generate": generate_page,
        "gallery": gallery_page,
        "training": training_page,
        "evaluation": evaluation_page,
    }[name]
    return guarded(module.page)


def page(name: str) -> st.Page:
    title, icon = PAGES[name]
    if name == "generate":  # the default page lives at "/"
        return st.Page(_body(name), title=title, icon=icon, default=True)
    return st.Page(_body(name), title=title, icon=icon, url_path=name)


def all_pages() -> list[st.Page]:
    return [page(name) for name in PAGES]
