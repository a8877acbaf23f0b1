"""The reader's inference speed and agreement, A/B: torch int8 (the old path), torch float32,
ONNX Runtime float32 and int8 at 1 and 2 threads, torch at 1 thread, and max_length 64.

Pair lists are the ones the engine hands the reader: every question of each --questions file
asked of its --index, each (title, sentence) list recorded once (cached in --pairs). Every
variant scores every list; the order of the variants is shuffled per list so that the machine's
load falls on all of them alike. Prints ms per score() call (p50, p95), the largest |logit
difference| from torch int8 and from torch float32, and the share of lists whose best sentence
(argmax) differs from torch float32's and from torch int8's.

    PYTHONPATH=$PWD python scripts/reader_speed.py \\
        --index index --questions tests/questions.jsonl \\
        --index build/squad-idx --questions ../shared/beir/squad-v1.1-dev/questions.jsonl --limit 200
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def collect(indexes: list[str], questions: list[str], limit: int) -> list[dict]:
    """The (question, pairs) lists the engine's picker hands the reader."""
    from qa.engine import QA
    from qa.settings import Settings

    lists: list[dict] = []
    for index, qfile in zip(indexes, questions):
        qa = QA.open(Settings(index_dir=Path(index)))
        reader = qa.picker.reader

        class Recorder:
            calibration = reader.calibration

            def score(self, question, pairs):
                lists.append({"set": Path(qfile).parent.name, "question": question,
                              "pairs": [list(p) for p in pairs]})
                return reader.score(question, pairs)

        qa.picker.reader = Recorder()
        rows = [json.loads(line) for line in Path(qfile).read_text().splitlines() if line.strip()]
        if len(rows) > limit:
            rows = random.Random(0).sample(rows, limit)
        for row in rows:
            qa.ask(row["question"])
        print(f"{index}: {len(rows)} questions, {len(lists)} pair lists so far", file=sys.stderr)
    return lists


def variants(cache: Path) -> dict:
    """name -> score(question, pairs) callable."""
    from qa.onnxrt import Session
    from qa.reader import Reader, pair_tokenizer

    torch_int8 = Reader(backend="torch")
    torch_fp32 = Reader(backend="torch", quantize=False)
    onnx_int8 = Reader(backend="onnx", cache_dir=cache)
    onnx_fp32 = Reader(backend="onnx", quantize=False, cache_dir=cache)

    def threads(reader, n):
        def score(q, pairs):
            before = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                return reader.score(q, pairs)
            finally:
                torch.set_num_threads(before)
        return score

    def onnx_threads(reader, n):
        other = copy.copy(reader)
        other.onnx = Session(reader.onnx_path, threads=n)
        return other.score

    def shorter(reader, n):
        other = copy.copy(reader)
        other.tokenizer = pair_tokenizer(reader.base, n)
        return other.score

    return {
        "torch int8 (old default)": torch_int8.score,
        "torch fp32": torch_fp32.score,
        "torch int8, 1 thread": threads(torch_int8, 1),
        "torch int8, max_length 64": shorter(torch_int8, 64),
        "onnx fp32, 2 threads": onnx_threads(onnx_fp32, 2),
        "onnx fp32, 1 thread": onnx_threads(onnx_fp32, 1),
        "onnx int8, 2 threads": onnx_threads(onnx_int8, 2),
        "onnx int8, 1 thread": onnx_threads(onnx_int8, 1),
        "onnx int8, max_length 64": shorter(onnx_int8, 64),
    }


def table(times: dict, logits: dict, n: int, out=sys.stdout) -> None:
    """The A/B table in Markdown, over the first n lists."""
    load = os.getloadavg()
    base, ref = "torch int8 (old default)", "torch fp32"
    print(f"{n} score() calls per variant, 6 pairs each, interleaved; load average after: "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores", file=out)
    print("| variant | ms p50 | ms p95 | speed-up vs torch int8 (p50) | max abs logit diff vs "
          "torch int8 | vs torch fp32 | argmax changed vs torch int8 | vs torch fp32 |", file=out)
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", file=out)
    p50_base = float(np.median(times[base]))
    for name in times:
        t, x = times[name], logits[name]
        p50, p95 = float(np.median(t)), float(np.percentile(t, 95))
        d_base = max(float(np.abs(a - b).max()) for a, b in zip(x, logits[base]))
        d_ref = max(float(np.abs(a - b).max()) for a, b in zip(x, logits[ref]))
        flip_base = np.mean([a.argmax() != b.argmax() for a, b in zip(x, logits[base])])
        flip_ref = np.mean([a.argmax() != b.argmax() for a, b in zip(x, logits[ref])])
        print(f"| {name} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | {p50_base / p50:.2f}x | "
              f"{d_base:.3f} | {d_ref:.3f} | {flip_base:.3f} | {flip_ref:.3f} |", file=out)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", action="append", default=[])
    ap.add_argument("--questions", action="append", default=[])
    ap.add_argument("--limit", type=int, default=200, help="questions per file at most")
    ap.add_argument("--pairs", default="build/reader_pairs.jsonl",
                    help="the recorded pair lists; recorded first when missing")
    ap.add_argument("--cache", default=None, help="ONNX cache folder (default: a fresh temp one)")
    ap.add_argument("--only", default="", help="semicolon-separated variant names to time "
                    "(torch int8 and torch fp32 always run: the references)")
    ap.add_argument("--lists", type=int, default=0, help="score only this many pair lists, "
                    "spread over the sets (0: all)")
    args = ap.parse_args(argv)

    path = Path(args.pairs)
    if not path.is_file():
        if not args.index or len(args.index) != len(args.questions):
            ap.error(f"{path} is missing: give --index and --questions pairs to record it")
        lists = collect(args.index, args.questions, args.limit)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(x) + "\n" for x in lists))
    lists = [json.loads(line) for line in path.read_text().splitlines()]
    if args.lists and args.lists < len(lists):
        lists = random.Random(1).sample(lists, args.lists)
    print(f"{len(lists)} pair lists from {path}; load before: {os.getloadavg()}", file=sys.stderr)

    cache = Path(args.cache or tempfile.mkdtemp(prefix="reader-onnx-"))
    t = time.perf_counter()
    scorers = variants(cache)
    print(f"loaded and exported in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    if args.only:
        keep = {"torch int8 (old default)", "torch fp32"} | set(args.only.split(";"))
        scorers = {k: v for k, v in scorers.items() if k in keep}
    times: dict[str, list[float]] = {k: [] for k in scorers}
    logits: dict[str, list[np.ndarray]] = {k: [] for k in scorers}
    rng = random.Random(0)
    for x in lists[:2]:  # warm-up, not counted
        for score in scorers.values():
            score(x["question"], x["pairs"])
    for i, x in enumerate(lists):
        names = list(scorers)
        rng.shuffle(names)
        for name in names:
            t = time.perf_counter()
            out = scorers[name](x["question"], [tuple(p) for p in x["pairs"]])
            times[name].append(time.perf_counter() - t)
            logits[name].append(np.asarray(out, dtype=np.float64))
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(lists)}", file=sys.stderr)
            table(times, logits, i + 1, out=sys.stderr)
    table(times, logits, len(lists))
    return 0


if __name__ == "__main__":
    sys.exit(main())
