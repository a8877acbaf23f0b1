#!/usr/bin/env python3
"""Usage: python scripts/ray_serve_check.py ADDRESS SHARDED_INDEX N_QUESTIONS

Deploy the Serve app for a sharded index, ask the first N seeds questions through it and in
process, compare the answers, and time both (p50/p95). `qa bench --ray` measures the same on a
larger index, with the overhead split into its parts."""

import json
import sys
import time

import numpy as np

from qa import serve
from qa.embed import load_encoder
from qa.engine import QA
from qa.settings import Settings


def passages(out: dict) -> list[tuple[str, int]]:
    return [(p["doc_id"], p["char_start"]) for p in out["passages"]]


def scores(out: dict) -> np.ndarray:
    return np.array([p["score"] for p in out["passages"]])


def same(a: dict, b: dict) -> bool:
    return (passages(a) == passages(b) and np.abs(scores(a) - scores(b)).max(initial=0) <= 1e-5
            and a["answer"] == b["answer"] and a["abstained"] == b["abstained"])


def ms(times: list[float], q: int) -> float:
    return 1000 * float(np.percentile(times, q))


def main(address: str, index_dir: str, n: int) -> None:
    settings = Settings(index_dir=index_dir)
    start = time.time()
    print("deploy", serve.deploy(address, settings.index_dir, settings),
          f"{time.time() - start:.0f}s", flush=True)
    with open("tests/questions.jsonl") as f:
        questions = [json.loads(line) for line in f][:n]
    local = QA.open(settings, encoder=load_encoder(settings.model))
    serve.ask(address, "warm up?")
    diffs, t_serve, t_local = 0, [], []
    for q in questions:
        t0 = time.perf_counter()
        a = serve.ask(address, q["question"], k=10)
        t_serve.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = local.to_json(local.ask(q["question"], k=10))
        t_local.append(time.perf_counter() - t0)
        if not same(a, b):
            diffs += 1
            print("DIFF", q["id"], passages(a)[:3], passages(b)[:3], flush=True)
    print(f"questions {len(questions)} diffs {diffs}; serve p50 {ms(t_serve, 50):.1f} ms "
          f"p95 {ms(t_serve, 95):.1f} ms; in-process p50 {ms(t_local, 50):.1f} ms "
          f"p95 {ms(t_local, 95):.1f} ms", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
