"""Would skipping the reader pay when the feature picker is sure? For tuning questions only (the
seeds' first 72, 1,000 of SQuAD 1.1 dev articles 0-23, 600 of the SQuAD 2.0 tuning articles
asked of their own paragraph), each question is answered twice, with the reader and with the
feature picker alone; a cascade then takes the feature picker's answer and confidence when its
best sentence leads the runner-up by at least a margin M (in feature-score units), and the
reader's otherwise. Prints, per M, the share of questions that skip reading, the snippet hit
rate, abstention and the abstention AUC.

Needs the indexes `bash scripts/reader_figures.sh` builds (default /tmp/qa-figures).
Usage: PYTHONPATH=$PWD python scripts/reader_cascade.py [FIGURES_DIR]
"""

import sys
from pathlib import Path

import numpy as np

from qa.answer import Picker, Picked
from qa.engine import QA
from qa.evaluation.data import Question, load_questions, select
from qa.evaluation.metrics import auc
from qa.retrieve import Filters
from qa.settings import Settings

TUNE = r"^([0-9]|1[0-9]|2[0-3])_"
MARGINS = (float("inf"), 3.0, 2.0, 1.5, 1.0, 0.5)


def tuning(path: Path, doc: str | None = None, n: int | None = None) -> list[Question]:
    """The file's questions but the seeds' nm* ones (never fitted to, nor looked at here)."""
    kept = [q for q in load_questions(path) if not q.id.startswith("nm")]
    return select(kept, doc, n)


def outcome(picked: Picked, threshold: float, gold: tuple[str, ...]) -> dict:
    if picked.answer is None:
        return {"conf": 0.0, "abstained": True, "hit": False}
    abstained = bool(picked.ruled_out) or picked.confidence < threshold
    return {"conf": picked.confidence, "abstained": abstained,
            "hit": not abstained and any(g in picked.answer.text for g in gold)}


def answer_both(index_dir: Path, questions: list[Question], given: bool) -> list[dict]:
    qa = QA.open(Settings(index_dir=index_dir))
    plain = Picker(qa.index, qa.calibration, None)  # the feature picker alone
    rows = []
    for q in questions:
        only = Filters(doc=q.given) if given and q.given else None
        qvec = qa.encoder.encode([q.question])[0]
        hits = qa.retriever.search(q.question, k=10, filters=only, qvec=qvec)
        if not hits:
            continue
        scores = sorted((plain.sentence_score(c) for c in plain.candidates(q.question, qvec, hits)),
                        reverse=True)
        rows.append({"answerable": q.answerable,
                     "margin": scores[0] - scores[1] if len(scores) > 1 else float("inf"),
                     "reader": outcome(qa.picker.pick(q.question, qvec, hits), qa.picker.threshold,
                                       q.answers),
                     "features": outcome(plain.pick(q.question, qvec, hits), plain.threshold,
                                         q.answers)})
    return rows


def share(flags: list[bool]) -> str:
    return f"{np.mean(flags):.3f}" if flags else "–"


def auc_text(yes: list[dict], no: list[dict]) -> str:
    got = auc([o["conf"] for o in yes], [o["conf"] for o in no])
    return "–" if got is None else f"{got:.3f}"


def report(name: str, rows: list[dict]) -> None:
    print(f"\n{name} ({len(rows)} questions)\n| M | skip reading | snippet hit | answerable abstaining "
          f"| unanswerable abstaining | AUC |\n| --- | --- | --- | --- | --- | --- |")
    for m in MARGINS:
        chosen = [(r, r["features"] if r["margin"] >= m else r["reader"]) for r in rows]
        yes = [o for r, o in chosen if r["answerable"]]
        no = [o for r, o in chosen if not r["answerable"]]
        print(f"| {'never' if m == float('inf') else m} | {np.mean([r['margin'] >= m for r in rows]):.2f} "
              f"| {share([o['hit'] for o in yes])} | {share([o['abstained'] for o in yes])} "
              f"| {share([o['abstained'] for o in no])} "
              f"| {auc_text(yes, no)} |")


def main(out: Path) -> None:
    squad, squad2 = Path("../shared/beir/squad-v1.1-dev"), out / "squad2-data"
    sets = [("seeds", out / "seeds", tuning(Path("tests/questions.jsonl")), False),
            ("SQuAD 1.1 tuning", out / "squad", tuning(squad / "questions.jsonl", TUNE, 1000), False),
            ("SQuAD 2.0 tuning, given the paragraph", out / "squad2",
             tuning(squad2 / "questions-tune.jsonl", None, 600), True)]
    for name, index_dir, questions, given in sets:
        report(name, answer_both(index_dir, questions, given))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/qa-figures"))
