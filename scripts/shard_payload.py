"""What one shard sends the Serve ingress per question, and what it costs to pickle
(`qa.shards.shard_hits`): every candidate's scores, and the passages, vectors and whole articles
of its best k + SEND_EXTRA; beside it, the same with every candidate sent whole (as before). Ray passes a task's
reply inline when it is under 100 KB (`max_direct_call_object_size`) and through the object
store above that.

Usage: PYTHONPATH=$PWD python scripts/shard_payload.py SHARDED_INDEX QUESTIONS.jsonl [N]
  e.g. qa build ../shared/beir/squad-v1.1-dev/corpus.jsonl --index /tmp/squad-2sh --shards 2
"""

import json
import pickle
import random
import statistics
import sys
import time

from qa.embed import load_encoder
from qa.retrieve import Retriever
from qa.shards import ShardHits, load_sharded, shard_hits

K = 10  # the ingress asks for max(k, the picker's 8 passages); qa bench --ray asks k=10


def size(hits: ShardHits) -> int:
    return len(pickle.dumps(hits, protocol=5))


def round_trip(hits: ShardHits) -> float:
    start = time.perf_counter()
    pickle.loads(pickle.dumps(hits, protocol=5))
    return time.perf_counter() - start


def main(index_dir: str, questions_path: str, n: int) -> None:
    index = load_sharded(index_dir)
    encoder = load_encoder(index.model)
    retrievers = [Retriever(s, encoder=None) for s in index.shards]  # type: ignore[arg-type]
    with open(questions_path, encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for line in f if line.strip()]
    questions = random.Random(0).sample(questions, min(n, len(questions)))
    rows = []
    for question, qvec in zip(questions, encoder.encode(questions)):
        for retriever, first in zip(retrievers, index.first_pids):
            start = time.perf_counter()
            hits = shard_hits(retriever, first, question, qvec, K, "hybrid")
            search = time.perf_counter() - start
            whole = shard_hits(retriever, first, question, qvec, K, "hybrid", send=10**9)
            rows.append({
                "search ms": 1000 * search, "candidates": len(whole.passages),
                "sent whole": len(hits.passages), "articles": len(hits.articles),
                "bytes": size(hits), "every candidate whole": size(whole),
                "pickle+unpickle ms": 1000 * round_trip(hits),
                "the same, every candidate whole": 1000 * round_trip(whole)})
    print(f"one shard's reply, median of {len(rows)} ({len(questions)} questions x "
          f"{len(retrievers)} shards, k={K}, hybrid):")
    for key in rows[0]:
        print(f"  {key:32s} {statistics.median(r[key] for r in rows):10.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
