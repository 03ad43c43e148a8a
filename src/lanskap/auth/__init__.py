"""Who may use lanskap's servers: the shared logins file (users and API keys), read by the API and the web app."""

from lanskap.auth.store import MIN_SECRET_CHARS, Login, UserStore, check_secret, store_at
from lanskap.auth.throttle import FailedLogins

__all__ = ["MIN_SECRET_CHARS", "FailedLogins", "Login", "UserStore", "check_secret", "store_at"]
