"""Serve's overhead by where the ingress runs, without the builds of `qa bench --ray`.

Usage (a sharded SQuAD index served by `qa serve --ray ADDRESS --index DIR` on the cluster):
    PYTHONPATH=$PWD python scripts/ingress_paths.py ADDRESS DIR [QUESTIONS]

Asks QUESTIONS (default 300) SQuAD 1.1 dev questions, drawn with a fixed seed, three ways,
alternating question by question so that the machine's load falls on all alike: in this process
from the sharded index, through the app's ingress deployment (`qa ask --ray`), and with the
ingress in this process (`--ingress local`). Prints each way's p50 and p95 and how many answers
(passages and snippet) differ from the in-process one.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from qa import serve
from qa.engine import QA
from qa.settings import Settings

SQUAD = Path(__file__).resolve().parent.parent.parent / "shared/beir/squad-v1.1-dev/questions.jsonl"


def key(out: dict) -> tuple:
    return ([(p["doc_id"], p["char_start"]) for p in out["passages"]],
            (out.get("answer") or {}).get("text"))


def main(address: str, root: Path, rounds: int = 300) -> None:
    lines = SQUAD.read_text(encoding="utf-8").splitlines()
    questions = random.Random(0).sample([json.loads(line)["question"] for line in lines], rounds)
    here = QA.open(Settings(index_dir=root))
    app = serve.AppIngress(address, serve.app_handle(address))
    local = serve.local_ingress(address)
    ways = {"in process": lambda q: here.to_json(here.ask(q)),
            "the app's ingress": app.answer,
            "--ingress local": local.answer}
    for q in questions[:10]:  # warm every way
        for way in ways.values():
            way(q)
    ms: dict[str, list[float]] = {name: [] for name in ways}
    differ = dict.fromkeys(ways, 0)
    for q in questions:
        reference = None
        for name, way in ways.items():
            started = time.perf_counter()
            got = key(way(q))
            ms[name].append((time.perf_counter() - started) * 1000)
            reference = reference or got
            differ[name] += got != reference
    print(f"load average {os.getloadavg()[0]:.1f}, {rounds} questions")
    for name, times in ms.items():
        times.sort()
        print(f"{name:18s} p50 {statistics.median(times):6.1f} ms  p95 "
              f"{times[int(0.95 * len(times))]:6.1f} ms  differ {differ[name]}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]).resolve(), *(int(a) for a in sys.argv[3:4]))
