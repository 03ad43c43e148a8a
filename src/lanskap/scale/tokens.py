"""Ray's token authentication, for a ``lanskap serve`` that joins a cluster (``--ray-address``).

Clusters made by ``ray start`` ask every driver for a token (Ray's token authentication, on by
default since Ray 2.5x), and a driver sends it only when ``RAY_AUTH_MODE=token`` is set when Ray is
imported. Where a token is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, or the
``~/.ray/auth_token`` that ``ray start`` writes, copied to the other machines) and the mode is not
set, token mode is what joining needs. This module must not import Ray: it runs before Ray is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

MODE = "RAY_AUTH_MODE"


def use_token_if_present() -> bool:
    """Set token mode for this process (and the workers it starts) when a token is at hand; an
    explicit ``RAY_AUTH_MODE`` is left as it is. Returns whether token mode is on."""
    if MODE in os.environ:
        return os.environ[MODE].lower() == "token"
    found = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if found or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ[MODE] = "token"
        return True
    return False
