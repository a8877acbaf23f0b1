"""The page and the HTTP API: a Gradio chat with cited answers and an article viewer, /api/ask beside it.

    >>> from qa.engine import open_or_build
    >>> from qa.web import create_app
    >>> app = create_app(open_or_build(default_settings()))   # a FastAPI app; serve it with uvicorn

`python app.py` (or `python -m qa.web`) parses the flags, opens or builds the index and serves
`create_app(...)` on 127.0.0.1:7860. Untrusted text (articles, questions) is never rendered as
HTML: chat messages are built from `html.escape`d pieces, articles and passages go through
`gr.HighlightedText` and `gr.Dataframe`, which render text literally.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Optional

import gradio as gr
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount

from . import __version__
from .engine import open_or_build
from .retrieve import Filters
from .settings import RETRIEVERS, ROOT, UserError, default_settings
from .text import stems

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
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
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pure helpers for the page

def citations(out: dict) -> list[int]:
    """Ranks of the passages that contain the answer snippet, the answering passage first.

    >>> citations({"answer": {"doc_id": "d", "char_start": 5, "char_end": 9, "passage_rank": 2},
    ...            "passages": [{"rank": 1, "doc_id": "d", "char_start": 0, "char_end": 10},
    ...                         {"rank": 2, "doc_id": "d", "char_start": 4, "char_end": 20}]})
    [2, 1]
    """
    a = out.get("answer")
    if not a:
        return []
    ranks = [p["rank"] for p in out["passages"] if p["doc_id"] == a["doc_id"]
             and p["char_start"] <= a["char_start"] and a["char_end"] <= p["char_end"]]
    first = a["passage_rank"]
    return [first] + [r for r in ranks if r != first]


def _meta(item: dict) -> str:
    date = (item.get("date") or "")[:10] or "undated"
    return f"{item.get('title') or item['doc_id']} — {item.get('source') or 'source unknown'}, {date}"


def answer_html(out: dict) -> str:
    """The assistant's chat message for one `QA.to_json` result, as HTML built from escaped text.

    An answer shows the snippet with the asked-for entity emphasized and its citation marks;
    an abstention is labelled "Not in the articles" and lists the closest passages.
    """
    e = html.escape
    parts: list[str] = []
    if out.get("resolved_question"):
        parts.append(f'<p class="qa-read-as">Read as: {e(out["resolved_question"])}</p>')
    for notice in out.get("notices", []):
        parts.append(f'<p class="qa-notice">Note: {e(notice)}</p>')
    a = out.get("answer")
    if a:
        marks = " ".join(f"[{r}]" for r in citations(out))
        text = a["text"]
        h = a.get("highlight")
        if h and a["char_start"] <= h["char_start"] < h["char_end"] <= a["char_end"]:
            i, j = h["char_start"] - a["char_start"], h["char_end"] - a["char_start"]
            snippet = f"{e(text[:i])}<mark><strong>{e(text[i:j])}</strong></mark>{e(text[j:])}"
        else:
            snippet = e(text)
        parts += ['<p class="qa-label qa-label-answer">Answer</p>',
                  f'<p class="qa-snippet">“{snippet}” <span class="qa-marks">{marks}</span></p>',
                  f'<p class="qa-cite">[{a["passage_rank"]}] {e(_meta(a))} · '
                  f'confidence {out["confidence"]:.2f}</p>']
        kind = "qa-answer"
    else:
        parts.append('<p class="qa-label qa-label-notfound">Not in the articles</p>')
        if out["passages"]:
            parts.append("<p>No article answers this question. The closest passages, of low "
                         "relevance:</p>")
            items = "".join(f'<li>[{p["rank"]}] {e(_meta(p))}: “{e(_clip(p["text"], 160))}” '
                            f'(score {p["score"]:.3f}, low relevance)</li>' for p in out["passages"])
            parts.append(f'<ul class="qa-closest">{items}</ul>')
        else:
            parts.append("<p>No passage matched the question and the filters.</p>")
        kind = "qa-notfound"
    return f'<div class="qa-msg {kind}">{"".join(parts)}</div>'


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


def status_html(out: dict | None) -> str:
    """The banner above the sources: answered, or not in the articles."""
    if out is None:
        return '<div class="qa-status">Ask a question about the articles.</div>'
    if out.get("answer"):
        return (f'<div class="qa-status qa-status-answer">Answered from the articles · '
                f'confidence {out["confidence"]:.2f} · {len(out["passages"])} passages</div>')
    return ('<div class="qa-status qa-status-notfound">Not in the articles · the closest '
            f'{len(out["passages"])} passages are listed below as low relevance</div>')


def source_rows(out: dict) -> list[list]:
    """Rows of the sources table: rank, title, source, date, score, relevance."""
    cited = set(citations(out))
    return [[p["rank"], p["title"], p["source"], (p["date"] or "")[:10], round(p["score"], 3),
             "low relevance" if p["low_relevance"] else ("cited" if p["rank"] in cited else "")]
            for p in out["passages"]]


def best_sentence(question: str, text: str, spans: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The span (offsets into text) of the sentence sharing most content words with the question."""
    q = set(stems(question))
    best, best_overlap = None, 0
    for a, b in spans:
        overlap = len(q & set(stems(text[a:b])))
        if overlap > best_overlap:
            best, best_overlap = (a, b), overlap
    return best


def passage_segments(out: dict, sentences_of) -> list[tuple[str, Optional[str]]]:
    """HighlightedText value listing every passage with its header; the answer sentence is
    labelled "answer", elsewhere the sentence closest to the question is labelled "best match".

    Args:
        out: a `QA.to_json` result.
        sentences_of: (doc_id, char_start, char_end) -> the passage's sentence spans in article
            offsets (empty when unknown).
    """
    a = out.get("answer")
    question = out.get("resolved_question") or out["question"]
    segs: list[tuple[str, Optional[str]]] = []
    for p in out["passages"]:
        low = " · low relevance" if p["low_relevance"] else ""
        segs.append((f"[{p['rank']}] {_meta(p)} · score {p['score']:.3f}{low}\n", "source"))
        text, start = p["text"], p["char_start"]
        span, label = None, None
        if a and a["doc_id"] == p["doc_id"]:
            i, j = max(a["char_start"], start), min(a["char_end"], p["char_end"])
            if i < j:
                span, label = (i - start, j - start), "answer"
        if span is None:
            local = [(x - start, y - start) for x, y in sentences_of(p["doc_id"], start, p["char_end"])
                     if x >= start and y <= p["char_end"]]
            found = best_sentence(question, text, local)
            if found:
                span, label = found, "best match"
        if span:
            segs += [(text[:span[0]], None), (text[span[0]:span[1]], label), (text[span[1]:], None)]
        else:
            segs.append((text, None))
        segs.append(("\n\n", None))
    return [(t, l) for t, l in segs if t]


def article_segments(article, out: dict, rank: int) -> list[tuple[str, Optional[str]]]:
    """HighlightedText value of a whole article, the cited passage of `rank` highlighted and the
    answer snippet inside it labelled "answer"."""
    p = next((p for p in out["passages"] if p["rank"] == rank), None)
    text = article.text
    head = (f"{article.title or article.doc_id}\n{article.source or 'source unknown'} · "
            f"{article.date or 'undated'} · {article.doc_id}\n\n")
    segs: list[tuple[str, Optional[str]]] = [(head, "source")]
    if p is None:
        return segs + [(text, None)]
    cuts = [(p["char_start"], p["char_end"], "cited passage")]
    a = out.get("answer")
    if a and a["doc_id"] == article.doc_id and p["char_start"] <= a["char_start"] < a["char_end"] <= p["char_end"]:
        cuts = [(p["char_start"], a["char_start"], "cited passage"),
                (a["char_start"], a["char_end"], "answer"),
                (a["char_end"], p["char_end"], "cited passage")]
    pos = 0
    for s, t, label in cuts:
        segs += [(text[pos:s], None), (text[s:t], label)]
        pos = t
    segs.append((text[pos:], None))
    return [(t, l) for t, l in segs if t]


def example_questions(articles: dict, limit: int = 6) -> list[str]:
    """Example questions for the articles in the index: the curated ones in
    qa/static/examples.json, else one built from each article's title."""
    try:
        curated = json.loads((STATIC / "examples.json").read_text())
    except (OSError, ValueError):
        curated = {}
    out: list[str] = []
    for doc_id, article in articles.items():
        qs = curated.get(doc_id) if isinstance(curated.get(doc_id), list) else None
        if qs:
            out += [q for q in qs if isinstance(q, str)]
        elif article.title:
            out.append(f"What does the article “{_clip(article.title, 80)}” report?")
    return out[:limit]


def parse_date(value: str | None, name: str) -> str | None:
    """A YYYY-MM-DD filter value, or None when empty.

    Raises:
        UserError: not a calendar date.
    """
    value = (value or "").strip()
    if not value:
        return None
    try:
        if not DATE.match(value):
            raise ValueError
        datetime.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{name} {value!r} is not a date; use YYYY-MM-DD, e.g. 2021-06-30") from None
    return value


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


# ---------------------------------------------------------------- concurrency

class Busy(Exception):
    """Every answering slot is taken and the waiting line is full."""


class Gate:
    """At most `running` questions at once, at most `waiting` more waiting for a slot."""

    def __init__(self, running: int, waiting: int, timeout: float):
        self._slots = threading.BoundedSemaphore(running)
        self._lock = threading.Lock()
        self._waiting = 0
        self.max_waiting = waiting
        self.timeout = timeout

    @contextmanager
    def enter(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.max_waiting:
                    raise Busy
                self._waiting += 1
            try:
                acquired = self._slots.acquire(timeout=self.timeout)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not acquired:
                raise Busy
        try:
            yield
        finally:
            self._slots.release()


# ---------------------------------------------------------------- the page

CSS = """
.qa-msg p { margin: 0.25em 0; }
.qa-label { font-weight: 700; text-transform: uppercase; font-size: 0.8em; letter-spacing: 0.05em; }
.qa-label-answer { color: #15803d; }
.qa-label-notfound { color: #b45309; }
.qa-answer { border-left: 4px solid #16a34a; padding-left: 0.6em; }
.qa-notfound { border-left: 4px dashed #d97706; padding-left: 0.6em; opacity: 0.95; }
.qa-closest { font-size: 0.9em; color: #57534e; }
.qa-marks { font-weight: 700; color: #1d4ed8; }
.qa-read-as, .qa-notice, .qa-cite { font-size: 0.85em; color: #57534e; }
.qa-status { padding: 0.5em 0.8em; border-radius: 6px; background: #f1f5f9; }
.qa-status-answer { background: #dcfce7; color: #14532d; }
.qa-status-notfound { background: #fef3c7; color: #78350f; border: 1px dashed #d97706; }
/* Read passages and articles as running text, not as a wrap of boxes. */
.qa-text .textfield { display: block !important; word-break: normal !important;
                      overflow-wrap: anywhere; line-height: 1.6; }
.qa-text .token-container { display: inline; }
.qa-text .line-break { display: block; }
.qa-text .token.highlighted { margin-left: 0 !important; margin-right: 0 !important; }
"""

COLORS = {"answer": "#fde047", "best match": "#bfdbfe", "cited passage": "#d9f99d",
          "source": "#e5e7eb"}


def build_demo(engine, config: WebConfig | None = None):
    """The Gradio Blocks of the page, wired to a loaded engine (qa.engine.QA).

    Args:
        engine: the loaded QA.
        config: concurrency limits (the Gradio queue).

    Returns:
        gr.Blocks with a queue; its API has one public endpoint, "/ask".
    """
    config = config or WebConfig()
    index = engine.index
    by_span = {(p.doc_id, p.char_start, p.char_end): p for p in index.passages}
    sources = sorted({a.source for a in index.articles.values() if a.source})
    settings = engine.settings

    def sentences_of(doc_id: str, start: int, end: int) -> list[tuple[int, int]]:
        p = by_span.get((doc_id, start, end))
        return list(p.sentences) if p else []

    def run(question, k, retriever, source, since, until, history) -> dict:
        filters = Filters(source=None if source in (None, "", ANY_SOURCE) else source,
                          since=parse_date(since, "since"), until=parse_date(until, "until"))
        result = engine.ask(question, k=int(k), retriever=retriever, filters=filters,
                            history=list(history or []))
        return engine.to_json(result)

    def on_ask(question, chat, asked, retriever, k, source, since, until):
        try:
            out = run(question, k, retriever, source, since, until, asked)
        except UserError as e:
            raise gr.Error(str(e)) from None
        chat = list(chat or []) + [
            {"role": "user", "content": html.escape(out["question"])},
            {"role": "assistant", "content": answer_html(out)}]
        asked = list(asked or []) + [out.get("resolved_question") or out["question"]]
        choices = [(f"[{p['rank']}] {p['title'] or p['doc_id']}", p["rank"]) for p in out["passages"]]
        rank = out["answer"]["passage_rank"] if out["answer"] else None
        article = (article_segments(index.articles[out["answer"]["doc_id"]], out, rank)
                   if rank else [])
        return ("", chat, asked[-MAX_HISTORY:], out, status_html(out), source_rows(out),
                passage_segments(out, sentences_of), gr.update(choices=choices, value=rank),
                article)

    def on_open(rank, out):
        if not out or rank in (None, ""):
            return []
        p = next((p for p in out["passages"] if p["rank"] == int(rank)), None)
        return article_segments(index.articles[p["doc_id"]], out, int(rank)) if p else []

    def on_row(out, evt: gr.SelectData):
        if not out:
            return gr.update(), []
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(out["passages"]):
            return gr.update(), []
        rank = out["passages"][row]["rank"]
        return gr.update(value=rank), on_open(rank, out)

    def on_clear():
        return ("", [], [], None, status_html(None), [], [], gr.update(choices=[], value=None), [])

    def ask(question: str, k: int = settings.k, retriever: str = settings.retriever,
            history: list[str] | None = None, source: str = "", since: str = "",
            until: str = "") -> dict:
        """Answer a question from the articles; returns the JSON object of `qa ask --json`."""
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= API_MAX_K:
            raise gr.Error(f"k must be a whole number from 1 to {API_MAX_K}, got {k!r}")
        try:
            return run(question, k, retriever, source, since, until, history)
        except UserError as e:
            raise gr.Error(str(e)) from None

    m = index.manifest
    with gr.Blocks(title="Ask the articles") as demo:
        gr.Markdown("## Ask the articles\nAnswers are quoted from the articles, with their sources. "
                    "Follow-up questions such as *And Dongguan?* use the previous question.")
        gr.Markdown(f"Index: {m.get('documents', len(index.articles))} articles, "
                    f"{m.get('passages', len(index.passages))} passages, built "
                    f"{html.escape(str(m.get('built_at', '?')))}.", elem_id="index-info")
        asked = gr.State([])
        last = gr.State(None)
        with gr.Row():
            with gr.Column(scale=5):
                chat = gr.Chatbot(label="Conversation", elem_id="chat", height=480,
                                  render_markdown=False, sanitize_html=True, line_breaks=False,
                                  feedback_options=None,
                                  placeholder="Ask a question about the articles.")
                question = gr.Textbox(label="Question", elem_id="question", lines=1, max_lines=4,
                                      max_length=10_000,
                                      placeholder="e.g. When did Dongguan apply to become a "
                                                  "national innovative city?")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("New conversation", elem_id="clear")
                gr.Examples([[q] for q in example_questions(index.articles)], inputs=[question],
                            label="Example questions")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    with gr.Row():
                        retriever = gr.Dropdown(list(RETRIEVERS), value=settings.retriever,
                                                label="Retriever", elem_id="retriever")
                        k = gr.Slider(1, UI_MAX_K, value=min(settings.k, UI_MAX_K), step=1,
                                      label="Passages", elem_id="k")
                    with gr.Row():
                        source = gr.Dropdown([ANY_SOURCE] + sources, value=ANY_SOURCE,
                                             label="Source", elem_id="source")
                        since = gr.Textbox(label="Published on or after (YYYY-MM-DD)",
                                           elem_id="since", max_length=10)
                        until = gr.Textbox(label="Published on or before (YYYY-MM-DD)",
                                           elem_id="until", max_length=10)
            with gr.Column(scale=4):
                status = gr.HTML(status_html(None), elem_id="status")
                table = gr.Dataframe(headers=["#", "title", "source", "date", "score", "relevance"],
                                     datatype=["number", "str", "str", "str", "number", "str"],
                                     interactive=False, wrap=True, label="Sources (click to open)",
                                     column_widths=["6%", "36%", "18%", "14%", "12%", "14%"],
                                     elem_id="sources")
                passages = gr.HighlightedText(label="Passages", elem_id="passages", elem_classes=["qa-text"],
                                              color_map=COLORS, show_legend=True,
                                              show_inline_category=False, combine_adjacent=False)
        with gr.Row():
            with gr.Column():
                opened = gr.Dropdown([], value=None, label="Open a source", elem_id="open",
                                     interactive=True)
                article = gr.HighlightedText(label="Article", elem_id="article", elem_classes=["qa-text"], color_map=COLORS,
                                             show_legend=True, show_inline_category=False,
                                             combine_adjacent=False)

        inputs = [question, chat, asked, retriever, k, source, since, until]
        outputs = [question, chat, asked, last, status, table, passages, opened, article]
        send.click(on_ask, inputs, outputs, api_visibility="private")
        question.submit(on_ask, inputs, outputs, api_visibility="private")
        clear.click(on_clear, None, outputs, api_visibility="private")
        opened.input(on_open, [opened, last], article, api_visibility="private")
        table.select(on_row, [last], [opened, article], api_visibility="private")
        gr.api(ask, api_name="ask")
    demo.queue(default_concurrency_limit=config.max_running, max_size=config.queue_size)
    return demo


# ---------------------------------------------------------------- the app

class AskBody(BaseModel):
    """The JSON body of POST /api/ask; GET /api/ask takes the same fields as query parameters."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"question": "When did Dongguan apply to become a national innovative city?",
                      "k": 5, "retriever": "hybrid"}]})
    question: str = Field(description="the question, plain language", max_length=100_000)
    k: Optional[int] = Field(None, ge=1, le=API_MAX_K, description="passages to return")
    retriever: Optional[Literal["dense", "bm25", "hybrid"]] = None
    history: Optional[list[str]] = Field(None, max_length=MAX_HISTORY,
                                         description="earlier questions, oldest first")
    source: Optional[str] = Field(None, description="only articles from this source")
    since: Optional[str] = Field(None, description="only articles published on or after (YYYY-MM-DD)")
    until: Optional[str] = Field(None, description="only articles published on or before (YYYY-MM-DD)")
    doc: Optional[str] = Field(None, description="only this article (doc_id)")



def create_app(engine, config: WebConfig | None = None):
    """The FastAPI app serving the page at /, the JSON API at /api/ask, and the embed helpers.

    Args:
        engine: the loaded QA.
        config: login, embedding origins and concurrency limits.

    Returns:
        A FastAPI (ASGI) app; run it with uvicorn.
    """
    config = config or WebConfig()
    gate = Gate(config.max_running, config.max_waiting, config.wait_seconds)
    users = dict(config.users)
    app = FastAPI(
        # No Swagger/ReDoc pages: they load their scripts from a CDN and would be blank offline.
        docs_url=None, redoc_url=None,
        title="qa: ask the articles", version=__version__,
        description="Questions answered from a folder of news articles, with exact citations. "
                    "`/api/ask` returns the object that `qa ask --json` prints; errors are "
                    "`{\"error\": message}` with a 4xx status (503 when busy). The page is at `/`.")

    # --- policy: embedding origins, security headers, body size
    origins = config.allowed_origins
    if "*" in origins:
        app.add_middleware(CORSMiddleware, allow_origin_regex=".*", allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
        frame_ancestors = "*"
    elif origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
        frame_ancestors = " ".join(("'self'",) + origins)
    else:
        app.add_middleware(CORSMiddleware, allow_origin_regex=LOCAL_ORIGINS, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
        frame_ancestors = " ".join(("'self'",) + LOCAL_FRAME_ANCESTORS)

    @app.middleware("http")
    async def policy(request: Request, call_next):
        if "\x00" in request.url.path:  # no file has one; Gradio's proxy route fails with a 500
            return JSONResponse({"error": "the path contains a NUL character"}, status_code=400)
        if request.url.path.startswith("/api/") and request.method not in STANDARD_METHODS:
            return JSONResponse({"error": f"method {request.method[:20]} is not allowed; use GET "
                                          f"or POST"}, status_code=405, headers={"Allow": "GET, POST"})
        if request.url.path.startswith("/api/"):
            size = request.headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
                return JSONResponse({"error": f"the request body is larger than {MAX_BODY_BYTES:,} "
                                              f"bytes; send only the question and its options"},
                                    status_code=413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = f"frame-ancestors {frame_ancestors}"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    # --- errors: always JSON with a message that says what to do
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse({"error": "the body is not valid JSON; send an object such as "
                                          "{\"question\": \"When did Dongguan apply?\", \"k\": 5}"},
                                status_code=400)
        details = [{"field": ".".join(str(x) for x in err.get("loc", ())[1:]) or "body",
                    "problem": err.get("msg", "invalid"), "type": err.get("type", "")}
                   for err in errors]
        message = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
        return JSONResponse({"error": f"invalid request: {message}", "details": details},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    # --- login: HTTP Basic, or the session cookie of the page's login form
    basic = HTTPBasic(auto_error=False)

    def require_user(request: Request, creds: Optional[HTTPBasicCredentials] = Depends(basic)):
        if not users:
            return None
        if creds is not None:
            password = users.get(creds.username)
            if password is not None and secrets.compare_digest(password.encode(),
                                                               creds.password.encode()):
                return creds.username
        gapp = getattr(app.state, "gradio_app", None)
        if gapp is not None:
            for name in (f"access-token-{gapp.cookie_id}", f"access-token-unsecure-{gapp.cookie_id}"):
                token = request.cookies.get(name)
                if token and token in gapp.tokens:
                    return gapp.tokens[token]
        raise HTTPException(401, "login required: send HTTP Basic credentials (curl -u user:pass) "
                                 "or log in on the page first", headers={"WWW-Authenticate": "Basic"})

    # --- the JSON API
    def answer(body: AskBody) -> JSONResponse:
        try:
            filters = Filters(source=body.source or None, since=parse_date(body.since, "since"),
                              until=parse_date(body.until, "until"), doc=body.doc or None)
            with gate.enter():
                result = engine.ask(body.question, k=body.k, retriever=body.retriever,
                                    filters=filters, history=body.history)
                return JSONResponse(engine.to_json(result))
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=422)
        except Busy:
            return JSONResponse({"error": "the server is busy answering other questions; retry "
                                          "in a few seconds"}, status_code=503,
                                headers={"Retry-After": "2"})
        except Exception as e:  # never a bare 500 page: say what failed, in JSON
            log.exception("answering %r failed", body.question[:200])
            return JSONResponse({"error": f"internal error while answering ({type(e).__name__}); "
                                          f"the server log has the details"}, status_code=500)

    responses = {400: {"description": "malformed JSON"}, 401: {"description": "login required"},
                 413: {"description": "body too large"},
                 422: {"description": "invalid question, k, retriever or filter"},
                 503: {"description": "busy; retry later"}}

    @app.get("/api/ask", responses=responses, summary="Answer a question (query parameters)")
    def ask_get(question: str = Query(description="the question", max_length=100_000),
                k: Optional[int] = Query(None, ge=1, le=API_MAX_K),
                retriever: Optional[Literal["dense", "bm25", "hybrid"]] = None,
                history: Optional[list[str]] = Query(None, max_length=MAX_HISTORY),
                source: Optional[str] = None, since: Optional[str] = None,
                until: Optional[str] = None, doc: Optional[str] = None,
                user=Depends(require_user)):
        return answer(AskBody.model_construct(question=question, k=k, retriever=retriever,
                                              history=history, source=source, since=since,
                                              until=until, doc=doc))

    @app.post("/api/ask", responses=responses, summary="Answer a question (JSON body)")
    def ask_post(body: AskBody, user=Depends(require_user)):
        return answer(body)

    @app.get("/api/health", summary="Index and model the server answers from",
             responses={401: {"description": "login required"}})
    def health(user=Depends(require_user)):
        m = engine.index.manifest
        return {"status": "ok", "documents": len(engine.index.articles),
                "passages": len(engine.index.passages), "model": m.get("model"),
                "built_at": m.get("built_at"), "stale": bool(engine.index.stale)}

    # Every other method gets a JSON 405, not the page's 404 (CORS preflights never reach here).
    other = ["PUT", "PATCH", "DELETE", "TRACE", "OPTIONS"]

    @app.api_route("/api/ask", methods=other, include_in_schema=False)
    def wrong_method():
        raise HTTPException(405, "use GET /api/ask?question=... or POST /api/ask with a JSON body",
                            headers={"Allow": "GET, POST"})

    @app.api_route("/api/health", methods=["POST", *other], include_in_schema=False)
    def wrong_method_health():
        raise HTTPException(405, "use GET /api/health", headers={"Allow": "GET"})

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", *other],
                   include_in_schema=False)
    def unknown(rest: str):
        raise HTTPException(404, f"no API route /api/{rest}; see /openapi.json")

    # --- embedding helpers: Gradio's web component loader, and the example page
    frontend = Path(gr.__file__).parent / "templates" / "frontend"

    @app.get("/gradio.js", include_in_schema=False)
    def gradio_js():
        # A one-line loader importing ./assets/index-<hash>.js, which Gradio serves at /assets/.
        return FileResponse(frontend / "gradio.js", media_type="text/javascript")

    @app.get("/embed.html", include_in_schema=False)
    def embed_page(request: Request):
        if not EMBED_PAGE.is_file():
            raise HTTPException(404, "examples/embed.html is not installed with this copy of qa")
        base = str(request.base_url).rstrip("/")
        return HTMLResponse(EMBED_PAGE.read_text(encoding="utf-8").replace(EMBED_DEFAULT_URL, base))

    demo = build_demo(engine, config)
    app = gr.mount_gradio_app(app, demo, path="/", auth=list(config.users) or None,
                              auth_message="Log in to ask the articles." if users else None,
                              ssr_mode=False, css=CSS, footer_links=["api"])
    app.state.demo = demo
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "":
            app.state.gradio_app = route.app
    return app


def __getattr__(name: str):
    """`qa.web.demo`: the page on the default index, built on first use (for `gradio qa/web.py`)."""
    if name == "demo":
        demo = build_demo(open_or_build(default_settings()))
        globals()["demo"] = demo
        return demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- launcher

def main(argv: list[str] | None = None) -> int:
    """`python app.py [--host H] [--port P] [--index DIR] [--auth user:pass] ...`; returns the exit code."""
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
        settings = default_settings(index_dir=args.index)
        engine = open_or_build(settings, args.sources, rebuild=args.rebuild,
                               progress=not args.quiet)
        if engine.index.stale:
            _say(f"warning: {settings.index_dir}/ is older than its articles")
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
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); another program may "
                            f"use it: pass --port with a free port, e.g. --port {port + 1}") from None


if __name__ == "__main__":
    sys.exit(main())
