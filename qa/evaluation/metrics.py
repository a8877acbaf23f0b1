"""Outcomes -> figures: ranking metrics (pytrec_eval), answer metrics, percentiles, per retriever."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


from .data import Outcome, Question

HIT_KS = (1, 3, 5, 10)
DEPTH_10 = 10  # MRR@10, nDCG@10 and Hit@10 always look at ten results, whatever --k is
ANSWER_METRICS = ("answer_hit", "offsets_exact", "wrongly_abstained", "abstention_precision",
                  "abstention_recall", "abstention_auc")


# ---------------------------------------------------------------- metrics

def ranking_metrics(qrels: Mapping[str, Mapping[str, int]], runs: Mapping[str, Sequence[str]],
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
        "abstention_recall": abstentions among unanswerable,
        "abstention_auc": how often an answerable question's confidence is above an unanswerable
        one's (ROC AUC, ties count half), whatever the threshold}; None where the denominator is 0.
    """
    answerable = [o for o in outcomes if o.question.answerable]
    unanswerable = [o for o in outcomes if not o.question.answerable]
    abstained = [o for o in outcomes if o.abstained]
    given = [o.answer for o in outcomes if o.answer is not None and not o.abstained]
    exact = sum(articles[a.doc_id].text[a.char_start:a.char_end] == a.text for a in given)
    return {
        "answer_hit": _ratio(sum(answer_hit(o.question, o) for o in answerable), len(answerable)),
        "offsets_exact": _ratio(exact, len(given)),
        "wrongly_abstained": _ratio(sum(bool(o.abstained) for o in answerable), len(answerable)),
        "abstention_precision": _ratio(sum(not o.question.answerable for o in abstained), len(abstained)),
        "abstention_recall": _ratio(sum(bool(o.abstained) for o in unanswerable), len(unanswerable)),
        "abstention_auc": auc([o.confidence for o in answerable], [o.confidence for o in unanswerable]),
    }


def auc(positive: Sequence[float | None], negative: Sequence[float | None]) -> float | None:
    """ROC AUC: the chance a positive scores above a negative, ties counting half (the
    Mann-Whitney U over both sizes); None without both kinds or when a score is missing."""
    if not positive or not negative or None in positive or None in negative:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(list(positive) + list(negative))
    n = len(positive)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negative)))


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
