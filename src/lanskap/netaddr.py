"""Where a server may listen: the loopback test shared by ``lanskap ui`` and ``lanskap serve``."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address (no DNS name, so nothing a DNS answer can rebind)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_host_port(value: str) -> tuple[str, str]:
    """``example:7861`` → (``example``, ``7861``); ``[::1]:7861`` → (``::1``, ``7861``)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, ""
