"""Refuse to expose an unauthenticated model to the network.

Why: ``tunelab serve --host 0.0.0.0`` without a key lets anyone who can reach the machine
use the model (and its adapters, possibly trained on private data). Only loopback addresses
(127.0.0.0/8, ::1, ``localhost``) are safe without ``--api-key``; any other address, or a
host name that could resolve anywhere, needs a key or an explicit ``--insecure-no-auth``.
"""

from __future__ import annotations

import ipaddress

from tunelab.errors import ServeError


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``[::1]`` brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: where it resolves is not ours to trust
        return False


def check_bind(host: str, api_key: str | None, insecure_no_auth: bool = False) -> None:
    """Raise :class:`ServeError` for a non-loopback ``host`` without a key unless the user opted out."""
    if api_key or insecure_no_auth or is_loopback(host):
        return
    raise ServeError(
        f"--host {host} would let anyone who can reach this machine use the model without a key.\n"
        "  fix: add --api-key KEY (or set TUNELAB_API_KEY), bind --host 127.0.0.1, "
        "or pass --insecure-no-auth to serve without a key anyway"
    )
