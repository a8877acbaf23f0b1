"""The records that flow between the pipeline stages: Article, Passage, Hit, Answer, Result, and
the fitted linear models (Linear) the answer picker and the reader are calibrated with."""

from __future__ import annotations

from collections.abc import Mapping
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
    # Why the picker's answer was withheld whatever its confidence (qa.answer's rules: year_clash,
    # no_year_named, no_shared_word), or "".
    withheld: str = ""


@dataclass(frozen=True)
class Linear:
    """A fitted linear model over named features: bias + sum(weight * feature), in `features`
    order. The answer picker's sentence and confidence models and the reader's confidence are
    stored as JSON {"bias": b, "weights": {name: w}} and read into one of these.

    >>> m = Linear.from_json({"bias": 1.0, "weights": {"a": 2.0, "b": -1.0}}, ("a", "b"))
    >>> m.score({"a": 0.5, "b": 3.0})
    -1.0
    """

    bias: float
    features: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        assert len(self.features) == len(self.weights), (self.features, self.weights)

    @classmethod
    def from_json(cls, data: object, features: tuple[str, ...]) -> Linear:
        """The model of a parsed {"bias", "weights"} block with a weight for every feature.

        Raises:
            ValueError: what is missing or of the wrong type, named.
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected an object with 'bias' and 'weights', got {type(data).__name__}")
        bias, weights = data.get("bias"), data.get("weights")
        if not isinstance(bias, (int, float)) or isinstance(bias, bool):
            raise ValueError(f"'bias' must be a number, got {bias!r}")
        if not isinstance(weights, dict):
            raise ValueError(f"'weights' must map feature names to numbers, got {weights!r}")
        missing = [f for f in features if f not in weights]
        if missing:
            raise ValueError(f"'weights' lacks {', '.join(missing)}")
        bad = [f for f in features if not _is_number(weights[f])]
        if bad:
            raise ValueError(f"the weight of {bad[0]} must be a number, got {weights[bad[0]]!r}")
        return cls(float(bias), tuple(features), tuple(float(weights[f]) for f in features))

    def to_json(self) -> dict:
        return {"bias": self.bias, "weights": dict(zip(self.features, self.weights))}

    def weight(self, feature: str) -> float:
        return self.weights[self.features.index(feature)]

    def score(self, values: Mapping[str, float]) -> float:
        """bias + sum(weight * values[feature]); every feature must be in `values`."""
        return self.bias + sum(w * values[f] for f, w in zip(self.features, self.weights))


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
