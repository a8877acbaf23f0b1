"""Test helper: run `python app.py` in a subprocess on a free 127.0.0.1 port, and stop it."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qa.soak import free_port, serve  # noqa: F401  (free_port is used by the browser tests)

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 180


@contextmanager
def app_server(index: Path, *args: str, env: dict | None = None,
               auth: tuple[str, str] | None = None) -> Iterator[str]:
    """Start app.py on `index`, wait until /api/health answers, yield the base URL, then stop it.

    Args:
        index: an index folder (read only).
        args: more app.py flags.
        env: extra environment variables (e.g. QA_AUTH).
        auth: credentials for the readiness probe when the server requires a login.
    """
    log = index.parent / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
    with serve(index, *args, log=log, env=env, auth=auth,
               startup_seconds=STARTUP_SECONDS) as (url, _):
        yield url
