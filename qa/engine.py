"""The Python API: load an index once, then ask many questions.

    >>> from qa.engine import QA
    >>> qa = QA.open()                       # index/ and the default model
    >>> result = qa.ask("When was Dongguan's application approved?")
    >>> result.answer.doc_id, result.answer.text.startswith("In April 2018")
    ('003_fa579be8430ff762', True)
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from .answer import Calibration, Picker
from .followup import resolve
from .retrieve import Filters, Retriever
from .settings import MAX_QUESTION_CHARS, RETRIEVERS, Settings, UserError, default_settings
from .store import Index, load
from .types import Answer, Hit, Result

MAX_K = 1000


class QA:
    """A loaded index and model, ready for questions."""

    def __init__(self, index: Index, encoder, settings: Settings, reader=None):
        self.index = index
        self.encoder = encoder
        self.settings = settings
        self.retriever = Retriever(index, encoder)
        self.calibration = Calibration.from_manifest(index.manifest)
        self.picker = Picker(index, self.calibration, reader)

    @classmethod
    def open(cls, settings: Settings | None = None, *, check_model: bool = False) -> QA:
        """Load settings.index_dir with the model it was built with.

        Args:
            settings: paths and defaults; from the environment when None.
            check_model: refuse an index built with another model than settings.model
                (set when the user chose a model explicitly).
        """
        from .embed import load_encoder

        from .reader import open_reader

        settings = settings or default_settings()
        index = load(settings.index_dir, settings.model if check_model else None)
        return cls(index, load_encoder(index.model), settings, open_reader(settings.reader))

    def ask(self, question: str, *, k: int | None = None, retriever: str | None = None,
            filters: Filters | None = None, history: list[str] | None = None) -> Result:
        """Answer one question.

        Args:
            question: plain-language question; at most 10,000 characters are read.
            k: passages to return (1..1000); default from settings.
            retriever: "dense", "bm25" or "hybrid"; default from settings.
            filters: restrict to some articles.
            history: earlier questions of the conversation, oldest first, to resolve
                follow-ups such as "And Dongguan?".

        Raises:
            UserError: an empty question, k out of range or an unknown retriever.
        """
        question, notices = clean_question(question)
        k = self.settings.k if k is None else k
        method = retriever or self.settings.retriever
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise UserError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
        if method not in RETRIEVERS:
            raise UserError(f"unknown retriever {method!r}; use one of {', '.join(RETRIEVERS)}")
        resolved = resolve(question, history or [])
        qvec = self.encoder.encode([resolved])[0]
        # The answer picker re-orders the top passages, so fetch at least that many.
        hits = self.retriever.search(resolved, k=max(k, self.calibration.passages), method=method,
                                     filters=filters, qvec=qvec)
        if not hits:
            return Result(question, (), None, True, 0.0, resolved, tuple(notices))
        picked = self.picker.pick(resolved, qvec, hits)
        abstained = picked.answer is None or picked.confidence < self.picker.threshold
        return Result(question, picked.hits[:k], None if abstained else picked.answer, abstained,
                      round(picked.confidence, 4), resolved, tuple(notices))

    def to_json(self, result: Result) -> dict:
        """The stable JSON object of `qa ask --json` and the HTTP API."""
        out = {
            "question": result.question,
            "passages": [self.hit_json(h, low_relevance=result.abstained) for h in result.hits],
            "answer": self.answer_json(result.answer) if result.answer else None,
            "abstained": result.abstained,
            "confidence": result.confidence,
        }
        if result.resolved_question and result.resolved_question != result.question:
            out["resolved_question"] = result.resolved_question
        if result.notices:
            out["notices"] = list(result.notices)
        return out

    def hit_json(self, hit: Hit, low_relevance: bool = False) -> dict:
        a = self.index.articles[hit.passage.doc_id]
        return {"rank": hit.rank, "score": round(hit.score, 6), "doc_id": a.doc_id,
                "title": a.title, "date": a.date, "source": a.source,
                "char_start": hit.passage.char_start, "char_end": hit.passage.char_end,
                "text": hit.passage.text, "low_relevance": low_relevance}

    def answer_json(self, answer: Answer) -> dict:
        a = self.index.articles[answer.doc_id]
        out = {"text": answer.text, "doc_id": a.doc_id, "title": a.title, "date": a.date,
               "source": a.source, "char_start": answer.char_start, "char_end": answer.char_end,
               "passage_rank": answer.passage_rank, "confidence": answer.confidence,
               "highlight": None}
        if answer.highlight:
            out["highlight"] = {"char_start": answer.highlight[0], "char_end": answer.highlight[1],
                                "text": a.text[answer.highlight[0]:answer.highlight[1]]}
        return out


def clean_question(question: str) -> tuple[str, list[str]]:
    """Strip control characters, refuse an empty question, cut an over-long one (with a notice).

    >>> clean_question("  When?\\x00 ")
    ('When?', [])
    """
    if not isinstance(question, str):
        raise UserError(f"the question must be text, got {type(question).__name__}")
    notices: list[str] = []
    text = "".join(ch if unicodedata.category(ch)[0] != "C" or ch in "\t\n" else " "
                   for ch in question[:MAX_QUESTION_CHARS * 2]).strip()
    if not text:
        raise UserError("the question is empty; ask something, e.g. "
                        "qa ask \"When did Dongguan apply to become an innovative city?\"")
    if len(question) > MAX_QUESTION_CHARS:
        text = text[:MAX_QUESTION_CHARS]
        notices.append(f"the question was {len(question):,} characters; only the first "
                       f"{MAX_QUESTION_CHARS:,} were read")
    return " ".join(text.split()), notices


def open_index(index_dir: Path | str | None = None, **settings) -> QA:
    """Shorthand: QA.open(default_settings(index_dir=..., ...))."""
    return QA.open(default_settings(index_dir=Path(index_dir) if index_dir else None, **settings))
