"""The Streamlit entry script that ``lanskap ui`` runs: page setup, login, header, status panel, navigation."""

from __future__ import annotations

import streamlit as st

from lanskap.ui import header, login, nav, viewer
from lanskap.ui.status_panel import status_panel

# "auto": the sidebar starts open on a wide screen and closed on a phone, where it would cover the page.
st.set_page_config(page_title="lanskap", page_icon=":material/landscape:", layout="wide", initial_sidebar_state="auto")
user = login.require_login()  # draws the login form and stops here until someone logs in
current = st.navigation(nav.all_pages(), position="sidebar")
viewer.follow_up()  # a viewer action that goes to another page ("use these settings", "send to")
header.header(current.title)
with st.sidebar:
    status_panel()
    if user is not None:
        login.logout_button(user)
current.run()
