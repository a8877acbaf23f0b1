"""An IVF index against the exact (Flat) one it was made from, on real vectors and questions:
dense recall@10, the same top-10 passages and the same answers through the whole engine (hybrid,
the reader), answers holding a gold answer, and the dense search's time.

The IVF copy is `qa.store.reindexed` of the Flat index (the same vectors and passages, nothing
encoded again), probed with each --nprobe in turn.

With --pq, also IVF-PQ (48 bytes a vector, the same lists) over the same vectors, alone and
with its best 10 x R candidates re-ranked by their exact vectors (faiss.IndexRefine, k_factor R):
the dense recall@10 only, since the product does not serve PQ; for the plan to 100 million
passages (README, Past one machine).

Usage: PYTHONPATH=$PWD python scripts/ivf_check.py FLAT_INDEX QUESTIONS.jsonl [--n 500]
           [--nprobe 4,16,64] [--pq] [--refine 1,4,16]
  e.g. FLAT_INDEX from `qa build ../shared/beir/squad-v1.1-dev/corpus.jsonl --index /tmp/squad`
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import faiss

from qa.bench import recall_at, timed
from qa.embed import load_encoder
from qa.engine import QA
from qa.evaluation.data import load_questions, select
from qa.evaluation.metrics import answer_hit, percentile
from qa.settings import default_settings
from qa.store import load, reindexed

K = 10


def answer_of(result) -> tuple:
    a = result.answer
    return (result.abstained, a.doc_id if a else None, a.char_start if a else None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("index")
    p.add_argument("questions")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--nprobe", default="4,16,64")
    p.add_argument("--pq", action="store_true", help="also IVF-PQ48, alone and re-ranked")
    p.add_argument("--refine", default="1,4,16", help="re-rank the best 10 x R (with --pq)")
    args = p.parse_args()
    questions = select(load_questions(Path(args.questions)), sample=args.n, seed=0)
    flat = load(args.index)
    encoder = load_encoder(flat.model)
    settings = default_settings(index_dir=Path(args.index))
    exact = QA(flat, encoder, settings)
    vecs = encoder.encode([q.question for q in questions])
    with tempfile.TemporaryDirectory() as tmp:
        ivf_index = load(reindexed(flat, Path(tmp), "ivf").parent.parent)
        approx = QA(ivf_index, encoder, settings)
        ivf = faiss.extract_index_ivf(ivf_index.faiss_index)
        base = {q.id: exact.ask(q.question) for q in questions}
        base_dense = [exact.retriever.dense(v, K) for v in vecs]
        flat_ms = search_ms(exact, vecs)
        print(f"{len(flat.passages):,} passages, {len(questions)} questions, IVF nlist "
              f"{ivf.nlist}; Flat: dense search p50 {flat_ms:.3f} ms, gold answer in the snippet "
              f"{mean(answer_hit(q, base[q.id]) for q in questions):.3f}")
        print("| nprobe | dense recall@10 | same top-10 (hybrid) | same answer | gold answer in "
              "the snippet | dense search p50 ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        for nprobe in (int(x) for x in args.nprobe.split(",")):
            ivf.nprobe = min(nprobe, ivf.nlist)
            dense = [approx.retriever.dense(v, K) for v in vecs]
            recall = mean(len({i for i, _ in a} & {i for i, _ in b}) / max(1, len(b))
                          for a, b in zip(dense, base_dense))
            got = {q.id: approx.ask(q.question) for q in questions}
            same_top = mean([h.passage.pid for h in got[q.id].hits[:K]]
                            == [h.passage.pid for h in base[q.id].hits[:K]] for q in questions)
            same_answer = mean(answer_of(got[q.id]) == answer_of(base[q.id]) for q in questions)
            hit = mean(answer_hit(q, got[q.id]) for q in questions)
            print(f"| {ivf.nprobe} | {recall:.3f} | {same_top:.3f} | {same_answer:.3f} | "
                  f"{hit:.3f} | {search_ms(approx, vecs):.3f} |")
        nlist = ivf.nlist
    if args.pq:
        pq_table(flat.faiss_index, flat.vectors, vecs, nlist,
                 [int(x) for x in args.nprobe.split(",")],
                 [int(x) for x in args.refine.split(",")])


def pq_table(exact, vectors, queries, nlist: int, nprobes: list[int], refines: list[int]) -> None:
    """Dense recall@10 of IVF{nlist},PQ48 against `exact` (the Flat index of `vectors`), each
    nprobe alone and with its best 10 x R re-ranked by `exact`'s vectors, and the p50 ms of one
    question's search."""
    from qa.retrieve import one_faiss_thread

    dim = vectors.shape[1]
    truth = exact.search(queries, K)[1]
    pq = faiss.index_factory(dim, f"IVF{nlist},PQ48np", faiss.METRIC_INNER_PRODUCT)
    pq.train(vectors)
    pq.add(vectors)
    codes = faiss.serialize_index(pq).nbytes / len(vectors)
    print(f"\nIVF{nlist},PQ48 over the same {len(vectors):,} vectors: {codes:.0f} bytes a vector "
          f"(re-ranking also reads the exact vectors, {4 * dim} bytes each, of the candidates)")
    print("| nprobe | re-ranked | dense recall@10 | search p50 ms |")
    print("| --- | --- | --- | --- |")
    refined = faiss.IndexRefine(pq, exact)  # the exact vectors re-rank PQ's candidates
    for nprobe in nprobes:
        faiss.extract_index_ivf(pq).nprobe = min(nprobe, nlist)
        for r in refines:
            index = pq if r == 1 else refined
            if r > 1:
                refined.k_factor = r
            got = index.search(queries, K)[1]
            with one_faiss_thread():
                ms = percentile(timed(lambda v: index.search(v.reshape(1, -1), K), list(queries),
                                      len(queries)), 50) * 1000
            print(f"| {min(nprobe, nlist)} | {'no' if r == 1 else f'best {K * r}'} | "
                  f"{recall_at(truth, got):.3f} | {ms:.3f} |")


def mean(values) -> float:
    return statistics.fmean(float(v) for v in values)


def search_ms(qa, vecs) -> float:
    """p50 ms of the dense search alone, each question's vector once."""
    return percentile(timed(lambda v: qa.retriever.dense(v, K), list(vecs), len(vecs)), 50) * 1000


if __name__ == "__main__":
    main()
