"""The Streamlit entry script that ``lanskap ui`` runs: page setup, login, header, status panel, navigation."""

from __future__ import annotations

import streamlit as st

from lanskap import __version__
from lanskap.ui import login, nav
from lanskap.ui.status_panel import status_panel

st.set_page_config(
    page_title="lanskap", page_icon=":material/landscape:", layout="wide", initial_sidebar_state="expanded"
)
user = login.require_login()  # draws the login form and stops here until someone logs in
current = st.navigation(nav.all_pages(), position="sidebar")
with st.container(key="lk-header"):
    st.markdown(f"## :material/landscape: lanskap · {current.title}")
    st.caption(f"Fantasy-landscape concept art with Stable Diffusion 2.1 and LoRA fine-tuning · v{__version__}")
st.divider()
with st.sidebar:
    status_panel()
    if user is not None:
        login.logout_button(user)
current.run()
