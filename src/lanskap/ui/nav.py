"""The app's pages in one place, so any page can switch to another (``st.switch_page(nav.page(...))``).

Each page is a small script in ``views/`` that runs its module's ``page()``; files rather than
callables so that ``st.switch_page`` and AppTest can name them. Not ``pages/``: Streamlit also reads
that name as an old-style pages folder, and AppTest then reruns a page without ``app.py`` (no login,
no sidebar).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

#: name -> (title, icon); the name is also the URL path and the script's name.
PAGES: dict[str, tuple[str, str]] = {
    "generate": ("Generate", ":material/brush:"),
    "gallery": ("Gallery", ":material/photo_library:"),
    "training": ("Training", ":material/model_training:"),
    "evaluation": ("Evaluation", ":material/analytics:"),
}
HERE = Path(__file__).resolve().parent


def page(name: str) -> st.Page:
    title, icon = PAGES[name]
    script = HERE / "views" / f"{name}.py"
    if name == "generate":  # the default page lives at "/"
        return st.Page(script, title=title, icon=icon, default=True)
    return st.Page(script, title=title, icon=icon, url_path=name)


def all_pages() -> list[st.Page]:
    return [page(name) for name in PAGES]
