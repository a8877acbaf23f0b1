"""How the web app is served: its limits, the login and embedding settings, and their parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..settings import ROOT, UserError

STATIC = Path(__file__).resolve().parent.parent / "static"
EMBED_PAGE = ROOT / "examples" / "embed.html"
# The address examples/embed.html is written for; the copy served at /embed.html points at the
# server that serves it.
EMBED_DEFAULT_URL = "http://127.0.0.1:7860"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
API_MAX_K = 100
MAX_HISTORY = 20
MAX_BODY_BYTES = 1_000_000
UI_MAX_K = 20
# Pages on this machine may embed the app unless --allow-origin says otherwise.
LOCAL_ORIGINS = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"
LOCAL_FRAME_ANCESTORS = ("http://localhost:*", "http://127.0.0.1:*", "https://localhost:*",
                         "https://127.0.0.1:*")
ANY_SOURCE = "(all sources)"
# Methods the /api/ routes answer themselves (405 or 404 in JSON); any other gets a JSON 405.
STANDARD_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}


@dataclass(frozen=True)
class WebConfig:
    """How the web app is served.

    Args:
        users: (user, password) pairs; when given, the page and the JSON API need a login.
        allowed_origins: origins that may embed the app (iframe, web component, browser fetch);
            empty means pages served from this machine only; ("*",) means any site.
        max_running: questions answered at the same time, per entry point (JSON API, page).
        max_waiting: JSON API requests that may wait for a free slot; more get 503 "busy".
        queue_size: page and Gradio API events that may wait in Gradio's queue.
        wait_seconds: how long a JSON API request waits for a slot before 503 "busy".
    """

    users: tuple[tuple[str, str], ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_running: int = 2
    max_waiting: int = 16
    queue_size: int = 64
    wait_seconds: float = 30.0


def parse_users(text: str | None) -> tuple[tuple[str, str], ...]:
    """'alice:s3cret,bob:pw' -> (('alice', 's3cret'), ('bob', 'pw')).

    Raises:
        UserError: an entry without "user:password".
    """
    users = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise UserError(f"--auth/QA_AUTH entry {item.strip()!r} is not user:password; "
                            f"write e.g. --auth alice:s3cret")
        users.append((user, password))
    return tuple(users)


def parse_origins(items: list[str] | str | None) -> tuple[str, ...]:
    """Origins from --allow-origin flags or a comma-separated QA_ALLOWED_ORIGINS.

    Raises:
        UserError: something that is not "*" nor scheme://host[:port].
    """
    if isinstance(items, str):
        items = [items]
    out = []
    for item in items or []:
        for origin in item.split(","):
            origin = origin.strip().rstrip("/")
            if not origin:
                continue
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise UserError(f"allowed origin {origin!r} is not like https://example.com "
                                f"(scheme and host, optional port, no path) nor *")
            out.append(origin)
    return tuple(out)
