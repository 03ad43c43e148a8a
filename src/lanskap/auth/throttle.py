"""Back-off after wrong credentials, per client: shared by the API and the web app's login form."""

from __future__ import annotations

import threading
import time


class FailedLogins:
    """Per-client back-off after wrong credentials: free tries, then waits that double with each failure.

    Guessing a password over the network then costs hours, while a user who mistypes once or twice
    notices nothing. A success clears the client's record.
    """

    def __init__(self, free: int = 5, base_s: float = 1.0, cap_s: float = 3600.0, max_clients: int = 10_000) -> None:
        self.free, self.base_s, self.cap_s, self.max_clients = free, base_s, cap_s, max_clients
        self._state: dict[str, tuple[int, float]] = {}  # client -> (failures, blocked until)
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds this client must wait before its next try (0: go ahead)."""
        with self._lock:
            _, until = self._state.get(client, (0, 0.0))
            return max(0.0, until - time.monotonic())

    def failed(self, client: str) -> int:
        with self._lock:
            failures, _ = self._state.get(client, (0, 0.0))
            failures += 1
            over = failures - self.free
            delay = min(self.cap_s, self.base_s * 2 ** (over - 1)) if over > 0 else 0.0
            self._state[client] = (failures, time.monotonic() + delay)
            if len(self._state) > self.max_clients:
                for k in sorted(self._state, key=lambda k: self._state[k][1])[: self.max_clients // 10]:
                    del self._state[k]
            return failures

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._state.pop(client, None)
