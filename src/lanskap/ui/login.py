"""The web app's login: the same users and API keys as ``lanskap serve``, from the shared logins file.

``lanskap ui`` turns it on (``LANSKAP_UI_LOGIN=1``) whenever logins exist, and always for a
non-loopback address. A login lives in the browser tab's Streamlit session (server-side state,
nothing to forge in a cookie); it ends after ``LANSKAP_UI_SESSION_MINUTES``, on logout, when the
user is removed, or when the tab is closed or reloaded.

Written on streamlit-authenticator's pattern but not with it: that library keeps its own YAML of
users with its own password rules and re-logs in from a signed cookie (a second secret to keep),
while here the password check is argon2-cffi's (lanskap.auth) and the session never leaves the server.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import streamlit as st

from lanskap.auth import FailedLogins, UserStore, store_at
from lanskap.config import default_home

log = logging.getLogger("lanskap.access")
SESSION_KEY = "lk_login"


@dataclass
class Session:
    user: str
    expires: float  # time.time()


def enabled() -> bool:
    return os.environ.get("LANSKAP_UI_LOGIN") == "1"


def session_minutes() -> float:
    try:
        return max(0.05, float(os.environ.get("LANSKAP_UI_SESSION_MINUTES", "720")))
    except ValueError:
        return 720.0


@st.cache_resource(show_spinner=False)
def _store() -> UserStore:
    return store_at(default_home())


@st.cache_resource(show_spinner=False)
def _failures() -> FailedLogins:
    """One throttle per server process, shared by every tab: a wrong password costs the next try time."""
    return FailedLogins()


def _still_valid(session: Session) -> bool:
    if time.time() >= session.expires:
        return False
    names = {(f"key:{x.name}" if x.kind == "key" else x.name) for x in _store().logins()}
    return session.user in names


def _check(user: str, secret: str) -> str | None:
    store = _store()
    if not user.strip():
        name = store.check_key(secret)
        return f"key:{name}" if name else None
    return store.check_password(user.strip(), secret)


def _form() -> None:
    ip = st.context.ip_address
    client = ip if isinstance(ip, str) else "?"
    st.markdown("## :material/landscape: lanskap")
    with st.form("lk-login", border=True, width=420):
        st.markdown("#### :material/lock: Log in")
        user = st.text_input("User name", key="lk-login-user", help="Leave empty to log in with an API key.")
        secret = st.text_input("Password or API key", type="password", key="lk-login-secret")
        pressed = st.form_submit_button("Log in", type="primary")
    if not pressed:
        return
    wait = _failures().wait(client)
    if wait > 0:
        st.error(f"Too many failed logins; try again in {int(wait + 0.999)} s.")
        return
    who = _check(user, secret)
    if who is None:
        failures = _failures().failed(client)
        log.warning("failed web-app login from %s (%d in a row)", client, failures)
        st.error("Wrong user name or password.")
        return
    _failures().succeeded(client)
    st.session_state[SESSION_KEY] = Session(who, time.time() + session_minutes() * 60)
    log.info("web-app login: %s from %s", who, client)
    st.rerun()


def require_login() -> str | None:
    """The logged-in user (None when login is off); otherwise draw the form and stop the page here."""
    if not enabled():
        return None
    session = st.session_state.get(SESSION_KEY)
    if isinstance(session, Session) and _still_valid(session):
        return session.user
    if session is not None:
        del st.session_state[SESSION_KEY]
        st.info("Your session has ended; log in again.")
    _form()
    st.stop()
    return None  # unreachable: st.stop ends the script run


def logout_button(user: str) -> None:
    st.caption(f":material/person: {user}")
    if st.button("Log out", key="lk-logout", icon=":material/logout:"):
        st.session_state.pop(SESSION_KEY, None)
        log.info("web-app logout: %s", user)
        st.rerun()
