"""SQuAD 2.0 abstention at a chosen share of wrong abstentions: the threshold that lets that share
of the tuning articles' answerable questions abstain, applied to the held-out articles (each
question asked of its own paragraph). The issue's target is read at 10% (README, "Answer
quality"); the shipped threshold is chosen at 3% over every tuning set.

Needs the SQuAD 2.0 index and files `bash scripts/reader_figures.sh` builds (default
/tmp/qa-figures). About 5 minutes on 2 cores.
Usage: PYTHONPATH=$PWD python scripts/abstain_at.py [FIGURES_DIR] [SHARE ...]
"""

import random
import sys
from pathlib import Path

import numpy as np

from qa.calibrate import choose_threshold
from qa.engine import QA
from qa.evaluation.data import load_questions
from qa.retrieve import Filters
from qa.settings import default_settings


def confidences(qa: QA, path: Path, sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    questions = load_questions(path)
    if sample:
        questions = random.Random(0).sample(questions, sample)
    conf = [qa.ask(q.question, filters=Filters(doc=q.given)).confidence for q in questions]
    return np.array(conf), np.array([q.answerable for q in questions])


def main(figures: Path, shares: list[float]) -> None:
    qa = QA.open(default_settings(index_dir=figures / "squad2"))
    tune = confidences(qa, figures / "squad2-data" / "questions-tune.jsonl")
    held, answerable = confidences(qa, figures / "squad2-data" / "questions-heldout.jsonl", 2000)
    for share in shares:
        t = choose_threshold(tune[0], tune[1], share)
        print(f"threshold {t:.3f} (tuning answerable abstaining: {share:.0%}): held-out "
              f"{np.mean(held[answerable] < t):.3f} answerable wrongly abstain, "
              f"{np.mean(held[~answerable] < t):.3f} unanswerable abstain")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/qa-figures"),
         [float(x) for x in sys.argv[2:]] or [0.03, 0.05, 0.10])
