"""Figures -> what people read: the tables, RUN.jsonl lines, report.md, plots, threshold checks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence


from .data import Dataset, Outcome
from .metrics import ANSWER_METRICS, Scores, answer_hit

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
                "abstention precision", "abstention recall", "abstention AUC", "p50 ms"]
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
             f"- index: {index.path} ({m.documents} documents, {m.passages} passages, "
             f"{m.index_type}, {m.model})",
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
    if k <= 20:
        ax.set_xticks(xs)
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
