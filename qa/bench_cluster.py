"""benchmark past one machine: the Ray build and Serve, the same answers, one shard's search by size

Stage: report (speed and scale), for `qa bench --ray ADDRESS` and `qa bench --shard-sizes`.

`--ray ADDRESS`, on one corpus (made from the seeds, or the first documents of a BEIR folder):

1. build throughput: the single-process build (`qa build`), then the Ray build (`qa build --ray
   --shards N`) with each number of chunk-and-embed actors asked for (one CPU each, so on a
   cluster of one-CPU nodes, 1 and 2 actors are 1 and 2 nodes); and bare encode of the passages
   on one torch thread, the per-core rate the arithmetic for a large build starts from;
2. the same answers: for each shard count checked, the Ray-built shards opened in this process
   against the single-machine index, over a sample of questions: top-10 passages in order,
   scores within 1e-5, answer snippet and abstention, each mismatch counted;
3. latency through Serve (`qa serve --ray`, asked with a Serve handle as `qa ask --ray`) against
   the in-process answer from the single index, the same questions alternating between the two,
   with the Serve answers checked as in 2.

`--shard-sizes`: raw FAISS search of one shard (one query at a time, one thread, as a shard
searches) on synthetic random unit vectors, by size; and at one size, HNSW and IVF-PQ against
exact Flat search (recall@10, query time, build time, memory).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import latency_split, percentiles, recall_at, timed
from .evaluation.report import markdown_table
from .settings import Settings, UserError

DIM = 384  # all-MiniLM-L6-v2
SCORE_TOLERANCE = 1e-5
MISMATCHES = ("ids", "scores", "snippet", "abstention")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- one shard's search

def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """n random unit vectors (float32), made in slices so that 1M fit without a float64 copy.

    >>> v = unit_vectors(3, 4)
    >>> v.shape, bool(np.allclose(np.linalg.norm(v, axis=1), 1))
    ((3, 4), True)
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, 100_000):
        block = rng.standard_normal((min(n, a + 100_000) - a, dim), dtype=np.float32)
        out[a:a + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def ann_factories(n: int) -> dict[str, tuple[str, dict]]:
    """The FAISS index_factory strings timed against Flat at n vectors, with search parameters.

    IVF lists: about 4 sqrt(n), at most n / 39 (FAISS wants 39 training points per list) and
    at most 1024 (k-means on 2 cores); PQ48 is 48 bytes per vector (8 bits per 8 dimensions),
    `np` for no polysemous training (which took minutes for 20,000 vectors here and only serves
    Hamming-filtered search, not used).
    """
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39, 1024))
    return {
        "HNSW32": ("HNSW32,Flat", {"efSearch": 128}),
        "IVF-Flat": (f"IVF{nlist},Flat", {"nprobe": 16}),
        "IVF-PQ": (f"IVF{nlist},PQ48np", {"nprobe": 16}),
        "IVF-PQ nprobe 64": (f"IVF{nlist},PQ48np", {"nprobe": 64}),
    }


def _search_times(index, queries: np.ndarray, rounds: int) -> dict[str, float]:
    from .retrieve import one_faiss_thread

    with one_faiss_thread():  # as a shard searches one question
        return percentiles(timed(lambda q: index.search(q.reshape(1, -1), 10), list(queries), rounds))


ANN_KINDS = ("hnsw", "ivf-flat", "ivf-pq")


def shard_search(sizes: list[int], ann_size: int | None, rounds: int, queries: int = 200,
                 dim: int = DIM, seed: int = 0, kinds: tuple[str, ...] = ANN_KINDS) -> list[dict]:
    """Flat search time of one shard at each size, and approximate indexes at ann_size.

    Args:
        sizes: vectors per shard.
        ann_size: the size at which HNSW and IVF-PQ are built and compared with Flat; None for
            none.
        kinds: which approximate indexes (of ANN_KINDS; "ivf-pq" is timed at two nprobe).
        rounds: timed one-query searches per index.
        queries: distinct random query vectors (the recall is over all of them).

    Returns:
        One dict per (size, index): build_s, p50/p95/p99 ms, recall_at_10 (Flat: 1.0), bytes.
    """
    import faiss

    rows: list[dict] = []
    qvecs = unit_vectors(queries, dim, seed=seed + 1)
    for n in sorted(set(sizes) | ({ann_size} if ann_size else set())):
        vectors = unit_vectors(n, dim, seed)
        started = time.perf_counter()
        flat = faiss.index_factory(dim, "Flat", faiss.METRIC_INNER_PRODUCT)
        flat.add(vectors)
        build_s = time.perf_counter() - started
        exact = flat.search(qvecs, 10)[1]
        say(f"shard search {n:,}: Flat")
        if n in sizes:
            rows.append({"vectors": n, "index": "Flat", "factory": "Flat", "params": {},
                         "build_s": round(build_s, 2), **_search_times(flat, qvecs, rounds),
                         "recall_at_10": 1.0, "bytes_per_vector": 4 * dim,
                         "load_average": load_average()})
        if n != ann_size:
            continue
        del flat
        built: dict[str, tuple] = {}
        for name, (factory, params) in ann_factories(n).items():
            if not any(name.lower().startswith(kind) for kind in kinds):
                continue
            say(f"shard search {n:,}: {name}")
            if factory in built:
                index, build_s = built[factory]
            else:
                started = time.perf_counter()
                index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
                if not index.is_trained:
                    index.train(vectors)
                index.add(vectors)
                build_s = time.perf_counter() - started
                built = {factory: (index, build_s)}  # one approximate index in memory at a time
            for key, value in params.items():
                faiss.ParameterSpace().set_index_parameter(index, key, value)
            got = index.search(qvecs, 10)[1]
            size = faiss.serialize_index(index).nbytes
            rows.append({"vectors": n, "index": name, "factory": factory, "params": params,
                         "build_s": round(build_s, 2), **_search_times(index, qvecs, rounds),
                         "recall_at_10": recall_at(exact, got), "bytes_per_vector": round(size / n, 1),
                         "load_average": load_average()})
        del vectors
    return rows


def shard_table(rows: list[dict]) -> str:
    head = ["vectors", "index", "params", "build s", "p50 ms", "p95 ms", "recall@10 vs Flat",
            "bytes/vector", "load avg"]
    body = [[f"{r['vectors']:,}", r["index"] + ("" if r["index"] == r["factory"] else
                                                f" ({r['factory']})"),
             " ".join(f"{k}={v}" for k, v in r["params"].items()) or "-",
             f"{r['build_s']:.1f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
             f"{r['recall_at_10']:.3f}", f"{r['bytes_per_vector']:.0f}", f"{r['load_average']:.1f}"]
            for r in rows]
    return ("one shard's search, one query at a time on one thread, top 10, over synthetic random "
            f"unit vectors of dimension {DIM}\n\n" + markdown_table(head, body))


# ---------------------------------------------------------------- on a Ray cluster

def sample_questions(path: Path, doc_ids: set[str] | None, n: int | None,
                     seed: int = 0) -> list[dict]:
    """Up to n questions of a question file (`{"id", "question", "doc"?}` a line) about the
    corpus's documents (any, when doc_ids is None), drawn at random with a fixed seed; every one
    when n is None or larger.

    Raises:
        UserError: a missing file, or no question about these documents.
    """
    from .evaluation.data import load_questions

    rows = [q for q in load_questions(path) if doc_ids is None or q.doc in doc_ids]
    if not rows:
        raise UserError(f"no question of {path} is about the documents benchmarked; "
                        f"take more documents (a larger --sizes) or another --question-file")
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    return [{"id": q.id, "question": q.question} for q in rows]


def differences(one: dict, other: dict) -> set[str]:
    """What differs between two `qa ask --json` objects, as the issue counts it: the top
    passages in order (by doc_id and offset), their scores (beyond 1e-5), the answer snippet, the
    abstention. Empty when they agree.

    >>> a = {"passages": [{"doc_id": "d", "char_start": 0, "score": 0.5}], "answer": None,
    ...      "abstained": True}
    >>> sorted(differences(a, a | {"abstained": False, "answer": {"text": "x"}}))
    ['abstention', 'snippet']
    """
    out = set()
    ids = [[(p["doc_id"], p["char_start"]) for p in o["passages"]] for o in (one, other)]
    if ids[0] != ids[1]:
        out.add("ids")
    gap = max((abs(x["score"] - y["score"]) for x, y in zip(one["passages"], other["passages"])),
              default=0.0)
    if gap > SCORE_TOLERANCE:
        out.add("scores")
    if one["answer"] != other["answer"]:
        out.add("snippet")
    if one["abstained"] != other["abstained"]:
        out.add("abstention")
    return out


def count_differences(reference: dict[str, dict], other: dict[str, dict]) -> dict:
    """Mismatch counts by kind over the questions, and the first few ids that differ."""
    counts = dict.fromkeys(MISMATCHES, 0)
    differing = []
    for qid, ref in reference.items():
        found = differences(ref, other[qid])
        for kind in found:
            counts[kind] += 1
        if found:
            differing.append(qid)
    return {"questions": len(reference), "mismatches": counts, "any": len(differing),
            "examples": differing[:5]}


def _torch_threads(n: int | None) -> int:
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    return before


def cluster_figures(address: str, corpus: Path, questions: list[dict], *, workers: list[int] | None,
                    shards: int, check_shards: list[int], rounds: int, workdir: Path,
                    encode_sample: int = 1000) -> list[dict]:
    """Every `qa bench --ray` figure on one corpus (see the module docstring).

    Args:
        address: the Ray cluster.
        corpus: a corpus.jsonl (or folder) that `qa build` reads.
        questions: {"id", "question"} dicts, for the same-answers check and the latency.
        workers: numbers of chunk-and-embed actors to time the Ray build with; None for 1 and
            the cluster's CPUs.
        shards: shards of the timed Ray builds and of the index Serve answers from.
        check_shards: shard counts whose Ray build is checked against the single index.
        rounds: questions timed per path (cycling the questions).

    Returns:
        Rows with a "figure" key: cluster, encode, build, same_answers, latency.
    """
    from . import serve  # first: it sets Serve's gRPC message limit, which ray.serve reads once

    from ray import serve as ray_serve  # noqa: I001
    from .build import build
    from .cluster import build_on_ray, connect
    from .embed import load_encoder
    from .engine import QA

    ray = connect(address)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 1))
    rows: list[dict] = [{"figure": "cluster", "address": address, "nodes": len(nodes),
                         "cpus": cpus, "cpus_per_node": [int(n["Resources"].get("CPU", 0))
                                                         for n in nodes],
                         "load_average": load_average()}]
    workers = workers or sorted({1, cpus})
    encoder = load_encoder(Settings().model)
    encoder.encode(["warm up the model"] * 8)

    say(f"single-process build of {corpus}")
    single_dir = workdir / "single"
    summary = build([corpus], Settings(index_dir=single_dir), encoder=encoder, progress=False)
    single_rate = summary.passages / summary.seconds
    say(f"{summary.passages} passages in {summary.seconds:.1f} s, {single_rate:.1f} passages/s")
    common = {"documents": summary.documents, "passages": summary.passages}
    rows.append({"figure": "build", "how": "single process", "workers": 1,
                 "threads": _torch_threads(None), "shards": 1, **common,
                 "seconds": round(summary.seconds, 1), "passages_per_s": round(single_rate, 1),
                 "vs_single": 1.0, "load_average": load_average()})

    single = QA.open(Settings(index_dir=single_dir), encoder=encoder)
    texts = [single.index.embed_text(p) for p in single.index.passages]  # type: ignore[union-attr]
    texts = random.Random(0).sample(texts, min(encode_sample, len(texts)))
    before = _torch_threads(1)
    try:
        started = time.perf_counter()
        encoder.encode(texts)
        seconds = time.perf_counter() - started
    finally:
        _torch_threads(before)
    rows.append({"figure": "encode", "threads": 1, "passages": len(texts),
                 "seconds": round(seconds, 1), "passages_per_s": round(len(texts) / seconds, 1),
                 "load_average": load_average()})

    built: dict[int, Path] = {}
    plan = [(w, shards) for w in workers] + [(max(workers), s) for s in check_shards
                                             if s != shards]
    for w, s in plan:
        folder = workdir / f"ray-{w}w-{s}s"
        say(f"Ray build, {w} embedding actors, {s} shards")
        got = build_on_ray([corpus], Settings(index_dir=folder), address=address, shards=s,
                           workers=w, progress=False)
        rate = got.passages / got.seconds
        say(f"{got.passages} passages in {got.seconds:.1f} s, {rate:.1f} passages/s")
        rows.append({"figure": "build", "how": "ray", "workers": w, "threads": 1, "shards": s,
                     **common, "seconds": round(got.seconds, 1),
                     "passages_per_s": round(rate, 1), "vs_single": round(rate / single_rate, 3),
                     "load_average": load_average()})
        built[s] = folder

    say(f"asking {len(questions)} questions of the single index")
    reference = {q["id"]: single.to_json(single.ask(q["question"], k=10)) for q in questions}
    for s in check_shards:
        say(f"asking them of the Ray-built {s} shards in this process")
        sharded = QA.open(Settings(index_dir=built[s]), encoder=encoder)
        got_json = {q["id"]: sharded.to_json(sharded.ask(q["question"], k=10)) for q in questions}
        rows.append({"figure": "same_answers", "shards": s, "path": "in process (Ray build)",
                     **count_differences(reference, got_json), "load_average": load_average()})
        del sharded

    say(f"serving the {shards} shards; timing {rounds} questions through Serve and in process")
    serve.deploy(address, built[shards], Settings(index_dir=built[shards]))
    try:
        handle = serve.direct(ray_serve.get_app_handle(serve.APP))  # as `qa ask --ray` calls
        here = serve.local_ingress(address)  # as `qa ask --ray --ingress local` answers
        by_serve: dict[str, dict] = {}
        by_here: dict[str, dict] = {}
        times: dict[str, list[float]] = {"serve": [], "serve, ingress here": [], "in process": [],
                                         "in process, 1 thread": []}
        inside: list[dict[str, float]] = []  # the ingress's own timings of each Serve answer

        def via_serve(q):
            got = handle.ask_timed.remote(q["question"], 10).result()
            by_serve[q["id"]] = got["json"]
            return got["ms"]

        def noop_fanout() -> float:  # its own call, after the timed one: in no answer's time
            return handle.noop_fanout.remote().result()

        def one_thread(q):
            before = _torch_threads(1)
            try:
                single.ask(q["question"], k=10)
            finally:
                _torch_threads(before)

        def via_here(q):
            by_here[q["id"]] = here.answer(q["question"], 10)

        paths = {"serve": via_serve, "serve, ingress here": via_here,
                 "in process": lambda q: single.ask(q["question"], k=10),
                 "in process, 1 thread": one_thread}
        for q in questions[:5]:  # warm every path
            for fn in paths.values():
                fn(q)
        for i in range(rounds):  # alternating, so that the machine's load falls on all alike
            q = questions[i % len(questions)]
            for name, fn in paths.items():
                started = time.perf_counter()
                ms = fn(q)
                times[name].append(time.perf_counter() - started)
                if name == "serve":
                    inside.append({**ms, "client": times[name][-1] * 1000,
                                   "noop_fanout": noop_fanout()})
        for name, seconds_list in times.items():
            rows.append({"figure": "latency", "path": name,
                         "shards": shards if name.startswith("serve") else 1,
                         "questions": len(seconds_list), **percentiles(seconds_list),
                         "load_average": load_average()})
        asked_texts = [q["question"] for q in questions[:min(len(questions), rounds)]]
        rows.append(serve_split(inside, latency_split(single, asked_texts, rounds), shards))
        asked = {qid: reference[qid] for qid in by_serve}
        rows.append({"figure": "same_answers", "shards": shards, "path": "Serve",
                     **count_differences(asked, by_serve), "load_average": load_average()})
        rows.append({"figure": "same_answers", "shards": shards, "path": "Serve, ingress here",
                     **count_differences(asked, by_here), "load_average": load_average()})
    finally:
        ray_serve.delete(serve.APP)
    return rows


def serve_split(inside: list[dict[str, float]], in_process: dict[str, float],
                shards: int) -> dict:
    """Where an answer through Serve spends its time, p50 ms of each part over the timed
    questions, beside the in-process steps (bench.latency_split) on the same questions.

    From the ingress's own timings (Ingress.ask_timed): "hop" is the client's time less the
    ingress's (the handle call, the router, the reply); "encode"; "fanout" (asking every shard
    and waiting for the last: the shards' search, two hops each, the candidates' transfer);
    "shard" (of the fan-out, the slowest shard's own work: its search and its candidates, as it
    times them); "noop_fanout" (the same fan-out of a call that does nothing,
    Ingress.noop_fanout, asked after the answer and outside its time: what Serve's calls cost
    apart from the search and the candidates); "rest" (merging, picking,
    reading, JSON) is the ingress's total less encode and fan-out. Each part's p50 is its own, so
    they need not add up to the total's.

    >>> r = serve_split([{"client": 60.0, "total": 50.0, "encode": 8.0, "fanout": 12.0,
    ...                   "shard": 2.0, "noop_fanout": 9.0}],
    ...                 {"encode": 7.0, "search": 1.0, "pick": 30.0}, 2)
    >>> r["serve_ms"]
    {'client': 60.0, 'hop': 10.0, 'encode': 8.0, 'fanout': 12.0, 'shard': 2.0, 'noop_fanout': 9.0, 'rest': 30.0}
    >>> r["in_process_ms"]
    {'encode': 7.0, 'search': 1.0, 'pick': 30.0}
    """
    from .evaluation.metrics import percentile

    parts: dict[str, list[float]] = {p: [] for p in ("client", "hop", "encode", "fanout",
                                                     "shard", "noop_fanout", "rest")}
    for t in inside:
        parts["client"].append(t["client"])
        parts["hop"].append(t["client"] - t["total"])
        parts["encode"].append(t.get("encode", 0.0))
        parts["fanout"].append(t.get("fanout", 0.0))
        parts["shard"].append(t.get("shard", 0.0))
        parts["noop_fanout"].append(t.get("noop_fanout", 0.0))
        parts["rest"].append(t["total"] - t.get("encode", 0.0) - t.get("fanout", 0.0))
    return {"figure": "serve_split", "shards": shards, "questions": len(inside),
            "serve_ms": {p: round(percentile(v, 50), 3) for p, v in parts.items()},
            "in_process_ms": {p: in_process[p] for p in ("encode", "search", "pick")},
            "load_average": load_average()}


def cluster_table(rows: list[dict]) -> str:
    by = {f: [r for r in rows if r["figure"] == f] for f in
          ("cluster", "encode", "build", "same_answers", "latency", "serve_split")}
    out = []
    for c in by["cluster"]:
        out.append(f"Ray cluster {c['address']}: {c['nodes']} nodes, CPUs per node "
                   f"{c['cpus_per_node']}")
    for e in by["encode"]:
        out.append(f"bare encode on one torch thread: {e['passages_per_s']:.1f} passages/s "
                   f"({e['passages']:,} passages, load average {e['load_average']:.1f})")
    head = ["build", "embedding actors", "shards", "documents", "passages", "seconds",
            "passages/s", "vs single process", "load avg"]
    body = [[r["how"] if r["how"] != "ray" else "Ray", str(r["workers"]) if r["how"] == "ray"
             else f"(1 process, {r['threads']} threads)", str(r["shards"]), f"{r['documents']:,}",
             f"{r['passages']:,}", f"{r['seconds']:.1f}", f"{r['passages_per_s']:.1f}",
             f"{r['vs_single']:.2f}", f"{r['load_average']:.1f}"] for r in by["build"]]
    out.append("build throughput\n\n" + markdown_table(head, body))
    head = ["answered", "shards", "questions", "p50 ms", "p95 ms", "p99 ms", "load avg"]
    body = [[r["path"], str(r["shards"]), str(r["questions"]), f"{r['p50_ms']:.1f}",
             f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['load_average']:.1f}"]
            for r in by["latency"]]
    if body:
        out.append("question-to-answer latency (k=10, hybrid, with the reader), the paths "
                   "alternating question by question\n\n" + markdown_table(head, body))
    for r in by["serve_split"]:
        s, p = r["serve_ms"], r["in_process_ms"]
        head = ["part", "through Serve, p50 ms", "in process, p50 ms"]
        body = [["client to ingress and back (the handle call, the router, the reply)",
                 f"{s['hop']:.1f}", "-"],
                ["encode the question", f"{s['encode']:.1f}", f"{p['encode']:.1f}"],
                [f"search: fan out to {r['shards']} shards and wait for all (with their search, "
                 f"and the candidates' transfer)", f"{s['fanout']:.1f}", f"{p['search']:.1f}"],
                ["  of which the slowest shard's own work (its search and candidates)",
                 f"{s['shard']:.1f}", "-"],
                ["  the same fan-out of a call that does nothing (Serve's own cost; timed after "
                 "the answer)", f"{s['noop_fanout']:.1f}", "-"],
                ["merge, pick, read, JSON", f"{s['rest']:.1f}", f"{p['pick']:.1f}"],
                ["the whole answer, as the client times it", f"{s['client']:.1f}", "-"]]
        out.append(f"where an answer through Serve spends its time ({r['questions']} questions, "
                   f"load avg {r['load_average']:.1f}; each part's own p50)\n\n"
                   + markdown_table(head, body))
    head = ["shards", "answered", "questions", "top-10 ids differ", "scores differ > 1e-5",
            "snippet differs", "abstention differs", "any", "load avg"]
    body = [[str(r["shards"]), r["path"], str(r["questions"]),
             *(str(r["mismatches"][k]) for k in MISMATCHES), str(r["any"]),
             f"{r['load_average']:.1f}"] for r in by["same_answers"]]
    out.append("the same answers as the single-machine index\n\n" + markdown_table(head, body))
    return "\n\n".join(out)


def run_cluster(args, size: int | str, out: Path) -> list[dict]:
    """`qa bench --ray`: the corpus of that size, its questions, then cluster_figures; writes
    ray.json and ray.md into out.

    The questions: with --beir, the BEIR folder's questions.jsonl (the project's format, each
    naming its document) about the documents taken; otherwise --question-file (default the
    seeds' questions). At most --check-questions of them, drawn with a fixed seed.
    """
    from .bench import beir_corpus, seed_corpus
    from .settings import QUESTIONS, SEEDS

    qfile, doc_ids = args.question_file, None
    if args.beir and qfile == QUESTIONS:  # the seeds' questions are not about a BEIR corpus
        qfile = args.beir / "questions.jsonl"
        if not qfile.is_file():
            raise UserError(f"{qfile} does not exist; --ray with --beir needs the corpus's "
                            f"questions in the project's format (or --question-file FILE)")
    workdir = Path(tempfile.mkdtemp(prefix="qa-bench-ray-"))
    try:
        corpus = SEEDS
        if size != "seeds":
            docs = beir_corpus(args.beir, int(size)) if args.beir else seed_corpus(int(size))
            corpus = workdir / "corpus.jsonl"
            with corpus.open("w", encoding="utf-8") as f:
                for d in docs:
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
            if args.beir:
                doc_ids = {d["_id"] for d in docs}
        questions = sample_questions(qfile, doc_ids, args.check_questions)
        say(f"{len(questions)} questions from {qfile}")
        rows = cluster_figures(args.ray, corpus, questions, workers=args.workers,
                               shards=args.shards, check_shards=args.check_shards,
                               rounds=args.rounds, workdir=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    name = str(args.beir) if args.beir else "seeds" if size == "seeds" else "seeds (synthetic)"
    rows = [r | {"corpus": name, "size": size, "question_file": str(qfile)} for r in rows]
    (out / "ray.json").write_text(json.dumps(rows, indent=2))
    (out / "ray.md").write_text(cluster_table(rows) + "\n")
    return rows
