"""The web edge: the page and the HTTP API over a loaded engine.

    >>> from qa.engine import open_or_build
    >>> from qa.settings import default_settings
    >>> from qa.web import create_app
    >>> app = create_app(open_or_build(default_settings()))   # a FastAPI app; serve it with uvicorn

`python app.py` (or `python -m qa.web`) parses the flags, opens or builds the index and serves
`create_app(...)` on 127.0.0.1:7860. Untrusted text (articles, questions) is never rendered as
HTML: chat messages are built from `html.escape`d pieces, articles and passages go through
`gr.HighlightedText` and `gr.Dataframe`, which render text literally.

Modules: `config` (limits, login and origins), `render` (result -> HTML and highlight values, no
Gradio), `page` (the Gradio Blocks), `api` (the FastAPI app), `__main__` (the launcher).
"""

from __future__ import annotations

from .api import create_app
from .config import WebConfig
from .page import build_demo

__all__ = ["WebConfig", "build_demo", "create_app", "demo", "main"]


def main(argv: list[str] | None = None) -> int:
    """`python app.py ...`: see qa.web.__main__.main."""
    from .__main__ import main as run

    return run(argv)


def __getattr__(name: str):
    """`qa.web.demo`: the page on the default index, built on first use (for `gradio`)."""
    if name == "demo":
        from ..engine import open_or_build
        from ..settings import default_settings

        demo = build_demo(open_or_build(default_settings()))
        globals()["demo"] = demo
        return demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
