"""Question-to-answer p50 with each of several readers, alternating question by question on one
engine, beside a bare question forward pass; `none` is the feature picker alone (README, "The
reader": "A distilled 3-layer reader").

Each reader folder needs its calibration.json (`bash scripts/reader_figures.sh calibrate` with
READER=<folder>). Needs the indexes that script builds (default /tmp/qa-figures). `--squad N`
asks N held-out SQuAD 1.1 questions of the SQuAD index instead of the seeds' of theirs.
Usage: PYTHONPATH=$PWD python scripts/reader_latency.py [--figures DIR] [--rounds N] [--squad N]
       READER...
"""

import argparse
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qa.engine import QA
from qa.evaluation.data import load_questions
from qa.reader import Reader
from qa.settings import QUESTIONS, default_settings

SQUAD = Path(__file__).resolve().parents[1].parent / "shared/beir/squad-v1.1-dev/questions.jsonl"


def alternate(qa: QA, asked: list[str], setups: dict[str, Callable[[], None]]
              ) -> dict[str, list[float]]:
    """Seconds per answer under each setup (a callable that sets the engine up), the setups
    taking turns question by question, and per question a bare forward pass ("bare")."""
    for q in asked[:10]:  # warm every setup and the encoder
        for setup in setups.values():
            setup()
            qa.ask(q, k=10)
    times: dict[str, list[float]] = {name: [] for name in setups} | {"bare": []}
    for q in asked:
        for name, setup in setups.items():
            setup()
            started = time.perf_counter()
            qa.ask(q, k=10)
            times[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        qa.encoder.encode([q])
        times["bare"].append(time.perf_counter() - started)
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("readers", nargs="+", help="reader folders; none: the feature picker alone")
    p.add_argument("--figures", type=Path, default=Path("/tmp/qa-figures"))
    p.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    p.add_argument("--squad", type=int, default=0, metavar="N",
                   help="N held-out SQuAD 1.1 questions (articles 24-47) on the SQuAD index")
    args = p.parse_args()
    where = "squad" if args.squad else "seeds"
    qa = QA.open(default_settings(index_dir=args.figures / where))
    readers = {f: None if f == "none" else Reader(f) for f in args.readers}
    if args.squad:
        held = [q.question for q in load_questions(SQUAD) if int(q.doc.split("_")[0]) >= 24]
        asked = random.Random(8).sample(held, args.squad) * args.rounds
    else:
        asked = [q.question for q in load_questions(QUESTIONS)] * args.rounds
    random.Random(1).shuffle(asked)
    times = alternate(qa, asked, {name: lambda r=r: setattr(qa.picker, "reader", r)
                                  for name, r in readers.items()})
    p50 = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    print(f"{where}, {len(asked)} questions, load average {os.getloadavg()[0]:.1f}; bare question "
          f"forward p50 {p50['bare']:.1f} ms")
    for name, r in readers.items():
        p95 = 1000 * float(np.percentile(times[name], 95))
        kind = f"{r.config.layers} layers" if r is not None else "no reader"
        print(f"  {name} ({kind}): p50 {p50[name]:.1f} ms "
              f"({p50[name] / p50['bare']:.1f}x bare), p95 {p95:.1f} ms")


if __name__ == "__main__":
    main()
