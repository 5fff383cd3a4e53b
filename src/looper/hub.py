"""Reaching the Hugging Face Hub: a quick check first, so that an offline run fails in seconds.

Without it, huggingface_hub retries with back-off for tens of seconds before giving up (measured
here: 25 s for a dataset, 54 s for a model, the latter ending in a traceback). The check opens one
TCP connection to the Hub's endpoint (``$HF_ENDPOINT`` or huggingface.co). It is skipped when
``HF_HUB_OFFLINE`` is set (the libraries then read their local cache) or a proxy is configured (a
direct connection says nothing about the proxy).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from looper.errors import InputError

_TRUE = ("1", "true", "yes", "on")


def hub_unreachable_reason(timeout_s: float = 3.0) -> str | None:
    """None when the Hub's endpoint accepts a connection, else why not."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"


def require_hub(what: str, offline_hint: str) -> None:
    """Raise an InputError naming ``what`` when the Hub cannot be reached (see the module docstring)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    reason = hub_unreachable_reason()
    if reason:
        raise InputError(
            f"{what} comes from the Hugging Face Hub, which cannot be reached ({reason}). {offline_hint} "
            "(HF_HUB_OFFLINE=1 uses what is already in the Hub cache.)"
        )
