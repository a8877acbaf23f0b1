"""How many of the feature picker's best sentences the reader should read (README, "The reader").

With the packaged reader and calibration, only the count changed: per count, how often the
snippet holds an answer (abstention aside) on 1,500 held-out SQuAD 1.1 questions and the seeds'
answerable ones, and how often the feature picker's top k hold the gold sentence at all. With
--latency: the question-to-answer p50 per count, alternating question by question on one engine,
beside a bare question forward pass.

Needs the indexes `bash scripts/reader_figures.sh` builds (default /tmp/qa-figures). About 10
minutes on 2 cores.
Usage: PYTHONPATH=$PWD python scripts/reader_candidates.py [--latency] [FIGURES_DIR]
"""

import dataclasses
import math
import os
import random
import re
import sys
from pathlib import Path

import numpy as np

from qa.calibrate import gather
from qa.engine import QA
from qa.evaluation.data import Question, load_questions
from qa.settings import QUESTIONS, default_settings
from reader_latency import alternate  # this folder's: the two scripts time answers alike

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "beir" / "squad-v1.1-dev"
HELD = r"^(2[4-9]|3[0-9]|4[0-7])_"
MISSED = 1_000  # the gold sentence's rank when no candidate holds it


def question_sets() -> list[tuple[str, list[Question]]]:
    held = [q for q in load_questions(SQUAD / "questions.jsonl") if re.search(HELD, q.doc or "")]
    random.Random(0).shuffle(held)
    return [("seeds", [q for q in load_questions(QUESTIONS) if q.answerable]),
            ("squad", held[:1500])]


def holds(text: str, q: Question) -> bool:
    return any(a in text for a in q.answers)


def snippets(qa: QA, questions: list[Question], counts: list[int]) -> None:
    gathered = gather(qa, questions, "hybrid")
    ranks = []
    for q, cands, _, _ in gathered:
        top = sorted(((qa.picker.sentence_score(c), c) for c in cands), key=lambda x: -x[0])[:10]
        ranks.append(next((i for i, (_, c) in enumerate(top) if holds(c.text, q)), MISSED))
    print("  gold sentence in the feature picker's top k: "
          + ", ".join(f"{k}: {np.mean(np.array(ranks) < k):.3f}" for k in (1, 2, 3, 4, 5, 6, 8, 10)))
    reader = qa.picker.reader
    assert reader is not None and reader.calibration is not None
    shipped = reader.calibration
    for k in counts:
        reader.calibration = dataclasses.replace(shipped, candidates=k, reach=math.inf)
        hit = [picked.answer is not None and holds(picked.answer.text, q)
               for q, cands, hits, qvec in gathered if cands
               for picked in [qa.picker.pick(q.question, qvec, hits)]]
        print(f"  {k} read: the snippet holds an answer {sum(hit) / len(gathered):.3f}")
    reader.calibration = shipped


def latency(qa: QA, questions: list[Question], counts: list[int], rounds: int = 300) -> None:
    reader = qa.picker.reader
    assert reader is not None and reader.calibration is not None
    shipped = reader.calibration
    asked = [q.question for q in questions]
    random.Random(1).shuffle(asked)
    times = alternate(qa, asked[:rounds], {
        str(k): lambda k=k: setattr(reader, "calibration",
                                    dataclasses.replace(shipped, candidates=k,
                                                        reach=math.inf))
        for k in counts})
    reader.calibration = shipped
    p50 = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    print(f"  bare question forward p50 {p50['bare']:.1f} ms; "
          + "; ".join(f"{k} read: p50 {p50[str(k)]:.1f} ms ({p50[str(k)] / p50['bare']:.1f}x)"
                      for k in counts)
          + f" ({len(times['bare'])} questions, load average {os.getloadavg()[0]:.1f})")


def main(figures: Path, timed: bool) -> None:
    for name, questions in question_sets():
        qa = QA.open(default_settings(index_dir=figures / name))
        print(f"{name} ({len(questions)} answerable questions)")
        if timed:
            latency(qa, questions, [6, 4, 3, 2])
        else:
            snippets(qa, questions, [6, 5, 4, 3, 2])


if __name__ == "__main__":
    args = sys.argv[1:]
    timed = "--latency" in args
    rest = [a for a in args if a != "--latency"]
    main(Path(rest[0]) if rest else Path("/tmp/qa-figures"), timed)
