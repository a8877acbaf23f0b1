"""Rendering for the page: one `QA.to_json` result -> chat HTML from escaped text, the sources
table, and HighlightedText values for passages and articles. Pure functions, no Gradio."""

from __future__ import annotations

import html
import json
from typing import Optional

from .config import STATIC

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
/* Words break only between words: a narrow table scrolls sideways instead of breaking
   "source" into "sour/ce". A word longer than the whole line (a URL) may still be cut. */
.gradio-container, .gradio-container * { word-break: normal !important; hyphens: manual; }
.gradio-container { overflow-wrap: break-word; }
#sources, #sources * { font-family: var(--font) !important; overflow-wrap: normal !important; }
/* Rank, date and relevance on one line; title and source wrap between words. */
#sources [role=columnheader], #sources [role=columnheader] *,
#sources [role=gridcell]:is([data-col="0"], [data-col="3"], [data-col="4"]),
#sources [role=gridcell]:is([data-col="0"], [data-col="3"], [data-col="4"]) * {
  white-space: nowrap !important; }
/* Read passages and articles as running text, not as a wrap of boxes. */
.qa-text .textfield { display: block !important; word-break: normal !important;
                      overflow-wrap: break-word; line-height: 1.6; }
.qa-text .token-container { display: inline; }
.qa-text .line-break { display: block; }
.qa-text .token.highlighted { margin-left: 0 !important; margin-right: 0 !important; }
"""

# One font for the whole page, from the fonts the machine has: Gradio's default theme draws
# headings and buttons in a bundled font that lacks some glyphs (the "A" of "Ask" came out in a
# fallback) and the sources table in a monospace one.
FONT = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "Noto Sans", "Liberation Sans",
        "DejaVu Sans", "Noto Sans CJK SC", "sans-serif")

COLORS = {"answer": "#fde047", "best match": "#bfdbfe", "cited passage": "#d9f99d",
          "source": "#e5e7eb"}


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
    """Title — source, date; a field the article does not state is left out, not "unknown".

    >>> _meta({"doc_id": "d", "title": "T", "source": "", "date": "2021-05-18T09:00"})
    'T — 2021-05-18'
    >>> _meta({"doc_id": "d", "title": "", "source": "", "date": ""})
    'd'
    """
    known = ", ".join(x for x in (item.get("source") or "", (item.get("date") or "")[:10]) if x)
    title = item.get("title") or item["doc_id"]
    return f"{title} — {known}" if known else title


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
    if out.get("reply"):
        parts.append(f'<p class="qa-reply">{e(out["reply"])}</p>')
        kind = "qa-reply-msg"
    elif a:
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
                            f'(low relevance)</li>' for p in out["passages"])
            parts.append(f'<ul class="qa-closest">{items}</ul>')
        else:
            parts.append("<p>No passage matched the question and the filters.</p>")
        kind = "qa-notfound"
    return f'<div class="qa-msg {kind}">{"".join(parts)}</div>'


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


def status_html(out: dict | None) -> str:
    """The banner above the sources: answered, or not in the articles (and why, when an answer
    was withheld)."""
    if out is None or out.get("reply"):
        return '<div class="qa-status">Ask a question about the articles.</div>'
    if out.get("answer"):
        return (f'<div class="qa-status qa-status-answer">Answered from the articles · '
                f'confidence {out["confidence"]:.2f} · {len(out["passages"])} passages</div>')
    why = f' · {html.escape(out["withheld"])}' if out.get("withheld") else ""
    return (f'<div class="qa-status qa-status-notfound">Not in the articles{why} · the closest '
            f'{len(out["passages"])} passages are listed below as low relevance</div>')


def hint_html(message: str) -> str:
    """A hint in place of the status banner, for a question that could not be asked."""
    return f'<div class="qa-status qa-hint" role="alert">{html.escape(message)}</div>'


SOURCE_HEADERS = ["#", "title", "source", "date", "relevance"]
CITED_ROW = "background-color: #dcfce7; font-weight: 600;"
UNKNOWN = "unknown"
MISSING = "color: #78716c; font-style: italic;"


def relevance(p: dict, cited: set[int]) -> str:
    """What the sources table says of a passage's relevance, in words.

    The retrieval scores are rescaled per question (the best passage always scores about 1), so
    a number would read 1.000, 0.999 on every row and compare nothing across questions. The rank
    says the order; this says what a reader needs besides: which rows the answer quotes, and
    that all of them are weak when the articles do not answer.

    >>> relevance({"rank": 1, "low_relevance": False}, {1}), relevance({"rank": 2, "low_relevance": True}, set())
    ('cited', 'low')
    """
    if p["low_relevance"]:
        return "low"
    return "cited" if p["rank"] in cited else ""


def source_rows(out: dict) -> dict:
    """The sources table's value: rank, title, source, date and relevance in words, with the
    rows the answer cites marked (a green background and bold). A field the article does not
    state reads "unknown", in grey italics, so a blank cell never looks like a rendering fault.

    >>> t = source_rows({"answer": None, "passages": [{"rank": 1, "doc_id": "d", "title": "T",
    ...     "source": "", "date": "2021-05-18T09:00", "low_relevance": True}]})
    >>> t["data"], t["metadata"]["styling"]
    ([[1, 'T', 'unknown', '2021-05-18', 'low']], [['', '', 'color: #78716c; font-style: italic;', '', '']])
    """
    cited = set(citations(out))
    data = [[p["rank"], p["title"] or p["doc_id"], p["source"] or UNKNOWN,
             (p["date"] or "")[:10] or UNKNOWN, relevance(p, cited)] for p in out["passages"]]
    styling = [[(CITED_ROW if p["rank"] in cited else "") + (MISSING if v == UNKNOWN and c in (2, 3)
                                                             else "")
                for c, v in enumerate(row)] for p, row in zip(out["passages"], data)]
    return {"headers": SOURCE_HEADERS, "data": data,
            "metadata": {"display_value": [[str(v) for v in row] for row in data],
                         "styling": styling}}


def passage_segments(out: dict, sentences: list[tuple[int, int] | None]) -> list[tuple[str, Optional[str]]]:
    """HighlightedText value listing every passage with its header; the answer sentence is
    labelled "answer", elsewhere the answer picker's best sentence is labelled "best match".

    Args:
        out: a `QA.to_json` result.
        sentences: per passage of `out`, the picker's best sentence in article offsets
            (`Result.sentences`), or None.

    >>> out = {"answer": None, "passages": [{"rank": 1, "doc_id": "d", "title": "T", "source": "",
    ...        "date": "", "score": .5, "low_relevance": True, "char_start": 10, "char_end": 30,
    ...        "text": "One two. Three four."}]}
    >>> [s for s in passage_segments(out, [(19, 30)]) if s[1] == "best match"]
    [('Three four.', 'best match')]
    """
    a = out.get("answer")
    segs: list[tuple[str, Optional[str]]] = []
    for i, p in enumerate(out["passages"]):
        low = " · low relevance" if p["low_relevance"] else ""
        segs.append((f"[{p['rank']}] {_meta(p)}{low}\n", "source"))
        text, start = p["text"], p["char_start"]
        span, label = None, None
        if a and a["doc_id"] == p["doc_id"]:
            i_, j_ = max(a["char_start"], start), min(a["char_end"], p["char_end"])
            if i_ < j_:
                span, label = (i_ - start, j_ - start), "answer"
        best = sentences[i] if i < len(sentences) else None
        if span is None and best and start <= best[0] < best[1] <= p["char_end"]:
            span, label = (best[0] - start, best[1] - start), "best match"
        if span:
            segs += [(text[:span[0]], None), (text[span[0]:span[1]], label), (text[span[1]:], None)]
        else:
            segs.append((text, None))
        segs.append(("\n\n", None))
    return [(text, label) for text, label in segs if text]


def article_segments(article, out: dict, rank: int) -> list[tuple[str, Optional[str]]]:
    """HighlightedText value of a whole article, the cited passage of `rank` highlighted and the
    answer snippet inside it labelled "answer"."""
    p = next((p for p in out["passages"] if p["rank"] == rank), None)
    text = article.text
    known = " · ".join(x for x in (article.source, article.date, article.doc_id) if x)
    head = f"{article.title or article.doc_id}\n{known}\n\n"
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
    return [(text, label) for text, label in segs if text]


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
