"""benchmark build throughput, query latency, memory, disk and exact vs approximate search by corpus size

Stage: report (speed and scale). For each corpus size, in a fresh process (so that peak memory
is that size's own):

1. a corpus of about that many passages: made from the seeds (each passage 2-3 seed sentences
   drawn at random, numbers varied, every text distinct), or the first documents of a BEIR corpus;
   the size `seeds` is the bundled articles themselves, as `qa build` indexes them;
2. `qa build` of it (`engine.open_or_build`, model already loaded), timed, against bare
   `SentenceTransformer.encode` of the very same passage texts;
3. in-process latency per question (warm) of dense, bm25, and hybrid + answer snippet
   (`QA.ask`), with the index type the store chose and with the other one (Flat <-> HNSW);
4. raw FAISS search (one query, one thread, as the retriever searches): exact Flat against
   HNSW and IVF, each approximate index's recall@10 against exact search, and its build time;
5. peak RSS of the process and the index size on disk.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .evaluation.metrics import percentile
from .evaluation.report import markdown_table
from .settings import QUESTIONS, SEEDS, Settings, UserError

DEFAULT_SIZES = "seeds,1000,10000,100000"
WARMUP = 5
K = 5
CHARS_PER_PASSAGE = 600  # a guess used to take enough BEIR documents for a size


# ---------------------------------------------------------------- corpora

def seed_corpus(n: int, seed: int = 0, sources: Path = SEEDS) -> list[dict]:
    """n distinct BEIR-style corpus rows made from the seeds' sentences.

    Each row is 2-3 sentences of one seed article, drawn at random, with every number in them
    replaced by another of the same number of digits half of the time; the title is the
    article's, plus a serial number so that no two rows are the same article.

    >>> rows = seed_corpus(3)
    >>> len(rows), len({r["text"] for r in rows}), sorted(rows[0])
    (3, 3, ['_id', 'text', 'title'])
    """
    from .chunk import sentences
    from .ingest import ingest

    pools = []
    for a in ingest([sources]).articles:
        sents = [a.text[s:e] for b0, b1 in a.body for s, e in sentences(a.text, b0, b1)]
        if len(sents) >= 2:
            pools.append((a.title, sents))
    if not pools:
        raise UserError(f"no seed sentences in {sources}; pass --beir DIR for a corpus")
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    while len(rows) < n:
        title, sents = pools[rng.randrange(len(pools))]
        picked = rng.sample(sents, min(len(sents), rng.randint(2, 3)))
        text = " ".join(_vary(s, rng) if rng.random() < 0.5 else s for s in picked)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"_id": f"s{len(rows):06d}", "title": f"{title} ({len(rows)})", "text": text})
    return rows


def _vary(sentence: str, rng: random.Random) -> str:
    return re.sub(r"\d+", lambda m: str(rng.randrange(10 ** (len(m.group()) - 1) if len(m.group()) > 1
                                                      else 0, 10 ** len(m.group()))), sentence)


def beir_corpus(folder: Path, n: int) -> list[dict]:
    """The first documents of a BEIR corpus.jsonl, about enough for n passages."""
    path = Path(folder) / "corpus.jsonl"
    if not path.is_file():
        raise UserError(f"{path} does not exist; --beir needs a folder in the BEIR layout")
    rows, chars = [], 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            rows.append(row)
            chars += len(row.get("text", "")) + len(row.get("title", ""))
            if chars >= n * CHARS_PER_PASSAGE:
                break
    return rows


def bench_questions(beir: Path | None, limit: int = 500,
                    questions: Path = QUESTIONS) -> list[str]:
    """The questions timed: the BEIR queries, or a question file (default: the packaged seeds'
    questions, the same as tests/questions.jsonl).

    Raises:
        UserError: a missing or malformed file.
    """
    from .evaluation.data import load_questions

    if beir:
        path = Path(beir) / "queries.jsonl"
        if not path.is_file():
            raise UserError(f"{path} does not exist; --beir needs a folder in the BEIR layout")
        rows = [json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip()]
    else:
        rows = [q.question for q in load_questions(questions)]
    return rows[:limit]


# ---------------------------------------------------------------- measuring

def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds (nearest rank).

    >>> percentiles([0.001, 0.002, 0.003, 0.004])
    {'p50_ms': 2.0, 'p95_ms': 4.0, 'p99_ms': 4.0}
    """
    return {f"p{q}_ms": round(percentile(seconds, q) * 1000, 3) for q in (50, 95, 99)}


def timed(fn, items: list, rounds: int) -> list[float]:
    """Seconds per call of fn(item), after WARMUP untimed calls, for `rounds` calls cycling items."""
    for item in items[:WARMUP]:
        fn(item)
    out = []
    for i in range(rounds):
        item = items[i % len(items)]
        started = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - started)
    return out


def bare_encode(encoder, texts: list[str], batch_size: int) -> None:
    """The model's own forward passes over `texts`, without qa's code around them: what the
    encoder's overhead is measured against."""
    from .embed import OnnxEncoder, SentenceEncoder

    if isinstance(encoder, SentenceEncoder):
        encoder.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False)
    elif isinstance(encoder, OnnxEncoder):
        for start in range(0, len(texts), batch_size):
            encoder.session(encoder._feed(texts[start:start + batch_size]))
    else:
        encoder.encode(texts, batch_size=batch_size)


def latency_split(qa, questions: list[str], rounds: int) -> dict[str, float]:
    """p50 ms of each step of a hybrid question with the engine's picker (and reader): one bare
    forward pass of the question through the model, encoding, search, and picking (reading)."""
    vec = {q: qa.encoder.encode([q])[0] for q in questions}
    hits = {q: qa.retriever.search(q, k=max(K, qa.calibration.passages), qvec=vec[q])
            for q in questions}
    steps = {
        "bare_forward": lambda q: bare_encode(qa.encoder, [q], 1),
        "encode": lambda q: qa.encoder.encode([q]),
        "search": lambda q: qa.retriever.search(q, k=max(K, qa.calibration.passages), qvec=vec[q]),
        "pick": lambda q: qa.picker.pick(q, vec[q], hits[q]),
    }
    return {name: round(percentile(timed(fn, questions, rounds), 50) * 1000, 3)
            for name, fn in steps.items()}


def recall_at(exact_ids, approx_ids, k: int = 10) -> float:
    """Mean fraction of the exact top k that the approximate top k also found."""
    import numpy as np

    total = 0.0
    for e, a in zip(np.asarray(exact_ids)[:, :k], np.asarray(approx_ids)[:, :k]):
        truth = {int(i) for i in e if i >= 0}
        total += len(truth & {int(i) for i in a}) / max(1, len(truth))
    return round(total / max(1, len(exact_ids)), 4)


def ann_figures(vectors, queries, rounds: int) -> dict[str, dict]:
    """Raw FAISS search of one query at a time on one OpenMP thread, as the retriever searches:
    Flat vs HNSW vs IVF, with recall@10 vs Flat."""
    import faiss

    from .retrieve import one_faiss_thread
    from .store import HNSW_M, make_faiss_index

    n, dim = vectors.shape
    out: dict[str, dict] = {}
    for kind in ("Flat", "HNSW", "IVF"):
        started = time.perf_counter()
        if kind == "IVF":
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
            index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.add(vectors)
            # index_factory returns the concrete IndexIVFFlat; faiss's stubs say Index
            index.nprobe = max(1, min(nlist, 16))  # type: ignore[attr-defined]
            params = {"nlist": nlist, "nprobe": index.nprobe}  # type: ignore[attr-defined]
        else:
            index = make_faiss_index(vectors, kind)
            params = {"M": HNSW_M, "ef_search": index.hnsw.efSearch} if kind == "HNSW" else {}
        build_s = time.perf_counter() - started
        _, ids = index.search(queries, 10)
        with one_faiss_thread():  # as the retriever searches
            lat = timed(lambda q: index.search(q.reshape(1, -1), 10), list(queries), rounds)
        out[kind] = {"build_s": round(build_s, 3), "ids": ids, "params": params, **percentiles(lat)}
    exact = out["Flat"]["ids"]
    for kind, figures in out.items():
        figures["recall_at_10"] = recall_at(exact, figures.pop("ids"))
    return out


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def measure(size: int | str, beir: Path | None, rounds: int, bare_sample: int | None,
            workdir: str, questions: Path = QUESTIONS) -> list[dict]:
    """Every figure of one corpus size (or "seeds"); runs in its own process. One dict per
    retriever row."""
    from .embed import load_encoder
    from .engine import QA, open_or_build
    from .store import Index, make_faiss_index

    def log(msg):

        print(f"[bench {size}] {msg}", file=sys.stderr, flush=True)

    folder = Path(tempfile.mkdtemp(prefix=f"qa-bench-{size}-", dir=workdir))
    try:
        if size == "seeds":
            corpus, beir = SEEDS, None  # the real articles, timed with their own questions
        else:
            corpus = folder / "corpus.jsonl"
            with corpus.open("w", encoding="utf-8") as f:
                for r in beir_corpus(beir, int(size)) if beir else seed_corpus(int(size)):
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        encoder = load_encoder(Settings().model)
        encoder.encode(["warm up the model"] * 8)
        settings = Settings(index_dir=folder / "index")
        log(f"building {corpus}")
        qa = open_or_build(settings, [corpus], rebuild=True, progress=False, encoder=encoder,
                           say=lambda _: None)
        summary, index = qa.built, qa.index
        assert summary is not None  # rebuild=True always builds
        assert isinstance(index, Index)  # bench builds one index, not shards
        passages = len(index.passages)
        texts = [index.embed_text(p) for p in index.passages]
        if bare_sample and bare_sample < len(texts):
            texts = random.Random(0).sample(texts, bare_sample)
        log(f"built {passages} passages in {summary.seconds:.1f} s; bare encode of {len(texts)}")
        started = time.perf_counter()
        bare_encode(encoder, texts, settings.batch_size)
        bare_s = time.perf_counter() - started
        build_rate = passages / summary.seconds
        bare_rate = len(texts) / bare_s
        on_disk = disk_bytes(summary.path)
        faiss_bytes = (summary.path / "index.faiss").stat().st_size

        reader = qa.picker.reader
        plain = QA(index, encoder, settings, reader=None)  # the feature picker alone (--reader none)
        asked = bench_questions(beir, questions=questions)
        log(f"timing {rounds} questions per retriever")
        results: list[dict] = []
        chosen = index.manifest.index_type
        other = "Flat" if chosen == "HNSW" else "HNSW"
        started = time.perf_counter()
        other_index = make_faiss_index(index.vectors, other)
        other_build_s = time.perf_counter() - started
        chosen_index = index.faiss_index
        bm25 = timed(lambda q: qa.retriever.search(q, k=K, method="bm25"), asked, rounds)
        for kind, faiss_index in ((chosen, chosen_index), (other, other_index)):
            index.faiss_index = faiss_index
            dense = timed(lambda q: qa.retriever.search(q, k=K, method="dense"), asked, rounds)
            hybrid = timed(lambda q: plain.ask(q, k=K, retriever="hybrid"), asked, rounds)
            results.append({"retriever": "dense", "index_type": kind, **percentiles(dense)})
            results.append({"retriever": "hybrid+answer", "index_type": kind, **percentiles(hybrid)})
            if reader is not None:
                read = timed(lambda q: qa.ask(q, k=K, retriever="hybrid"), asked, rounds)
                results.append({"retriever": "hybrid+reader", "index_type": kind,
                                **percentiles(read)})
        index.faiss_index = chosen_index
        results.insert(0, {"retriever": "bm25", "index_type": "-", **percentiles(bm25)})
        qvecs = encoder.encode(asked)
        ann = ann_figures(index.vectors, qvecs, rounds)
        split = latency_split(qa, asked, rounds)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        common = {
            "size": size, "corpus": (str(beir) if beir else "seeds (synthetic)"
                                     if size != "seeds" else "seeds (the bundled articles)"),
            "documents": summary.documents, "passages": passages, "chosen_index": chosen,
            "build_s": round(summary.seconds, 2), "build_passages_per_s": round(build_rate, 1),
            "encode_passages": len(texts),
            "encode_passages_per_s": round(bare_rate, 1),
            "build_vs_encode": round(build_rate / bare_rate, 3),
            f"{other.lower()}_build_s": round(other_build_s, 2),
            "peak_rss_mb": round(peak, 1), "index_mb": round(on_disk / 2 ** 20, 2),
            "faiss_mb": round(faiss_bytes / 2 ** 20, 2), "questions": len(asked),
            "rounds": rounds, "k": K, "load_average": round(os.getloadavg()[0], 2),
            "faiss_search": ann, "split_p50_ms": split,
        }
        return [common | r for r in results]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- output

def table(rows: list[dict]) -> str:
    head = ["passages", "retriever", "index", "p50 ms", "p95 ms", "p99 ms", "build p/s",
            "encode p/s", "build/encode", "peak RSS MB", "disk MB"]
    body = [[f"{r['passages']:,}", r["retriever"], r["index_type"], f"{r['p50_ms']:.1f}",
             f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['build_passages_per_s']:.0f}",
             f"{r['encode_passages_per_s']:.0f}", f"{r['build_vs_encode']:.2f}",
             f"{r['peak_rss_mb']:.0f}", f"{r['index_mb']:.1f}"] for r in rows]
    ann_head = ["passages", "search", "build s", "p50 ms", "p99 ms", "recall@10 vs Flat", "params"]
    ann_body, seen = [], set()
    for r in rows:
        if r["size"] in seen:
            continue
        seen.add(r["size"])
        for kind, f in r["faiss_search"].items():
            ann_body.append([f"{r['passages']:,}", kind, f"{f['build_s']:.2f}", f"{f['p50_ms']:.3f}",
                             f"{f['p99_ms']:.3f}", f"{f['recall_at_10']:.4f}",
                             " ".join(f"{k}={v}" for k, v in f["params"].items()) or "-"])
    split_head = ["passages", "bare question forward", "encode", "search", "pick (+ read)",
                  "answer p50 / bare forward"]
    split_body, seen = [], set()
    for r in rows:
        if r["size"] in seen or "split_p50_ms" not in r:
            continue
        seen.add(r["size"])
        sp = r["split_p50_ms"]
        default = {x["retriever"]: x["p50_ms"] for x in rows
                   if x["size"] == r["size"] and x["index_type"] == x["chosen_index"]}
        answer = default.get("hybrid+reader", default.get("hybrid+answer", float("nan")))
        split_body.append([f"{r['passages']:,}", f"{sp['bare_forward']:.1f}", f"{sp['encode']:.1f}",
                           f"{sp['search']:.1f}", f"{sp['pick']:.1f}",
                           f"{answer / sp['bare_forward']:.2f}x"])
    return (markdown_table(head, body)
            + "\n\np50 ms of each step of a default question (hybrid, with the reader when "
              "there is one)\n\n" + markdown_table(split_head, split_body)
            + "\n\nraw FAISS search, one query at a time on one thread (top 10)\n\n"
            + markdown_table(ann_head, ann_body))


def crossover(rows: list[dict]) -> str:
    """Where exact search stops being cheap: Flat's per-query cost, extrapolated linearly."""
    sizes: dict[int, dict] = {}
    for r in rows:
        sizes.setdefault(r["passages"], r["faiss_search"])
    if not sizes:
        return ""
    n = max(sizes)
    flat, hnsw = sizes[n]["Flat"], sizes[n]["HNSW"]
    per_passage_ms = flat["p50_ms"] / n
    lines = [f"exact Flat search p50 at {n:,} passages: {flat['p50_ms']:.2f} ms "
             f"({per_passage_ms * 1e6:.1f} ms per million); HNSW {hnsw['p50_ms']:.3f} ms at "
             f"recall@10 {hnsw['recall_at_10']:.3f}"]
    for budget in (5, 10):
        lines.append(f"Flat search reaches {budget} ms at about "
                     f"{budget / per_passage_ms:,.0f} passages")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """PNG: p50 latency (p95 as error bar) against corpus size, one line per retriever/index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    series: dict[str, list[dict]] = {}
    for r in rows:
        label = r["retriever"] + ("" if r["index_type"] == "-" else f" ({r['index_type']})")
        series.setdefault(label, []).append(r)
    for i, (label, rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r["passages"])
        xs = [r["passages"] for r in rs]
        ys = [r["p50_ms"] for r in rs]
        up = [r["p95_ms"] - r["p50_ms"] for r in rs]
        ax.errorbar(xs, ys, yerr=[[0] * len(ys), up], marker="o", capsize=3, label=label,
                    linestyle="--" if "HNSW" in label else "-", color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xlabel("passages in the index")
    ax.set_ylabel("latency per question, ms (p50, bar to p95)")
    ax.set_title("qa bench: in-process query latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- command

def add_arguments(p) -> None:
    p.description = ("Measure build throughput (vs bare SentenceTransformer.encode), query latency "
                     "p50/p95/p99, peak memory, index size, and exact vs approximate FAISS search, "
                     "at each corpus size. Each size runs in a fresh process.")
    p.add_argument("--sizes",
                   help=f"passage counts, comma separated; 'seeds' is the bundled articles "
                        f"(default {DEFAULT_SIZES}; with --ray one size, default seeds)")
    p.add_argument("--beir", type=Path, metavar="DIR",
                   help="take the corpus and queries from a BEIR folder (default: made from the seeds)")
    p.add_argument("--question-file", type=Path, default=QUESTIONS, metavar="FILE",
                   help="questions timed on the seeds and the corpora made from them, one JSON object "
                        "a line as for `qa eval` (default: the packaged seeds' questions; --beir "
                        "corpora are timed with their own queries)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON array, one object per size and retriever")
    p.add_argument("--rounds", type=int, default=200,
                   help="timed questions per retriever and size (default 200)")
    p.add_argument("--bare-sample", type=int, metavar="N",
                   help="time bare encode on N of the passages only (default: all of them)")
    p.add_argument("--out", type=Path, default=Path("reports") / "bench",
                   help="folder for bench.json, bench.md and latency_vs_size.png (default "
                        "reports/bench/, which git ignores); ray.json/.md and "
                        "shard_search.json/.md with --ray and --shard-sizes")
    r = p.add_argument_group("past one machine (README, Ray); either option replaces the "
                             "per-size benchmark above")
    r.add_argument("--ray", metavar="ADDRESS",
                   help="on the Ray cluster at ADDRESS, for one corpus size: build throughput of "
                        "the Ray build against the single-process build, the same answers as the "
                        "single index, and p50/p95 through Serve against in process; needs .[ray]")
    r.add_argument("--workers", metavar="N,N",
                   help="chunk-and-embed actors (one CPU each) to time the Ray build with "
                        "(default 1 and the cluster's CPUs)")
    r.add_argument("--shards", type=int, default=2,
                   help="shards of the timed Ray builds and of the index Serve answers from "
                        "(default 2)")
    r.add_argument("--check-shards", default="2,4", metavar="N,N",
                   help="shard counts whose Ray build is checked against the single index "
                        "(default 2,4)")
    r.add_argument("--check-questions", type=int, default=500, metavar="N",
                   help="questions drawn (fixed seed) for the same-answers check and the latency "
                        "(default 500)")
    r.add_argument("--shard-sizes", metavar="N,N",
                   help="time one shard's FAISS search at these sizes, over synthetic random unit "
                        "vectors (e.g. 1k,10k,100k,1M)")
    r.add_argument("--ann-size", metavar="N",
                   help="build HNSW and IVF-PQ at this size and compare them with Flat (default "
                        "the largest --shard-sizes)")
    r.add_argument("--ann", default="hnsw,ivf-flat,ivf-pq", metavar="KINDS",
                   help="the approximate indexes built at --ann-size (default hnsw,ivf-flat,ivf-pq; "
                        "HNSW of 1M vectors takes tens of minutes on 2 loaded cores)")


def parse_sizes(text: str) -> list[int | str]:
    """'seeds,1000,10k,1e5' -> ['seeds', 1000, 10000, 100000]."""
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "seeds":
            out.append(part)
            continue
        try:
            value = int(float(part[:-1]) * 1000) if part.endswith("k") else int(float(part))
        except ValueError:
            raise UserError(f"--sizes {text!r}: {part!r} is neither a number nor 'seeds'; "
                            f"e.g. --sizes seeds,1000,10000") from None
        if value < 50:
            raise UserError(f"--sizes: {value} is too small; use at least 50 passages")
        out.append(value)
    if not out:
        raise UserError("--sizes is empty; e.g. --sizes 1000,10000")
    return out


def parse_counts(text: str, option: str, least: int = 1) -> list[int]:
    """'1,2' -> [1, 2]; '1k,1M' -> [1000, 1000000] (for --workers, --check-shards, --shard-sizes).

    Raises:
        UserError: not a list of whole numbers of at least `least`.
    """
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = {"k": 1000, "m": 1_000_000}.get(part[-1:], 1)
        try:
            value = int(float(part[:-1] if scale > 1 else part) * scale)
        except ValueError:
            raise UserError(f"{option} {text!r}: {part!r} is not a number; e.g. {option} "
                            f"{'1k,10k' if least > 1 else '1,2'}") from None
        if value < least:
            raise UserError(f"{option}: {value} is too small; use at least {least}")
        out.append(value)
    return out


def check_cluster_args(args) -> tuple[list[int | str], list[int] | None]:
    """The sizes of a --ray / --shard-sizes run and the shard-search sizes, refusing bad options
    before anything is built or connected to."""
    sizes = parse_sizes(args.sizes or "seeds")
    if args.ray:
        if len(sizes) != 1:
            raise UserError(f"--ray benchmarks one corpus; give one size, e.g. --sizes "
                            f"{sizes[-1]}, not {args.sizes}")
        args.workers = parse_counts(args.workers, "--workers") if args.workers else None
        if args.shards < 1:
            raise UserError(f"--shards must be at least 1, got {args.shards}")
        args.check_shards = parse_counts(args.check_shards, "--check-shards")
        if args.check_questions < 1:
            raise UserError(f"--check-questions must be at least 1, got {args.check_questions}")
        from .cluster import import_ray

        import_ray()
    elif args.workers or args.sizes:
        raise UserError("--workers and --sizes with --shard-sizes alone mean nothing; add --ray "
                        "ADDRESS, or drop them")
    shard_sizes = parse_counts(args.shard_sizes, "--shard-sizes", 100) if args.shard_sizes else None
    if args.ann_size:
        args.ann_size = parse_counts(args.ann_size, "--ann-size", 1000)[0]
        if not shard_sizes:
            raise UserError("--ann-size needs --shard-sizes (the Flat sizes to time)")
    elif shard_sizes:
        args.ann_size = max(shard_sizes)
    from .bench_cluster import ANN_KINDS

    args.ann = tuple(k.strip().lower() for k in args.ann.split(",") if k.strip())
    if not args.ann or set(args.ann) - set(ANN_KINDS):
        raise UserError(f"--ann: expected some of {','.join(ANN_KINDS)}, got {args.ann!r}")
    return sizes, shard_sizes


def run_past_one_machine(args) -> int:
    """`qa bench --ray ADDRESS` and/or `--shard-sizes`: the figures of qa.bench_cluster."""
    from .bench_cluster import cluster_table, run_cluster, shard_search, shard_table

    sizes, shard_sizes = check_cluster_args(args)
    if args.ray and not args.beir:
        bench_questions(None, questions=args.question_file)  # a bad file fails before any build
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    text = []
    if args.ray:
        rows += run_cluster(args, sizes[0], args.out)
        text.append(cluster_table(rows))
    if shard_sizes:
        found = shard_search(shard_sizes, args.ann_size, args.rounds, kinds=args.ann)
        (args.out / "shard_search.json").write_text(json.dumps(found, indent=2))
        (args.out / "shard_search.md").write_text(shard_table(found) + "\n")
        rows += [r | {"figure": "shard_search"} for r in found]
        text.append(shard_table(found))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("\n\n".join(text))
        written = [p for p in sorted(args.out.glob("*")) if p.stem in ("ray", "shard_search")]
        print(f"\nwritten: {', '.join(map(str, written))}")
    return 0


def run(args) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if args.rounds < 10:
        raise UserError(f"--rounds must be at least 10, got {args.rounds}")
    if args.ray or args.shard_sizes or args.ann_size:
        return run_past_one_machine(args)
    if args.workers:
        raise UserError("--workers is for the Ray build; add --ray ADDRESS")
    sizes = parse_sizes(args.sizes or DEFAULT_SIZES)
    if args.beir and not (args.beir / "corpus.jsonl").is_file():
        raise UserError(f"{args.beir}/corpus.jsonl does not exist; --beir needs a folder in the "
                        f"BEIR layout (corpus.jsonl, queries.jsonl)")
    bench_questions(None, questions=args.question_file)  # a bad file fails before any build
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="qa-bench-")
    rows: list[dict] = []
    try:
        for size in sizes:
            # A fresh process per size: its peak RSS is this size's alone.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                rows += pool.submit(measure, size, args.beir, args.rounds, args.bare_sample,
                                    workdir, args.question_file).result()
            (args.out / "bench.json").write_text(json.dumps(rows, indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    png = plot(rows, args.out / "latency_vs_size.png")
    text = table(rows) + "\n\n" + crossover(rows)
    (args.out / "bench.md").write_text(text + "\n")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(text)
        print(f"\nwritten: {args.out / 'bench.json'}, {args.out / 'bench.md'}, {png}")
    return 0
