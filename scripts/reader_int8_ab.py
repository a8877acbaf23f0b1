"""Does int8 hold the reader's quality? Reads the same questions once through the float32 and once
through the int8 ONNX export, with the packaged calibration, and prints per set how often the
snippet holds a gold answer, whether or not it abstains, and the abstention AUC (README, "The reader").

Needs the indexes `bash scripts/reader_figures.sh` builds (default /tmp/qa-figures). About 10
minutes on 2 cores. Usage: PYTHONPATH=$PWD python scripts/reader_int8_ab.py [FIGURES_DIR]
"""

import random
import re
import sys
from pathlib import Path

from qa.calibrate import gather
from qa.engine import QA
from qa.evaluation.data import Question, load_questions, select
from qa.evaluation.metrics import auc
from qa.reader import Reader
from qa.settings import default_settings

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared" / "beir" / "squad-v1.1-dev" / "questions.jsonl"
TUNE, HELD = r"^([0-9]|1[0-9]|2[0-3])_", r"^(2[4-9]|3[0-9]|4[0-7])_"


def question_sets(figures: Path) -> dict[str, tuple[str, list[Question]]]:
    seeds = load_questions(ROOT / "tests" / "questions.jsonl")
    squad = load_questions(SQUAD)
    held = [q for q in squad if re.search(HELD, q.doc or "")]
    random.Random(0).shuffle(held)
    squad2 = load_questions(figures / "squad2-data" / "questions-heldout.jsonl")
    random.Random(1).shuffle(squad2)
    return {"seeds (110)": ("seeds", seeds),
            "SQuAD 1.1 tuning (1,000)": ("squad", select(squad, TUNE, 1000)),
            "SQuAD 1.1 held-out (1,500)": ("squad", held[:1500]),
            "SQuAD 2.0 held-out, given its paragraph (2,000)": ("squad2", squad2[:2000])}


def main(figures: Path) -> None:
    engines = {name: QA.open(default_settings(index_dir=figures / name, reader="none"))
               for name in ("seeds", "squad", "squad2")}
    sets = question_sets(figures)
    readers = {"float32": Reader(quantize=False), "int8": Reader(quantize=True)}
    print("| set | reader | snippet holds the answer (abstention aside) | abstention AUC |\n"
          "| --- | --- | --- | --- |")
    for label, (index, questions) in sets.items():
        qa = engines[index]
        gathered = gather(qa, questions, "hybrid")
        for kind, reader in readers.items():
            qa.picker.reader = reader
            hits, pos, neg = [], [], []
            for q, cands, found, qvec in gathered:
                picked = qa.picker.pick(q.question, qvec, found) if cands else None
                answer = None if picked is None else picked.answer
                confidence = 0.0 if picked is None else picked.confidence
                (pos if q.answerable else neg).append(confidence)
                if q.answerable:
                    hits.append(answer is not None and any(a in answer.text for a in q.answers))
            qa.picker.reader = None
            area = auc(pos, neg)
            print(f"| {label} | {kind} | {sum(hits) / len(hits):.3f} | "
                  f"{'–' if area is None else f'{area:.3f}'} |", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/qa-figures"))
