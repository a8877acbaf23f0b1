"""Question sets in: our question files and BEIR datasets, as records, and the BEIR index cache."""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..settings import UserError, default_settings
from ..types import Answer, Hit


# ---------------------------------------------------------------- records

@dataclass(frozen=True)
class Question:
    """One question to score.

    `doc`/`answers` are our format; `qrels` (doc id -> relevance grade) are BEIR's. A question
    of our format gets `qrels = {doc: 1}`, or none when it is unanswerable. `given` (optional)
    names the article the question was written on, to ask it of that article alone (SQuAD 2.0's
    setting, `qa eval --given-doc`).
    """

    id: str
    question: str
    doc: str | None = None
    answers: tuple[str, ...] = ()
    qrels: dict[str, int] = field(default_factory=dict)
    given: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.qrels)


@dataclass(frozen=True)
class Dataset:
    """Questions plus what they are scored against: an index folder, or a BEIR corpus to index."""

    name: str
    questions: tuple[Question, ...]
    beir_corpus: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def is_beir(self) -> bool:
        return self.beir_corpus is not None


@dataclass(frozen=True)
class Outcome:
    """What one retriever returned for one question."""

    question: Question
    retriever: str
    hits: tuple[Hit, ...]          # passages, best first (at least max(k, 10) when available)
    articles: tuple[str, ...]      # distinct doc ids of `hits`, in order
    answer: Answer | None
    abstained: bool | None         # None: retrieval only (BEIR)
    seconds: float
    confidence: float | None = None  # the answer's confidence, kept when it abstained


# ---------------------------------------------------------------- input

def load_questions(path: Path) -> list[Question]:
    """Read a question file of our format.

    Raises:
        UserError: a missing file, a malformed line (named by number), a missing field,
            duplicate ids, an answerable question without answers, or no questions.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"question file {path} does not exist; pass a .jsonl file with one "
                        f'{{"id", "question", "doc", "answers"}} object a line')
    out: list[Question] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except ValueError as e:
                raise UserError(f"{where} is not valid JSON ({e}); fix that line") from None
            if not isinstance(row, dict):
                raise UserError(f"{where} is not a JSON object; each line must be "
                                f'{{"id", "question", "doc", "answers"}}')
            missing = [k for k in ("id", "question", "doc", "answers") if k not in row]
            if missing:
                raise UserError(f"{where} has no {', '.join(missing)}; each line needs id, question, "
                                f"doc (null when unanswerable) and answers")
            qid, text, doc, answers = row["id"], row["question"], row["doc"], row["answers"]
            if not isinstance(qid, (str, int)) or isinstance(qid, bool):
                raise UserError(f"{where}: id must be a string, got {qid!r}")
            qid = str(qid)
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"{where}: question {qid} has an empty question text; write the question")
            if doc is not None and (not isinstance(doc, str) or not doc):
                raise UserError(f"{where}: doc must be a doc id or null, got {doc!r}")
            if not isinstance(answers, list) or not all(isinstance(a, str) and a for a in answers):
                raise UserError(f"{where}: answers must be a list of non-empty strings, got {answers!r}")
            if doc is not None and not answers:
                raise UserError(f"{where}: question {qid} names doc {doc} but no answers; add the "
                                f"expected answer strings, or set doc to null if it is unanswerable")
            if qid in seen:
                raise UserError(f"{where}: id {qid} is already used on line {seen[qid]}; ids must be unique")
            seen[qid] = number
            given = row.get("given")
            if given is not None and (not isinstance(given, str) or not given):
                raise UserError(f"{where}: given must be a doc id or absent, got {given!r}")
            out.append(Question(qid, text, doc, tuple(answers), {doc: 1} if doc else {}, given))
    if not out:
        raise UserError(f"{path} holds no questions; add one JSON object a line")
    return out


def select(questions: Sequence[Question], doc_pattern: str | None = None,
           sample: int | None = None, seed: int = 0) -> list[Question]:
    """Keep the questions whose doc matches a regular expression, then a random sample.

    Args:
        questions: all questions.
        doc_pattern: `re.search` pattern on `doc`; unanswerable questions (no doc) are dropped.
            E.g. '^(2[4-9]|3[0-9]|4[0-7])_' keeps SQuAD articles 24-47.
        sample: keep this many, chosen with `random.Random(seed)`, in file order.
        seed: the sample's seed.

    >>> qs = [Question("a", "?", "3_1", ("x",), {"3_1": 1}), Question("b", "?", "30_2", ("y",), {"30_2": 1})]
    >>> [q.id for q in select(qs, "^3_")]
    ['a']
    """
    out = list(questions)
    if doc_pattern:
        try:
            pattern = re.compile(doc_pattern)
        except re.error as e:
            raise UserError(f"--filter-doc {doc_pattern!r} is not a regular expression ({e})") from None
        out = [q for q in out if q.doc is not None and pattern.search(q.doc)]
    if sample is not None:
        if sample < 1:
            raise UserError(f"--sample must be at least 1, got {sample}")
        if sample < len(out):
            keep = set(random.Random(seed).sample(range(len(out)), sample))
            out = [q for i, q in enumerate(out) if i in keep]
    if not out:
        raise UserError("no questions left after --filter-doc/--sample; loosen the filter")
    return out


def load_beir(folder: Path, split: str = "test") -> Dataset:
    """Read a BEIR dataset: the queries that have qrels in the split, with their qrels.

    Raises:
        UserError: missing files, malformed lines, or no judged query.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"BEIR folder {folder} does not exist; pass a folder holding corpus.jsonl, "
                        f"queries.jsonl and qrels/{split}.tsv")
    corpus, queries, qrels_path = (folder / "corpus.jsonl", folder / "queries.jsonl",
                                   folder / "qrels" / f"{split}.tsv")
    missing = [str(p.relative_to(folder)) for p in (corpus, queries, qrels_path) if not p.is_file()]
    if missing:
        raise UserError(f"{folder} is not in the BEIR layout: {', '.join(missing)} missing; a BEIR "
                        f"dataset holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            cells = line.rstrip("\n\r").split("\t")
            if not line.strip() or (number == 1 and cells[0] == "query-id"):
                continue
            if len(cells) == 4:  # TREC format: qid 0 docid grade
                cells = [cells[0], cells[2], cells[3]]
            try:
                qid, doc, grade = cells[0], cells[1], int(float(cells[2]))
            except (IndexError, ValueError):
                raise UserError(f"{qrels_path}:{number} is not 'query-id<TAB>corpus-id<TAB>score'; "
                                f"fix that line") from None
            qrels.setdefault(qid, {})[doc] = grade
    texts: dict[str, str] = {}
    with queries.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts[str(row["_id"])] = str(row["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{queries}:{number} is not a query line with _id and text ({e}); "
                                f"fix that line") from None
    judged = [qid for qid, rel in qrels.items() if any(g > 0 for g in rel.values())]
    unknown = [qid for qid in judged if qid not in texts or not texts[qid].strip()]
    questions = tuple(Question(qid, texts[qid], None, (), {d: g for d, g in qrels[qid].items() if g > 0})
                      for qid in judged if qid in texts and texts[qid].strip())
    if not questions:
        raise UserError(f"no query of {queries} has a relevant document in {qrels_path}; check "
                        f"that the ids match")
    notes = []
    if unknown:
        notes.append(f"{len(unknown)} judged queries are not in queries.jsonl (e.g. {unknown[0]}) "
                     f"and were left out")
    return Dataset(folder.resolve().name, questions, corpus, tuple(notes))


def cache_dir() -> Path:
    """Where BEIR indexes are cached: $QA_CACHE, else $XDG_CACHE_HOME/qa, else ~/.cache/qa."""
    if os.environ.get("QA_CACHE"):
        return Path(os.environ["QA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qa"


def beir_index(corpus: Path, settings, index_dir: Path | None = None, progress: bool = True):
    """Load the cached index of a BEIR corpus, building it first when there is none.

    An index is reused when its source fingerprint and model match; the cache folder is
    `cache_dir()/beir/<dataset>-<fingerprint[:12]>[-<model>]`, or `index_dir` when given.

    Returns:
        (Index, built: bool).

    Raises:
        UserError: index_dir holds an index of something else (it is never overwritten).
    """
    from ..build import build
    from ..store import IndexLoadError, fingerprint, load

    corpus = Path(corpus)
    fp = fingerprint([corpus])
    if index_dir is None:
        tag = "" if settings.model == default_settings().model else \
            "-" + re.sub(r"[^A-Za-z0-9.]+", "_", settings.model)[-40:]
        index_dir = cache_dir() / "beir" / f"{corpus.parent.name}-{fp[:12]}{tag}"
        explicit = False
    else:
        explicit = True
    index_dir = Path(index_dir)
    try:
        index = load(index_dir)
    except IndexLoadError:
        index = None
    if index is not None:
        if index.manifest.source_fingerprint == fp and index.model == settings.model:
            return index, False
        if explicit:
            raise UserError(f"{index_dir}/ holds an index of {list(index.manifest.sources)} "
                            f"({index.model}), not of {corpus}; pass an empty folder as --index, "
                            f"or leave --index out to use the cache in {cache_dir()}/beir")
    build([corpus], settings.with_(index_dir=index_dir), progress=progress)
    return load(index_dir), True
