"""`python -m qa.web` (and `python app.py`): parse the flags, open or build the index (or, with
--ray, join the `qa` app on a Ray cluster), serve."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from ..engine import open_or_build
from ..settings import INGRESS_CHOICES, INGRESS_HELP, UserError, check_ingress, default_settings
from .config import DEFAULT_HOST, DEFAULT_PORT, WebConfig, parse_origins, parse_users


def main(argv: list[str] | None = None) -> int:
    """`python app.py [--host H] [--port P] [--index DIR | --ray ADDRESS] [--auth user:pass] ...`;
    returns the exit code."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="app.py", description="Serve the question-answering page and "
                                "its JSON API. Nothing is shared publicly: there is no share link.")
    p.add_argument("--host", default=os.environ.get("QA_HOST", DEFAULT_HOST),
                   help="address to bind (default 127.0.0.1, or QA_HOST; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=None,
                   help=f"port (default {DEFAULT_PORT}, or QA_PORT)")
    p.add_argument("--index", type=Path, help="index folder (default index/, or QA_INDEX)")
    p.add_argument("--sources", type=Path, nargs="+",
                   help="articles to build from when the index is missing (default seeds/)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the index before serving")
    p.add_argument("--auth", default=os.environ.get("QA_AUTH"),
                   help="require a login, user:password[,user2:pw2] (or QA_AUTH)")
    p.add_argument("--allow-origin", action="append", default=None, metavar="ORIGIN",
                   help="a site allowed to embed the app, e.g. https://news.example.com; repeat "
                        "for more; * for any (or QA_ALLOWED_ORIGINS, comma-separated); default: "
                        "pages on this machine only")
    p.add_argument("--max-running", type=int, default=2, help="questions answered at once (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar when building")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="answer through the app `qa serve --ray ADDRESS --index DIR` runs on the "
                        "Ray cluster at ADDRESS instead of in this process; needs .[ray]")
    p.add_argument("--ingress", choices=INGRESS_CHOICES, default="app", help=INGRESS_HELP)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        port = args.port if args.port is not None else int(os.environ.get("QA_PORT") or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise UserError(f"--port {port} is not a port number; use 1-65535, e.g. 7860")
        if args.max_running < 1:
            raise UserError("--max-running must be at least 1")
        config = WebConfig(users=parse_users(args.auth),
                           allowed_origins=parse_origins(args.allow_origin
                                                         or os.environ.get("QA_ALLOWED_ORIGINS")),
                           max_running=args.max_running)
        _check_port(args.host, port)
        check_ingress(args)
        if args.ray:
            engine = _remote(args)
        else:
            settings = default_settings(index_dir=args.index)
            engine = open_or_build(settings, args.sources, rebuild=args.rebuild,
                                   progress=not args.quiet)
            if engine.index.stale:
                _say(f"warning: {settings.index_dir}/ is older than its articles")
        from .api import create_app

        app = create_app(engine, config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    import uvicorn

    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    _say(f"Serving on http://{shown}:{port}/  (JSON API: /api/ask, schema: /openapi.json"
         f"{', login required' if config.users else ''}; Ctrl+C to stop)")
    # h11, not whichever parser is installed: httptools (which Ray Serve's extra brings) refuses a
    # long request line with a bare 400, where h11 hands it on and the API explains (422).
    uvicorn.run(app, host=args.host, port=port, log_level="warning", http="h11")
    return 0


def _remote(args):
    """The engine answering through the `qa` app on the Ray cluster at --ray (qa.serve.RemoteQA)."""
    given = [f for f, v in (("--index", args.index), ("--sources", args.sources),
                            ("--rebuild", args.rebuild)) if v]
    if given:
        raise UserError(f"{', '.join(given)} cannot be used with --ray: the app answers from the "
                        f"index `qa serve --ray {args.ray} --index DIR` deployed; pass them to "
                        f"`qa serve`, or drop --ray to answer in this process")
    from ..serve import open_app

    engine = open_app(args.ray, local=args.ingress == "local")
    _say(f"Answering through the qa app on the Ray cluster at {args.ray} "
         f"({len(engine.index.articles)} articles, {engine.index.manifest.passages} passages"
         f"{'; its ingress in this process' if args.ingress == 'local' else ''})")
    return engine


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); another program may "
                            f"use it: pass --port with a free port, e.g. --port {port + 1}") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
