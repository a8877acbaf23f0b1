"""Test helper: run `python app.py` in a subprocess on a free 127.0.0.1 port, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = free_port()
    log = index.parent / f"server-{port}.log"
    full_env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                             "PYTHONUNBUFFERED": "1"} | (env or {})
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--index", str(index),
                                 "--port", str(port), "--quiet", *args],
                                cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/api/health", auth=auth, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer within {STARTUP_SECONDS} s:\n"
                                   f"{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
