"""Network-facing safety helpers shared by the HTTP API (``recagent serve``), the ``vllm serve`` launcher, the
OpenAI-server engine and the session store: is a host loopback, may a service bind to it without a secret, and
URLs with their password hidden for messages and logs."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from agent.errors import ConfigError

__all__ = ["BindGuard", "check_bind", "is_loopback", "redact_url"]

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@/\s]*@")


def redact_url(url: str) -> str:
    """``url`` without the password of its user info (``http://user:***@host``): URLs end up in messages and logs."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.x.y.z``, ``::1`` (bracketed or not)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BindGuard:
    """What a service calls its secret and how the user sets it, for :func:`check_bind`'s messages."""

    service: str  # "" for the API itself, "the LLM" for the model server
    credential: str  # "a token", "an API key"
    setting: str  # how to set it, e.g. "set RECAGENT_SERVER_TOKEN (or pass --token)"
    name: str  # the secret's name in the too-short message, e.g. "the server token"
    min_length: int = 0


def check_bind(host: str, secret: str | None, guard: BindGuard) -> None:
    """Beyond loopback a service must have a secret: anyone who can reach the port could otherwise use it.
    ``secret`` is None or empty (or vLLM's placeholder ``EMPTY``) when none is set."""
    missing = not secret or secret == "EMPTY"
    if missing and not is_loopback(host):
        subject = f"{guard.service} " if guard.service else ""
        raise ConfigError(
            f"refusing to serve {subject}on {host} without {guard.credential}: every client on the network could "
            "use it",
            hint=f"{guard.setting}, or bind to 127.0.0.1 (the default)",
        )
    if not missing and secret is not None and len(secret) < guard.min_length:
        raise ConfigError(
            f"{guard.name} is shorter than {guard.min_length} characters",
            hint="use a long random secret, e.g. `openssl rand -hex 32`",
        )
