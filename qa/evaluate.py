"""evaluate question sets or BEIR datasets: metrics per retriever, RUN.jsonl, a report with plots

Stage: question sets -> metrics, reports, plots. Two inputs:

- a question file in the format of `tests/questions.jsonl`, one JSON object a line:
  `{"id", "question", "doc" (null when the articles do not answer it), "answers": [...]}`,
  scored against an existing index (`--index`);
- a dataset in the standard BEIR layout (`--beir DIR`: `corpus.jsonl`, `queries.jsonl`,
  `qrels/test.tsv`), whose corpus is indexed once and cached (see `beir_index`).

Levels. An *article* (a document of the corpus) is relevant when it is the question's `doc` (or a
BEIR qrel); the article ranking is the distinct articles of the passage ranking, in order, so an
article's passages count once. A *passage* is relevant when it belongs to the question's `doc`
and contains one of the answers verbatim. BEIR judges documents, so BEIR runs score articles only.

Ranking metrics (Hit@k = trec_eval `success`, Recall@k, MRR@10 = `recip_rank` over the top 10,
nDCG@10 = `ndcg_cut.10` with linear gain) come from pytrec_eval. Answer metrics: answer-hit (the
snippet, when not abstained, contains an expected answer verbatim), exact offsets, wrongly
abstained, abstention precision and recall.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .settings import RETRIEVERS, UserError, default_settings
from .types import Answer, Hit

HIT_KS = (1, 3, 5, 10)
DEPTH_10 = 10  # MRR@10, nDCG@10 and Hit@10 always look at ten results, whatever --k is
EXIT_THRESHOLD = 3
MAX_PASSAGE_DEPTH = 1000  # engine.MAX_K
FAILURES_SHOWN = 50

# (flag, metric key, label); the metric is read at --threshold-level unless it is an answer metric
THRESHOLDS = (
    ("min_hit1", "hit@1", "Hit@1"), ("min_hit3", "hit@3", "Hit@3"), ("min_hit5", "hit@5", "Hit@5"),
    ("min_hit10", "hit@10", "Hit@10"), ("min_recall", "recall@k", "Recall@k"),
    ("min_mrr10", "mrr@10", "MRR@10"), ("min_ndcg10", "ndcg@10", "nDCG@10"),
    ("min_answer_hit", "answer_hit", "answer-hit"),
    ("min_abstention_precision", "abstention_precision", "abstention precision"),
    ("min_abstention_recall", "abstention_recall", "abstention recall"),
)
ANSWER_METRICS = ("answer_hit", "offsets_exact", "wrongly_abstained", "abstention_precision",
                  "abstention_recall")


# ---------------------------------------------------------------- records

@dataclass(frozen=True)
class Question:
    """One question to score.

    `doc`/`answers` are our format; `qrels` (doc id -> relevance grade) are BEIR's. A question
    of our format gets `qrels = {doc: 1}`, or none when it is unanswerable.
    """

    id: str
    question: str
    doc: str | None = None
    answers: tuple[str, ...] = ()
    qrels: dict[str, int] = field(default_factory=dict)

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
            out.append(Question(qid, text, doc, tuple(answers), {doc: 1} if doc else {}))
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
    from .build import build
    from .store import IndexLoadError, fingerprint, load

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
        if index.manifest.get("source_fingerprint") == fp and index.model == settings.model:
            return index, False
        if explicit:
            raise UserError(f"{index_dir}/ holds an index of {index.manifest.get('sources')} "
                            f"({index.model}), not of {corpus}; pass an empty folder as --index, "
                            f"or leave --index out to use the cache in {cache_dir()}/beir")
    build([corpus], settings.with_(index_dir=index_dir), progress=progress)
    return load(index_dir), True


# ---------------------------------------------------------------- metrics

def ranking_metrics(qrels: dict[str, dict[str, int]], runs: dict[str, Sequence[str]],
                    k: int) -> dict[str, dict[str, float]]:
    """Per-query ranking metrics, from pytrec_eval.

    Args:
        qrels: query id -> {item id: relevance grade}; queries with no relevant item score 0.
        runs: query id -> ranked item ids, best first (no repeats).
        k: the cut-off of Recall@k; Recall@1..k are all returned, for curves.

    Returns:
        query id -> {"hit@1", "hit@3", "hit@5", "hit@10", "recall@1".."recall@k", "recall@k",
        "mrr@10", "ndcg@10"}, for every query in qrels.

    >>> m = ranking_metrics({"q": {"b": 1}}, {"q": ["a", "b"]}, k=2)["q"]
    >>> m["hit@1"], m["hit@3"], m["mrr@10"], m["recall@2"]
    (0.0, 1.0, 0.5, 1.0)
    """
    import pytrec_eval

    depth = max(k, DEPTH_10)
    names = [f"hit@{c}" for c in HIT_KS] + [f"recall@{c}" for c in range(1, k + 1)] + \
        ["recall@k", "mrr@10", "ndcg@10"]
    out = {qid: dict.fromkeys(names, 0.0) for qid in qrels}
    judged = {q: rel for q, rel in qrels.items() if any(g > 0 for g in rel.values())}
    if not judged:
        return out

    def scored(ids: Sequence[str], cut: int) -> dict[str, float]:
        # trec_eval ranks by score (ties by id), so the score is the rank, reversed
        ids = list(dict.fromkeys(ids))[:cut]
        return {d: float(len(ids) - i) for i, d in enumerate(ids)}

    full = {q: scored(runs.get(q, ()), depth) for q in judged}
    top10 = {q: scored(runs.get(q, ()), DEPTH_10) for q in judged}
    cuts = ",".join(str(c) for c in range(1, depth + 1))
    measures = {f"success.{','.join(map(str, HIT_KS))}", f"recall.{cuts}", "ndcg_cut.10"}
    per_full = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(full)
    per_rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    for q in judged:
        m, rr = per_full.get(q, {}), per_rr.get(q, {})
        row = out[q]
        for c in HIT_KS:
            row[f"hit@{c}"] = float(m.get(f"success_{c}", 0.0))
        for c in range(1, k + 1):
            row[f"recall@{c}"] = float(m.get(f"recall_{c}", 0.0))
        row["recall@k"] = row[f"recall@{k}"]
        row["ndcg@10"] = float(m.get("ndcg_cut_10", 0.0))
        row["mrr@10"] = float(rr.get("recip_rank", 0.0))
    return out


def passage_qrels(question: Question, passages_of: dict[str, list]) -> dict[str, int]:
    """Passage ids (as strings) of the question's doc that contain an answer verbatim.

    >>> from qa.types import Passage
    >>> ps = {"d": [Passage(0, "d", 0, 9, "It was 8 years."), Passage(1, "d", 9, 20, "No.")]}
    >>> passage_qrels(Question("q", "How long?", "d", ("8 years",), {"d": 1}), ps)
    {'0': 1}
    """
    if question.doc is None:
        return {}
    return {str(p.pid): 1 for p in passages_of.get(question.doc, ())
            if any(a in p.text for a in question.answers)}


def answer_hit(question: Question, outcome: Outcome) -> bool:
    """The answer given (not abstained) contains one of the expected answers verbatim."""
    return bool(outcome.answer is not None and not outcome.abstained and
                any(a in outcome.answer.text for a in question.answers))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def answer_metrics(outcomes: Sequence[Outcome], articles: dict) -> dict[str, float | None]:
    """answer-hit, exact offsets and abstention figures over the outcomes of one retriever.

    Returns:
        {"answer_hit": over answerable questions, "offsets_exact": over answers given,
        "wrongly_abstained": answerable questions abstained / answerable,
        "abstention_precision": unanswerable among abstentions,
        "abstention_recall": abstentions among unanswerable}; None where the denominator is 0.
    """
    answerable = [o for o in outcomes if o.question.answerable]
    unanswerable = [o for o in outcomes if not o.question.answerable]
    abstained = [o for o in outcomes if o.abstained]
    given = [o for o in outcomes if o.answer is not None and not o.abstained]
    exact = sum(articles[o.answer.doc_id].text[o.answer.char_start:o.answer.char_end] == o.answer.text
                for o in given)
    return {
        "answer_hit": _ratio(sum(answer_hit(o.question, o) for o in answerable), len(answerable)),
        "offsets_exact": _ratio(exact, len(given)),
        "wrongly_abstained": _ratio(sum(bool(o.abstained) for o in answerable), len(answerable)),
        "abstention_precision": _ratio(sum(not o.question.answerable for o in abstained), len(abstained)),
        "abstention_recall": _ratio(sum(bool(o.abstained) for o in unanswerable), len(unanswerable)),
    }


def mean(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    rows = list(rows)
    if not rows:
        return {}
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Scores:
    """The figures of one retriever: mean ranking metrics per level, answer metrics, timing."""

    retriever: str
    questions: int
    levels: dict[str, dict[str, float]]           # level -> metric -> mean
    per_question: dict[str, dict[str, dict]]      # level -> qid -> metric -> value
    answers: dict[str, float | None]
    p50_ms: float
    judged: dict[str, int]                        # level -> questions with a relevant item

    def to_json(self) -> dict:
        return {"retriever": self.retriever, "questions": self.questions,
                "levels": self.levels, "answers": self.answers, "p50_ms": self.p50_ms,
                "judged": self.judged}


def score(retriever: str, outcomes: Sequence[Outcome], index, k: int, is_beir: bool) -> Scores:
    """All the metrics of one retriever's outcomes."""
    levels: dict[str, dict[str, float]] = {}
    per_question: dict[str, dict[str, dict]] = {}
    judged: dict[str, int] = {}
    answerable = [o for o in outcomes if o.question.answerable]
    article_qrels = {o.question.id: o.question.qrels for o in answerable}
    article_runs = {o.question.id: o.articles for o in answerable}
    per_question["article"] = ranking_metrics(article_qrels, article_runs, k)
    judged["article"] = len(article_qrels)
    if not is_beir:
        passages_of: dict[str, list] = {}
        for p in index.passages:
            passages_of.setdefault(p.doc_id, []).append(p)
        p_qrels = {o.question.id: passage_qrels(o.question, passages_of) for o in answerable}
        p_runs = {o.question.id: [str(h.passage.pid) for h in o.hits] for o in answerable}
        per_question["passage"] = ranking_metrics(p_qrels, p_runs, k)
        judged["passage"] = sum(bool(r) for r in p_qrels.values())
    for level, rows in per_question.items():
        levels[level] = mean(rows.values())
    answers = {} if is_beir else answer_metrics(outcomes, index.articles)
    p50 = percentile([o.seconds for o in outcomes], 50) * 1000
    return Scores(retriever, len(outcomes), levels, per_question, answers, round(p50, 2), judged)


# ---------------------------------------------------------------- running

def run_questions(qa, questions: Sequence[Question], retriever: str, k: int, *, is_beir: bool,
                  drop_self_hits: bool = True, qvecs=None, progress=None) -> list[Outcome]:
    """Ask every question with one retriever.

    Our question sets go through `QA.ask` (retrieval, snippet and abstention, as a user gets
    them) with max(k, 10) passages. BEIR queries go through the retriever only, asking for more
    passages until max(k, 10) distinct articles are found; with drop_self_hits a hit on the
    document whose id is the query's own id is left out (ArguAna's protocol).
    """
    depth = max(k, DEPTH_10)
    out: list[Outcome] = []
    for i, q in enumerate(questions):
        started = time.perf_counter()
        if is_beir:
            hits = _search_articles(qa, q, retriever, depth, drop_self_hits,
                                    None if qvecs is None else qvecs[i])
            answer, abstained = None, None
        else:
            result = qa.ask(q.question, k=depth, retriever=retriever)
            hits, answer, abstained = list(result.hits), result.answer, result.abstained
        seconds = time.perf_counter() - started
        articles = tuple(dict.fromkeys(h.passage.doc_id for h in hits))[:depth]
        out.append(Outcome(q, retriever, tuple(hits), articles, answer, abstained, seconds))
        if progress is not None:
            progress.update(1)
    return out


def _search_articles(qa, q: Question, method: str, depth: int, drop_self: bool, qvec) -> list[Hit]:
    want = 3 * depth
    while True:
        hits = qa.retriever.search(q.question, k=want, method=method, qvec=qvec)
        kept = [h for h in hits if not (drop_self and h.passage.doc_id == q.id)]
        if len({h.passage.doc_id for h in kept}) >= depth or len(hits) < want \
                or want >= MAX_PASSAGE_DEPTH:
            return kept
        want = min(2 * want, MAX_PASSAGE_DEPTH)


# ---------------------------------------------------------------- output

def run_line(outcome: Outcome, k: int) -> dict:
    """One RUN.jsonl line: the question, the answer or abstention, and the top k passages."""
    a = outcome.answer
    return {
        "id": outcome.question.id,
        "question": outcome.question.question,
        "retriever": outcome.retriever,
        "abstained": outcome.abstained,
        "answer": None if a is None or outcome.abstained else {
            "text": a.text, "doc_id": a.doc_id, "char_start": a.char_start,
            "char_end": a.char_end, "confidence": a.confidence},
        "passages": [{"doc_id": h.passage.doc_id, "text": h.passage.text,
                      "score": round(float(h.score), 6), "char_start": h.passage.char_start,
                      "char_end": h.passage.char_end} for h in outcome.hits[:k]],
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def tables(scores: Sequence[Scores], k: int) -> str:
    """Markdown tables: one per level, one row per retriever; then the answers table."""
    parts = []
    for level in ("article", "passage"):
        if not any(level in s.levels for s in scores):
            continue
        head = ["retriever", "questions", "Hit@1", "Hit@3", "Hit@5", "Hit@10", f"Recall@{k}",
                "MRR@10", "nDCG@10"]
        rows = [[s.retriever, str(s.judged[level])] +
                [_fmt(s.levels[level].get(m)) for m in
                 ("hit@1", "hit@3", "hit@5", "hit@10", "recall@k", "mrr@10", "ndcg@10")]
                for s in scores if level in s.levels]
        parts.append(f"{level} level\n\n" + markdown_table(head, rows))
    if any(s.answers for s in scores):
        head = ["retriever", "questions", "answer-hit", "offsets exact", "wrongly abstained",
                "abstention precision", "abstention recall", "p50 ms"]
        rows = [[s.retriever, str(s.questions)] + [_fmt(s.answers.get(m)) for m in ANSWER_METRICS]
                + [f"{s.p50_ms:.1f}"] for s in scores]
        parts.append("answers\n\n" + markdown_table(head, rows))
    else:
        head = ["retriever", "questions", "p50 ms (retrieval)"]
        parts.append("timing\n\n" + markdown_table(head, [[s.retriever, str(s.questions),
                                                       f"{s.p50_ms:.1f}"] for s in scores]))
    return "\n\n".join(parts)


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns (also used by `qa bench`)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "| " + " | ".join("-" * w for w in widths) + " |",
                      *(line(r) for r in rows)])


def failures(outcomes: Sequence[Outcome], scores: Scores) -> list[tuple[Outcome, list[str]]]:
    """The questions a retriever failed, each with why: wrong article at rank 1, no relevant
    article in the top 10, a snippet without the answer, a wrong abstention or answer."""
    rows = scores.per_question["article"]
    out = []
    for o in outcomes:
        why = []
        q = o.question
        if q.answerable:
            m = rows[q.id]
            if m["hit@10"] == 0:
                why.append("no relevant article in the top 10")
            elif m["hit@1"] == 0:
                why.append("a wrong article at rank 1")
            if o.abstained:
                why.append("abstained on an answerable question")
            elif o.abstained is False and not answer_hit(q, o):
                why.append("the snippet does not contain an expected answer")
        elif o.abstained is False:
            why.append("answered an unanswerable question")
        if why:
            out.append((o, why))
    return out


def _clip(text: str, n: int = 220) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def write_report(folder: Path, dataset: Dataset, index, scores: Sequence[Scores],
                 outcomes: dict[str, list[Outcome]], k: int, notes: Sequence[str],
                 shown: int = FAILURES_SHOWN) -> list[Path]:
    """report.md, recall_at_k.png and metrics.json into folder.

    Returns:
        The files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plot = plot_recall(folder / "recall_at_k.png", scores, k, dataset.name)
    m = index.manifest
    lines = [f"# qa eval: {dataset.name}", "",
             f"- questions: {len(dataset.questions)} "
             f"({sum(q.answerable for q in dataset.questions)} answerable)",
             f"- index: {index.path} ({m.get('documents')} documents, {m.get('passages')} passages, "
             f"{m.get('index_type')}, {m.get('model')})",
             f"- k: {k} (Hit@10, MRR@10 and nDCG@10 always look at 10)",
             f"- run at {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    lines += [f"- {n}" for n in notes]
    lines += ["", "Article level: an article is relevant when it is the question's doc (or a qrel); "
              "the ranking is the distinct articles of the passage ranking, so an article's "
              "passages count once."]
    if not dataset.is_beir:
        lines += ["Passage level: a passage is relevant when it belongs to the question's doc and "
                  "contains an expected answer verbatim; questions where no passage does count as "
                  "misses. answer-hit: the snippet (not abstained) contains an expected answer."]
    lines += ["", tables(scores, k), "", f"![Recall@k]({plot.name})", "", "## Failed questions", ""]
    for s in scores:
        failed = failures(outcomes[s.retriever], s)
        lines.append(f"### {s.retriever}: {len(failed)} of {s.questions} failed"
                     + (f" (first {shown} shown; all are in RUN.jsonl)" if len(failed) > shown else ""))
        lines.append("")
        for o, why in failed[:shown]:
            q = o.question
            expected = q.doc or ", ".join(list(q.qrels)[:3]) or "none (unanswerable)"
            lines.append(f"- **{q.id}** {_clip(q.question, 300)}  ")
            lines.append(f"  expected: {expected}"
                         + (f"; answers: {' / '.join(q.answers[:3])}" if q.answers else "")
                         + f"  \n  why: {'; '.join(why)}  ")
            if o.answer is not None and not o.abstained:
                lines.append(f"  answer: “{_clip(o.answer.text)}” ({o.answer.doc_id}, "
                             f"confidence {o.answer.confidence:.2f})  ")
            lines.append("  retrieved instead:")
            for h in o.hits[:3]:
                mark = " ✓" if h.passage.doc_id in q.qrels else ""
                title = index.articles[h.passage.doc_id].title if h.passage.doc_id in index.articles else ""
                lines.append(f"  {h.rank}. {h.passage.doc_id}{mark} ({h.score:.3f}) "
                             f"{_clip(title, 60) + ': ' if title else ''}{_clip(h.passage.text, 160)}")
        lines.append("")
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    metrics = folder / "metrics.json"
    metrics.write_text(json.dumps({"dataset": dataset.name, "k": k, "notes": list(notes),
                                   "retrievers": [s.to_json() for s in scores]}, indent=2))
    return [report, plot, metrics]


def plot_recall(path: Path, scores: Sequence[Scores], k: int, title: str) -> Path:
    """A PNG of Recall@1..k per retriever: articles solid, passages dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    xs = list(range(1, k + 1))
    for i, s in enumerate(scores):
        color = f"C{i}"
        for level, style in (("article", "-"), ("passage", "--")):
            if level in s.levels:
                ax.plot(xs, [s.levels[level][f"recall@{c}"] for c in xs], style, color=color,
                        marker="o", markersize=3, label=f"{s.retriever} ({level})")
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(xs if k <= 20 else None)
    ax.set_title(f"Recall@k: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def check_thresholds(scores: Sequence[Scores], args, level: str) -> list[str]:
    """Messages for every threshold a retriever does not meet."""
    problems = []
    for flag, key, label in THRESHOLDS:
        floor = getattr(args, flag, None)
        if floor is None:
            continue
        for s in scores:
            value = s.answers.get(key) if key in ANSWER_METRICS else s.levels.get(level, {}).get(key)
            if value is None:
                problems.append(f"{s.retriever}: {label} is undefined here (nothing to count), "
                                f"--{flag.replace('_', '-')} {floor} not met")
            elif value < floor:
                where = "" if key in ANSWER_METRICS else f"{level} "
                problems.append(f"{s.retriever}: {where}{label} {value:.3f} is below "
                                f"--{flag.replace('_', '-')} {floor}")
    return problems


# ---------------------------------------------------------------- command

def add_arguments(p) -> None:
    p.description = ("Score retrievers and answers on a question file (our format) against an "
                     "index, or on a BEIR dataset (indexed and cached on first use). Prints a "
                     f"table; exit code {EXIT_THRESHOLD} when a --min-* threshold is not met.")
    p.add_argument("questions", nargs="?", type=Path,
                   help='question .jsonl: {"id", "question", "doc" (null if unanswerable), "answers"}')
    p.add_argument("--beir", type=Path, metavar="DIR",
                   help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    p.add_argument("--split", default="test", help="BEIR qrels split (default test)")
    p.add_argument("--index", type=Path, help="index folder (default index/, or QA_INDEX); with "
                   "--beir, where to build/reuse its index (default ~/.cache/qa/beir/<name>-<hash>)")
    p.add_argument("--model", help="model for a BEIR index (default all-MiniLM-L6-v2)")
    p.add_argument("--retriever", choices=RETRIEVERS + ("all",), default="hybrid",
                   help="default hybrid; all = dense, bm25 and hybrid side by side")
    p.add_argument("--k", type=int, default=10, help="passages per question in RUN.jsonl and the "
                   "cut-off of Recall@k (default 10)")
    p.add_argument("--run-out", type=Path, metavar="RUN.jsonl",
                   help="write one line per question and retriever")
    p.add_argument("--report-out", type=Path, metavar="DIR",
                   help="write report.md, recall_at_k.png and metrics.json here")
    p.add_argument("--filter-doc", metavar="REGEX", help="keep questions whose doc matches (re.search); "
                   "e.g. '^(2[4-9]|3[0-9]|4[0-7])_' = SQuAD articles 24-47")
    p.add_argument("--sample", type=int, metavar="N", help="score a random sample of N questions")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--keep-self-hits", action="store_true",
                   help="BEIR: keep hits whose doc id is the query id (dropped by default, as in "
                        "BEIR/MTEB; matters for ArguAna)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threshold-level", choices=("article", "passage"), default="article",
                   help="level the ranking thresholds read (default article)")
    for flag, _key, label in THRESHOLDS:
        p.add_argument("--" + flag.replace("_", "-"), type=float, metavar="X",
                       help=f"exit {EXIT_THRESHOLD} if {label} < X for any retriever")


def run(args) -> int:
    from tqdm import tqdm

    from .engine import QA

    if (args.questions is None) == (args.beir is None):
        raise _usage("give either a question file or --beir DIR, e.g. `qa eval tests/questions.jsonl` "
                     "or `qa eval --beir data/scifact`")
    if not 1 <= args.k <= 100:
        raise _usage(f"--k must be from 1 to 100, got {args.k}")
    for flag, key, _label in THRESHOLDS:
        value = getattr(args, flag)
        if value is not None and not 0 <= value <= 1:
            raise _usage(f"--{flag.replace('_', '-')} must be between 0 and 1, got {value}")
        if value is not None and args.beir and key in ANSWER_METRICS:
            raise _usage(f"--{flag.replace('_', '-')} needs answers; BEIR runs score retrieval only")
    if args.filter_doc and args.beir:
        raise _usage("--filter-doc works on question files; BEIR queries have no doc field")
    if args.beir and args.threshold_level == "passage":
        raise _usage("--threshold-level passage needs answers; BEIR runs score articles only")
    settings = default_settings(index_dir=args.index, model=args.model)
    progress_off = True if args.quiet else None  # None: a bar on a terminal only
    notes: list[str] = []
    if args.beir:
        dataset = load_beir(args.beir, args.split)
        questions = select(dataset.questions, None, args.sample, args.seed)
        started = time.perf_counter()
        index, built = beir_index(dataset.beir_corpus, settings, args.index, progress=not args.quiet)
        notes.append(f"{'built' if built else 'reused'} the index of {dataset.beir_corpus} "
                     f"in {index.path}" + (f" ({time.perf_counter() - started:.0f} s)" if built else ""))
        missing = {d for q in questions for d in q.qrels if d not in index.articles}
        if missing:
            notes.append(f"{len(missing)} judged documents are not in the index (missing from the "
                         f"corpus, or duplicates indexed once), e.g. {sorted(missing)[0]}; they "
                         f"count as never retrieved")
        if args.keep_self_hits:
            notes.append("hits whose doc id equals the query id were kept (--keep-self-hits)")
        else:
            selfs = sum(q.id in index.articles for q in questions)
            notes.append(f"hits whose doc id equals the query id were dropped (BEIR/MTEB protocol "
                         f"for ArguAna; {selfs} queries are themselves in the corpus); "
                         f"--keep-self-hits keeps them")
        from .embed import load_encoder

        qa = QA(index, load_encoder(index.model), settings)
    else:
        questions = select(load_questions(args.questions), args.filter_doc, args.sample, args.seed)
        dataset = Dataset(args.questions.name, tuple(questions))
        qa = QA.open(settings, check_model=args.model is not None)
        unknown = sorted({q.doc for q in questions if q.doc and q.doc not in qa.index.articles})
        if unknown:
            raise UserError(f"{len(unknown)} doc ids in {args.questions} are not in the index "
                            f"{settings.index_dir}/ (e.g. {', '.join(unknown[:3])}); build the index "
                            f"from the articles these questions are about (`qa build ... --index "
                            f"DIR`, then --index DIR), or fix the ids")
    dataset = Dataset(dataset.name, tuple(questions), dataset.beir_corpus, dataset.notes)
    notes += list(dataset.notes)
    if args.filter_doc or args.sample:
        notes.append(f"questions selected with --filter-doc {args.filter_doc!r} --sample "
                     f"{args.sample} --seed {args.seed}")
    retrievers = list(RETRIEVERS) if args.retriever == "all" else [args.retriever]
    qvecs = None
    if dataset.is_beir and set(retrievers) - {"bm25"}:
        qvecs = qa.encoder.encode([q.question for q in questions], progress=False)
    outcomes: dict[str, list[Outcome]] = {}
    scores: list[Scores] = []
    with tqdm(total=len(questions) * len(retrievers), desc="qa eval", unit="q", file=sys.stderr,
              disable=progress_off, leave=False) as bar:
        for r in retrievers:
            bar.set_postfix_str(r)
            outcomes[r] = run_questions(qa, questions, r, args.k, is_beir=dataset.is_beir,
                                        drop_self_hits=not args.keep_self_hits, qvecs=qvecs,
                                        progress=bar)
            scores.append(score(r, outcomes[r], qa.index, args.k, dataset.is_beir))
    if args.run_out:
        args.run_out.parent.mkdir(parents=True, exist_ok=True)
        with args.run_out.open("w", encoding="utf-8") as f:
            for q_i in range(len(questions)):
                for r in retrievers:
                    f.write(json.dumps(run_line(outcomes[r][q_i], args.k), ensure_ascii=False) + "\n")
    print(f"{dataset.name}: {len(questions)} questions, index {qa.index.path} "
          f"({qa.index.manifest.get('passages')} passages)")
    for n in notes:
        print(f"note: {n}")
    print()
    print(tables(scores, args.k))
    if args.report_out:
        written = write_report(args.report_out, dataset, qa.index, scores, outcomes, args.k, notes)
        print(f"\nreport: {', '.join(str(p) for p in written)}")
    if args.run_out:
        print(f"run: {args.run_out}")
    problems = check_thresholds(scores, args, args.threshold_level)
    for problem in problems:
        print(f"threshold not met: {problem}", file=sys.stderr)
    return EXIT_THRESHOLD if problems else 0


def _usage(message: str) -> UserError:
    e = UserError(message)
    e.exit_code = 2
    return e
