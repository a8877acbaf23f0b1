"""Training pairs the way the product meets them: SQuAD 1.1 train questions asked of an index of
their own articles' paragraphs, and the sentences the feature picker hands the reader for each.

The reader's usual negatives are chosen by shared words (qa.train_reader.article_pairs); at
answer time it reads the feature picker's best 4 sentences of the top 8 passages, and its most
common miss is a sentence of another paragraph of the article. This records those candidates:

1. GROUPS groups of 48 SQuAD 1.1 train articles (as many as SQuAD 1.1 dev has; none is a dev
   article, and no held-out one is read), each written as a corpus and built into an index;
2. every question of the group asked of it (the reader is not run: a stand-in records what it
   is handed and scores 0, so the candidates are the feature picker's, as the reader gets them);
3. each candidate labelled: 1 if it is a sentence of the gold paragraph holding a gold answer,
   0 if it holds no gold answer, left out otherwise (an answer's words in another paragraph).

Writes OUT/mined.jsonl, one pair a line ({question, title, sentence, before, after, label}),
for `qa train-reader --mined OUT/mined.jsonl`, and prints the counts.

    HF_HUB_OFFLINE=1 PYTHONPATH=$PWD python scripts/mine_pairs.py --groups 2 --out build/mine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GROUP = 48


def write_group(articles: list[dict], folder: Path) -> Path:
    """The articles as corpus.jsonl and questions.jsonl in folder; returns the questions file."""
    from qa.squad import corpus_line, gold_answers

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as corpus, \
            (folder / "questions.jsonl").open("w", encoding="utf-8") as questions:
        for ai, a in enumerate(articles):
            for pi, p in enumerate(a["paragraphs"]):
                pid = f"{ai}_{pi}"
                corpus.write(corpus_line(pid, a, p))
                for qa in p["qas"]:
                    questions.write(json.dumps({"id": qa["id"], "question": qa["question"],
                                                "doc": pid, "answers": gold_answers(qa),
                                                "context": p["context"]},
                                               ensure_ascii=False) + "\n")
    return folder / "questions.jsonl"


def label(sentence: str, answers: list[str], context: str) -> int | None:
    """1: a sentence of the gold paragraph with a gold answer; 0: no gold answer; else None."""
    holds = any(a in sentence for a in answers)
    if not holds:
        return 0
    return 1 if sentence in context else None


def mine(index: Path, questions: Path, out, limit: int, encoder) -> dict[str, int]:
    """Ask every question of its index (with `encoder`, loaded once for every group), writing
    each labelled candidate to `out`."""
    from tqdm import tqdm

    from qa.engine import QA
    from qa.settings import Settings, UserError

    qa = QA.open(Settings(index_dir=index), encoder=encoder)
    real = qa.picker.reader
    handed: list[tuple] = []

    class Recorder:  # handed every candidate the reader may read, whatever the reach
        calibration = dataclasses.replace(real.calibration, reach=math.inf)

        def score(self, question, pairs):
            handed[:] = [tuple(p) for p in pairs]
            return np.zeros(len(pairs), dtype=np.float32)

    qa.picker.reader = Recorder()
    rows = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines()]
    if limit and len(rows) > limit:
        rows = random.Random(0).sample(rows, limit)
    counts = {"questions": 0, "refused": 0, "positive": 0, "negative": 0, "left out": 0,
              "gold among them": 0}
    for row in tqdm(rows, desc=index.parent.name, file=sys.stderr):
        handed.clear()
        try:
            qa.ask(row["question"])
        except UserError:  # SQuAD train holds a few empty questions, which qa refuses
            counts["refused"] += 1
            continue
        counts["questions"] += 1
        labels = []
        for title, sentence, before, after in handed:
            y = label(sentence, row["answers"], row["context"])
            labels.append(y)
            if y is None:
                counts["left out"] += 1
                continue
            counts["positive" if y else "negative"] += 1
            out.write(json.dumps({"question": row["question"], "title": title,
                                  "sentence": sentence, "before": before, "after": after,
                                  "label": y}, ensure_ascii=False) + "\n")
        counts["gold among them"] += 1 in labels
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="questions per group (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("build/mine"))
    args = p.parse_args()

    from qa.embed import load_encoder
    from qa.settings import default_settings
    from qa.squad import SQUAD_TRAIN, held_out_titles, read_squad

    train = read_squad(SQUAD_TRAIN)
    assert not held_out_titles() & {a["title"] for a in train}
    random.Random(args.seed).shuffle(train)
    args.out.mkdir(parents=True, exist_ok=True)
    total: dict[str, int] = {}
    encoder = load_encoder(default_settings().model)  # the model `qa build` indexes with
    with (args.out / "mined.jsonl").open("w", encoding="utf-8") as out:
        for g in range(args.groups):
            folder = args.out / f"group{g}"
            questions = write_group(train[g * GROUP:(g + 1) * GROUP], folder)
            if not (folder / "index").exists():
                subprocess.run([str(ROOT / ".venv/bin/qa"), "build", str(folder / "corpus.jsonl"),
                                "--index", str(folder / "index"), "--quiet"], check=True)
            counts = mine(folder / "index", questions, out, args.limit, encoder)
            print(f"group {g}: {counts}", flush=True)
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
    print(f"all: {total}; written to {args.out / 'mined.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
