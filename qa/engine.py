"""The Python API: load an index once, then ask many questions.

    >>> from qa.engine import QA
    >>> qa = QA.open()                       # index/ and the default model
    >>> result = qa.ask("When was Dongguan's application approved?")
    >>> result.answer.doc_id, result.answer.text.startswith("In April 2018")
    ('003_fa579be8430ff762', True)
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from . import intent
from .answer import Calibration, Picker
from .followup import resolve
from .retrieve import Filters, Retriever
from .settings import (
    MAX_QUESTION_CHARS,
    SEEDS,
    Settings,
    UsageError,
    UserError,
    check_k,
    check_retriever,
    default_settings,
)
from .store import (
    Index,
    IndexLoadError,
    has_builds,
    index_exists,
    recorded_sources,
    set_nprobe,
)
from .shards import ShardedIndex, ShardedRetriever, open_index
from .types import Answer, Hit, Result

if TYPE_CHECKING:
    from .build import BuildSummary
    from .embed import Encoder

MAX_K = 1000
SETTINGS_READER = object()  # QA's default: the reader that settings.reader names


class QA:
    """A loaded index and model, ready for questions."""

    def __init__(self, index: Index | ShardedIndex, encoder: Encoder, settings: Settings,
                 reader=SETTINGS_READER):
        """`reader`: a loaded qa.reader.Reader, None for the feature picker alone, or (the
        default) the one `settings.reader` names."""
        if reader is SETTINGS_READER:
            from .reader import open_reader

            reader = open_reader(settings.reader)
        self.index = index
        self.encoder = encoder
        self.settings = settings
        if settings.nprobe is not None:
            # Every shard of a sharded index; a remote index's shards set it in their replicas.
            for part in index.shards if isinstance(index, ShardedIndex) else [index]:
                if isinstance(part, Index):
                    set_nprobe(part, settings.nprobe)
        if isinstance(index, ShardedIndex):
            self.retriever: Retriever | ShardedRetriever = ShardedRetriever(index, encoder)
        else:
            self.retriever = Retriever(index, encoder)
        self.calibration = Calibration.from_manifest(index.manifest)
        self.picker = Picker(index, self.calibration, reader)
        self.built: BuildSummary | None = None  # set by open_or_build when it built the index

    @classmethod
    def open(cls, settings: Settings | None = None, *, check_model: bool = False,
             encoder: Encoder | None = None) -> QA:
        """Load settings.index_dir with the model it was built with.

        Args:
            settings: paths and defaults; from the environment when None.
            check_model: refuse an index built with another model than settings.model
                (set when the user chose a model explicitly).
            encoder: an already loaded encoder; used when it is the index's model.
        """
        from .embed import load_encoder

        settings = settings or default_settings()
        index = open_index(settings.index_dir, settings.model if check_model else None)
        if encoder is None or getattr(encoder, "name", None) != index.model:
            encoder = load_encoder(index.model)
        return cls(index, encoder, settings)

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
        check_k(k, MAX_K)
        check_retriever(method)
        kind = intent.classify(question)
        if kind != intent.QUESTION:  # never rewritten as a follow-up, never answered with a quote
            return Result(question, (), None, True, 0.0, question, tuple(notices), kind=kind,
                          reply=intent.reply(kind, len(self.index.articles)))
        resolved = resolve(question, history or [])
        qvec = self.encoder.encode([resolved])[0]
        # The answer picker re-orders the top passages, so fetch at least that many.
        hits = self.retriever.search(resolved, k=max(k, self.calibration.passages), method=method,
                                     filters=filters, qvec=qvec)
        if not hits:
            if filters is not None and filters.active():
                notices.append(no_match(filters, self.index.articles))
            return Result(question, (), None, True, 0.0, resolved, tuple(notices))
        picked = self.picker.pick(resolved, qvec, hits)
        abstained = (picked.answer is None or bool(picked.ruled_out)
                     or picked.confidence < self.picker.threshold)
        if picked.ruled_out:
            notices.append(f"No answer: {picked.ruled_out}.")
        shown = picked.hits[:k]
        return Result(question, shown, None if abstained else picked.answer, abstained,
                      round(picked.confidence, 4), resolved, tuple(notices),
                      tuple(picked.sentences.get(h.passage.pid) for h in shown),
                      withheld=picked.ruled_out)

    def to_json(self, result: Result) -> dict:
        """The stable JSON object of `qa ask --json` and the HTTP API."""
        out: dict = {
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
        if result.withheld:
            out["withheld"] = result.withheld
        out["kind"] = result.kind
        if result.reply:
            out["reply"] = result.reply
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


def no_match(filters: Filters, articles: dict) -> str:
    """Why a filter lets no article through, and the values that exist."""
    def listed(values: list[str], n: int = 8) -> str:
        more = f" and {len(values) - n} more" if len(values) > n else ""
        return ", ".join(values[:n]) + more

    if filters.doc and filters.doc not in articles:
        return f"no article has doc id {filters.doc!r}; doc ids here: {listed(sorted(articles))}"
    sources = sorted({a.source for a in articles.values() if a.source})
    if filters.source and filters.source.casefold() not in {s.casefold() for s in sources}:
        return (f"no article is from source {filters.source!r}; sources here: "
                f"{listed(sources) or 'none (no article names its source)'}")
    days = sorted(a.date[:10] for a in articles.values() if a.date)
    span = f"articles here are dated {days[0]} to {days[-1]}" if days else "no article is dated"
    return (f"no article matches the filters together (source {filters.source or 'any'}, "
            f"doc {filters.doc or 'any'}, since {filters.since or '-'}, until "
            f"{filters.until or '-'}); {span}")


def clean_question(question: str) -> tuple[str, list[str]]:
    """Strip control characters, refuse an empty question, cut an over-long one (with a notice).

    >>> clean_question("  When?\\x00 ")
    ('When?', [])
    """
    if not isinstance(question, str):
        raise UsageError(f"the question must be text, got {type(question).__name__}")
    notices: list[str] = []
    text = "".join(ch if unicodedata.category(ch)[0] != "C" or ch in "\t\n" else " "
                   for ch in question[:MAX_QUESTION_CHARS * 2]).strip()
    if not text:
        # Said the same way in the page, the API and the CLI: no command syntax here.
        raise UsageError("the question is empty; write a question, e.g. \"When did Dongguan "
                         "apply to become an innovative city?\"")
    if len(question) > MAX_QUESTION_CHARS:
        text = text[:MAX_QUESTION_CHARS]
        notices.append(f"the question was {len(question):,} characters; only the first "
                       f"{MAX_QUESTION_CHARS:,} were read")
    return " ".join(text.split()), notices


def open_or_build(settings: Settings, sources: list[Path] | None = None, *, rebuild: bool = False,
                  progress: bool = True, encoder: Encoder | None = None, say=None) -> QA:
    """The engine on settings.index_dir, building or rebuilding the index when it is needed.

    A missing index is built from `sources` (default seeds/). A stale index (its articles changed)
    or one that cannot be read (corrupt, older format) is rebuilt from the articles its manifest
    lists, or from `sources` when given. Progress goes to stderr.

    Args:
        settings: index folder and model.
        sources: folders or files to build from; None uses the recorded sources, then seeds/.
        rebuild: rebuild even when the index is fine.
        progress: show the encoding progress bar.
        encoder: a loaded encoder of settings.model to build and answer with; loaded when None.
        say: where the lines about building go; stderr when None.

    Returns:
        The loaded QA; `built` holds the BuildSummary when this call built the index.

    Raises:
        UserError: the index must be rebuilt but its articles are unknown, or the build failed.
    """
    from .build import build

    say = say or _say
    root = Path(settings.index_dir)
    engine, reason = None, None
    if rebuild:
        reason = "--rebuild was given"
    elif not index_exists(root):
        reason = "there is no index yet (first run)"
    else:
        try:
            engine = QA.open(settings, encoder=encoder)
        except IndexLoadError as e:
            reason = f"it cannot be used: {e}"
        else:
            if not engine.index.stale:
                return engine
            reason = "its articles changed since it was built (stale)"
    chosen = list(sources) if sources else recorded_sources(root)
    if not chosen:
        if has_builds(root):
            raise UserError(f"{root}/ must be rebuilt because {reason}, but the articles it was "
                            f"built from are unknown; pass --sources DIR or run "
                            f"`qa build --index {root} DIR`")
        chosen = [SEEDS]
    say(f"Building the index in {root}/ from {', '.join(map(str, chosen))} because {reason}. "
         f"This takes a minute; progress below.")
    encoder = encoder or (engine.encoder if engine else None)
    summary = build(chosen, settings, encoder=encoder, progress=progress)
    say(f"Built {summary.documents} articles, {summary.passages} passages in "
         f"{summary.seconds:.1f} s.")
    engine = QA.open(settings, encoder=encoder)
    engine.built = summary
    return engine


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


