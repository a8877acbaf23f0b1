#!/usr/bin/env python3
"""Usage: python scripts/ray_serve_check.py ADDRESS SHARDED_INDEX N_QUESTIONS

Deploy the Serve app for a sharded index, ask every seeds question through it and in process,
compare, and time both (p50/p95)."""
import json, sys, time
import numpy as np
from qa.settings import Settings
from qa.engine import QA
from qa.embed import load_encoder
from qa import serve

address, index_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = Settings(index_dir=index_dir)
t = time.time(); print("deploy", serve.deploy(address, settings.index_dir, settings), f"{time.time()-t:.0f}s", flush=True)
qs = [json.loads(l) for l in open("tests/questions.jsonl")][:n]
local = QA.open(settings, encoder=load_encoder("all-MiniLM-L6-v2"))
serve.ask(address, "warm up?")
diffs, t_serve, t_local = 0, [], []
for q in qs:
    t0 = time.perf_counter(); a = serve.ask(address, q["question"], k=10); t_serve.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); b = local.to_json(local.ask(q["question"], k=10)); t_local.append(time.perf_counter() - t0)
    ids = lambda o: [(p["doc_id"], p["char_start"]) for p in o["passages"]]
    sc = lambda o: np.array([p["score"] for p in o["passages"]])
    if ids(a) != ids(b) or np.abs(sc(a) - sc(b)).max(initial=0) > 1e-5 or a["answer"] != b["answer"] or a["abstained"] != b["abstained"]:
        diffs += 1; print("DIFF", q["id"], ids(a)[:3], ids(b)[:3], flush=True)
p = lambda xs, q: 1000 * float(np.percentile(xs, q))
print(f"questions {len(qs)} diffs {diffs}; serve p50 {p(t_serve,50):.1f} ms p95 {p(t_serve,95):.1f} ms; "
      f"in-process p50 {p(t_local,50):.1f} ms p95 {p(t_local,95):.1f} ms", flush=True)
