#!/usr/bin/env python3
"""Usage: python scripts/ray_serve_check.py ADDRESS SHARDED_INDEX N [QUESTIONS.jsonl]

Deploy the Serve app for a sharded index, ask N questions (the first N of QUESTIONS, default
tests/questions.jsonl; a fixed random sample of a larger file) through it and of the same index
in this process, alternating, compare the answers, and print both p50/p95 and where the
ingress's time went (`Ingress.ask_timed`). `qa bench --ray` measures the same after building
the index on the cluster; this reuses a built one, for A/B runs such as QA_SHARD_INLINE_BYTES=0
or QA_SERVE_GRPC=0 against the default."""

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

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


def load_questions(path: str, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:n] if path.endswith("tests/questions.jsonl") else random.Random(1).sample(rows, min(n, len(rows)))


def main(address: str, index_dir: str, n: int, questions_path: str) -> None:
    settings = Settings(index_dir=index_dir)
    start = time.time()
    print("deploy", serve.deploy(address, Path(index_dir), settings),
          f"{time.time() - start:.0f}s", flush=True)
    questions = load_questions(questions_path, n)
    local = QA.open(settings, encoder=load_encoder(settings.model))
    handle = serve.direct(serve.app_handle(address))  # as `qa ask --ray` calls
    for q in questions[:5]:  # warm both paths
        handle.ask_timed.remote(q["question"], 10).result()
        local.ask(q["question"], k=10)
    diffs, t_serve, t_local, inside = 0, [], [], []
    for q in questions:
        t0 = time.perf_counter()
        got = handle.ask_timed.remote(q["question"], 10).result()
        t_serve.append(time.perf_counter() - t0)
        inside.append({**got["ms"], "hop": 1000 * t_serve[-1] - got["ms"]["total"],
                       "noop_fanout": handle.noop_fanout.remote().result()})
        t0 = time.perf_counter()
        b = local.to_json(local.ask(q["question"], k=10))
        t_local.append(time.perf_counter() - t0)
        if not same(got["json"], b):
            diffs += 1
            print("DIFF", q["id"], passages(got["json"])[:3], passages(b)[:3], flush=True)
    split = " ".join(f"{part} {statistics.median(m[part] for m in inside):.1f}" for part in inside[0])
    env = " ".join(f"{v}={os.environ.get(v, '(unset)')}"
                   for v in ("QA_SHARD_INLINE_BYTES", "QA_SERVE_GRPC"))
    print(f"{env}, load {os.getloadavg()[0]:.1f}: "
          f"questions {len(questions)} diffs {diffs}; serve p50 {ms(t_serve, 50):.1f} ms "
          f"p95 {ms(t_serve, 95):.1f} ms; in-process p50 {ms(t_local, 50):.1f} ms "
          f"p95 {ms(t_local, 95):.1f} ms; inside the ingress, p50 ms: {split}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
         sys.argv[4] if len(sys.argv) > 4 else "tests/questions.jsonl")
