"""Where the snippet misses are, relative to the gold answer, from a `qa eval --run-out` file of
SQuAD 1.1 questions (one article per paragraph): the right paragraph but the sentence after,
before or farther from the snippet; another paragraph while the gold one was among the top 8
passages, or not; or an abstention.

Usage: PYTHONPATH=$PWD python scripts/miss_breakdown.py RUN.jsonl [SQUAD_DIR]
  e.g. qa eval ../shared/beir/squad-v1.1-dev/questions.jsonl --index /tmp/qa-figures/squad \
         --filter-doc '^([0-9]|1[0-9]|2[0-3])_' --quiet --run-out /tmp/squad-tune.jsonl
"""

import json
import sys
from collections import Counter
from pathlib import Path

from qa.chunk import sentences
from qa.evaluation.data import load_questions

PASSAGES_READ = 8


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def where(row: dict, gold: tuple[str, ...], doc: str, paragraphs: dict[str, str]) -> tuple[str, str]:
    """(kind of outcome, the sentence holding the answer when it is beside the snippet)."""
    answer = row["answer"]
    if row["abstained"]:
        return "abstained", ""
    if any(g in answer["text"] for g in gold):
        return "hit", ""
    if answer["doc_id"] != doc:
        read = any(p["doc_id"] == doc for p in row["passages"][:PASSAGES_READ])
        return ("another paragraph; the gold one among the top 8" if read
                else "another paragraph; the gold one not among the top 8"), ""
    text = paragraphs[doc]
    spans = sentences(text, 0, len(text))
    first = next(i for i, (a, b) in enumerate(spans) if a <= answer["char_start"] < b)
    last = next(i for i, (a, b) in enumerate(spans) if a < answer["char_end"] <= b)
    after = text[slice(*spans[last + 1])] if last + 1 < len(spans) else ""
    before = text[slice(*spans[first - 1])] if first > 0 else ""
    if any(g in after for g in gold):
        return "right paragraph; the sentence after", after
    if any(g in before for g in gold):
        return "right paragraph; the sentence before", before
    return "right paragraph; farther from the snippet", ""


def main(run: Path, squad: Path) -> None:
    paragraphs = {d["_id"]: d["text"] for d in read_jsonl(squad / "corpus.jsonl")}
    questions = {q.id: q for q in load_questions(squad / "questions.jsonl")}
    rows = [r for r in read_jsonl(run) if r["retriever"] == "hybrid"]
    counts: Counter[str] = Counter()
    examples: dict[str, tuple[str, str, str]] = {}
    for row in rows:
        q = questions[row["id"]]
        assert q.doc is not None, "SQuAD 1.1 questions are all answerable"
        kind, beside = where(row, q.answers, q.doc, paragraphs)
        counts[kind] += 1
        if beside and kind not in examples:
            examples[kind] = (q.question, row["answer"]["text"], beside)
    for kind, n in counts.most_common():
        print(f"{kind:55s} {n:5d}  {n / len(rows):.3f}")
    for kind, (question, snippet, beside) in examples.items():
        print(f"\n{kind}: {question!r}\n  snippet: {snippet[:160]!r}\n  answer in: {beside[:160]!r}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/beir/squad-v1.1-dev"))
