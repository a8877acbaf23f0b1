"""The records that flow between the pipeline stages: Article, Passage, Hit, Answer."""

from __future__ import annotations

from dataclasses import dataclass, field

Span = tuple[int, int]


@dataclass(frozen=True)
class Article:
    """One source document, with its text exactly as read and where its body lies in it.

    `text` is the file's decoded text (for HTML, the text trafilatura extracted; for jsonl, the
    `text` field); every offset in the product indexes into it. `body` lists the spans of the
    paragraphs that are article content, with boilerplate (bylines, crumbs, credits) left out.
    """

    doc_id: str
    text: str
    title: str = ""
    date: str = ""
    source: str = ""
    author: str = ""
    path: str = ""
    body: tuple[Span, ...] = ()

    def meta(self) -> dict:
        return {"doc_id": self.doc_id, "title": self.title, "date": self.date,
                "source": self.source, "author": self.author}


@dataclass(frozen=True)
class Passage:
    """A verbatim span of an article: `text == article.text[char_start:char_end]`.

    `sentences` are the article offsets of the sentences the passage is made of.
    """

    pid: int
    doc_id: str
    char_start: int
    char_end: int
    text: str
    sentences: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Hit:
    """A passage returned for a question, with its score and 1-based rank."""

    passage: Passage
    score: float
    rank: int


@dataclass(frozen=True)
class Answer:
    """A verbatim answer snippet with its citation.

    `highlight` is the span of the asked-for entity (a number, date, name) inside the snippet,
    in article offsets, when one was found.
    """

    text: str
    doc_id: str
    char_start: int
    char_end: int
    passage_rank: int
    confidence: float
    highlight: Span | None = None


@dataclass(frozen=True)
class Result:
    """Everything one question produced: ranked hits, the answer or an abstention."""

    question: str
    hits: tuple[Hit, ...]
    answer: Answer | None
    abstained: bool
    confidence: float = 0.0
    resolved_question: str = ""
    notices: tuple[str, ...] = field(default_factory=tuple)
    # The answer picker's best sentence of each hit (article offsets), None where it read none.
    sentences: tuple[Span | None, ...] = field(default_factory=tuple)
    # qa.intent's kind of message; chit-chat and other languages get `reply` and no retrieval.
    kind: str = "question"
    reply: str = ""
