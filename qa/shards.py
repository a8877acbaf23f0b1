"""A sharded index: normal index folders split by article, and their hits merged as one index's.

On disk, a sharded index is an index folder whose live build holds `shard-000/`, `shard-001/`, ...
(each a normal index folder, openable alone by `qa ask --index`), `bm25_corpus.json` (the
collection's BM25 statistics, with which every shard was scored) and a manifest listing the
shards. The whole set is published by one switch of CURRENT, as a single build is.

Shards hold contiguous runs of articles in build order, so a passage's id in the whole collection
is its shard's `first_pid` plus its id in the shard, and equals its id in a single-machine build.

The merge is exact, not approximate: each shard returns its own best `want` passages by each
retriever (`shard_hits`), and the best `want` of the collection are among those. The merge
(`merge_shard_hits`) then fuses and de-duplicates exactly as `Retriever.search` does, from the
same float inputs: each candidate's dense score (`retrieve.dense_scores`, computed row by row, so
the shard's number is the one index's) and its BM25 score (the same, since shards score with the
collection's statistics). Ties are broken by the smaller passage id on both sides.

A shard sends every candidate's scores but the passage, vector and article of only its best
k + SEND_EXTRA by its own fusion: the answer's passages are almost always among those, and the
rest are most of a reply's bytes. The merge fetches any other it reaches (`shard_passages`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .bm25corpus import add_stats, corpus_stats_part
from .retrieve import MIN_CANDIDATES, Filters, Retriever, dense_scores, fuse, merge
from .settings import UserError, check_k, check_retriever
from .store import (FORMAT_VERSION, Index, IndexLoadError, Manifest, _digest, _read_manifest,
                    index_fields, is_stale, load, write_build)
from .types import Article, Hit, Passage

CORPUS_FILE = "bm25_corpus.json"


# ---------------------------------------------------------------- plan and write

def plan_shards(passage_counts: list[int], shards: int) -> list[tuple[int, int]]:
    """Contiguous runs of articles, [start, end), with about the same number of passages each.

    >>> plan_shards([3, 1, 1, 3, 2], 2)
    [(0, 3), (3, 5)]

    Raises:
        UserError: fewer articles than shards, or fewer than one shard.
    """
    if shards < 1:
        raise UserError(f"--shards must be at least 1, got {shards}")
    if len(passage_counts) < shards:
        raise UserError(f"--shards {shards} is more than the {len(passage_counts)} articles to "
                        f"index; use at most {len(passage_counts)} shards")
    total = sum(passage_counts)
    cuts: list[tuple[int, int]] = []
    seen, start = 0, 0
    for i, count in enumerate(passage_counts):
        seen += count
        left_articles = len(passage_counts) - (i + 1)
        left_shards = shards - len(cuts) - 1
        # Close a shard once it holds its share, keeping one article for each shard still to come.
        if left_shards and (seen >= total * (len(cuts) + 1) / shards or left_articles == left_shards):
            cuts.append((start, i + 1))
            start = i + 1
    cuts.append((start, len(passage_counts)))
    return cuts


def shard_manifest(base: dict, number: int, of: int, first_pid: int, articles: int,
                   passages: int, index_type: str = "auto") -> dict:
    """One shard's manifest: the collection's build record with this shard's counts, place and
    index type (`index_type`: a key of qa.store.INDEX_TYPES, chosen for the shard's size)."""
    return base | index_fields(passages, index_type) | {
        "documents": articles, "passages": passages,
        "shard": {"number": number, "of": of, "first_pid": first_pid,
                  "bm25": "collection-wide statistics (" + CORPUS_FILE + ")"}}


def write_shard(folder: Path, manifest: dict, articles: list[Article], passages: list[Passage],
                texts: list[str], vectors: np.ndarray, corpus: dict) -> dict:
    """One shard as a normal index folder. `passages` carry their ids in the collection; the
    shard stores them renumbered from 0 (its first_pid is in the manifest).

    Returns:
        The shard's entry in the collection's manifest.
    """
    first = manifest["shard"]["first_pid"]
    assert all(p.pid == first + i for i, p in enumerate(passages)), "a shard's passages are contiguous"
    local = [replace(p, pid=p.pid - first) for p in passages]
    folder.mkdir()  # not parents: a build folder removed after a failure stays removed
    write_build(folder, articles, local, texts, vectors, dict(manifest), bm25_corpus=corpus)
    return {"path": folder.name, "first_pid": first, "passages": len(passages),
            "documents": len(articles)}


def shard_name(number: int) -> str:
    return f"shard-{number:03d}"


def write_collection(folder: Path, base: dict, entries: list[dict], corpus: dict) -> None:
    """The collection's files in a build folder whose shards are written: bm25_corpus.json and
    the manifest listing the shards."""
    (folder / CORPUS_FILE).write_text(json.dumps(corpus, ensure_ascii=False))
    entries = sorted(entries, key=lambda e: e["first_pid"])
    manifest = base | {
        "kind": "sharded",
        "documents": sum(e["documents"] for e in entries),
        "passages": sum(e["passages"] for e in entries),
        "index_type": "sharded",
        "hnsw": None,
        "ivf": None,
        "shards": entries,
        "bm25": {"num_docs": corpus["num_docs"], "avg_doc_len": corpus["avg_doc_len"],
                 "file": CORPUS_FILE, "words": len(corpus["df"])},
        "files": {CORPUS_FILE: _digest(folder / CORPUS_FILE)},
    }
    expect = 0
    for e in entries:
        if e["first_pid"] != expect:
            raise AssertionError(f"shards do not tile the passages: {e['path']} starts at "
                                 f"{e['first_pid']}, expected {expect}")
        expect += e["passages"]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def write_sharded_in_process(tmp: Path, base: dict, articles: list[Article],
                             passages: list[Passage], texts: list[str], vectors: np.ndarray,
                             shards: int, index_type: str = "auto") -> None:
    """Every shard and the collection files into an empty build folder, in this process (the
    reference the Ray build in qa.cluster is checked against)."""
    corpus = add_stats([corpus_stats_part(texts)])
    per_article: dict[str, list[int]] = {}
    for p in passages:
        per_article.setdefault(p.doc_id, []).append(p.pid)
    counts = [len(per_article.get(a.doc_id, [])) for a in articles]
    entries, first = [], 0
    for number, (a, b) in enumerate(plan_shards(counts, shards)):
        n = sum(counts[a:b])
        manifest = shard_manifest(base, number, shards, first, b - a, n, index_type)
        entries.append(write_shard(tmp / shard_name(number), manifest, articles[a:b],
                                   passages[first:first + n], texts[first:first + n],
                                   vectors[first:first + n], corpus))
        first += n
    write_collection(tmp, base, entries, corpus)


# ---------------------------------------------------------------- load

def is_sharded(root: Path | str) -> bool:
    """True when root's live build is a sharded index."""
    try:
        _, raw = _read_manifest(Path(root), "")
    except IndexLoadError:
        return False
    return raw.get("kind") == "sharded"


class _Rows:
    """Vectors of a collection by global passage id, read from the shards' own arrays."""

    def __init__(self, arrays: list[np.ndarray], firsts: list[int]):
        self.arrays, self.firsts = arrays, np.asarray(firsts)

    def __getitem__(self, pids) -> np.ndarray:
        pids = np.asarray(pids, dtype=np.int64).reshape(-1)
        which = np.searchsorted(self.firsts, pids, side="right") - 1
        dim = self.arrays[0].shape[1]
        out = np.empty((len(pids), dim), dtype=np.float32)
        for i, (s, p) in enumerate(zip(which, pids)):
            out[i] = self.arrays[s][p - self.firsts[s]]
        return out


@dataclass
class CorpusTable:
    """The collection's document frequencies in the shape the answer picker reads from a bm25s
    index (`vocab_dict`, and `scores` with `indptr` and `num_docs`)."""

    vocab_dict: dict[str, int]
    scores: dict

    @classmethod
    def from_corpus(cls, corpus: dict) -> CorpusTable:
        words = list(corpus["df"])
        indptr = np.concatenate([[0], np.cumsum([corpus["df"][w] for w in words])]).astype(np.int64)
        return cls({w: i for i, w in enumerate(words)}, {"indptr": indptr, "num_docs": corpus["num_docs"]})


@dataclass
class ShardedIndex:
    """A loaded sharded index: its shards (each a loaded Index) and the collection's views that
    the answer picker and the page read (articles, vectors and passages by global id)."""

    path: Path
    manifest: Manifest
    shards: list[Index]
    first_pids: list[int]
    corpus: dict
    stale: bool = False
    articles: dict[str, Article] = field(default_factory=dict)
    passages: list[Passage] = field(default_factory=list)
    vectors: _Rows | None = None
    bm25: CorpusTable | None = None

    @property
    def model(self) -> str:
        return self.manifest.model


def load_sharded(index_dir: Path | str, model: str | None = None) -> ShardedIndex:
    """Read a sharded index and every shard, checking each as `store.load` checks one index.

    Raises:
        IndexLoadError: as store.load, naming the shard at fault; or shards that do not fit the
            collection's manifest.
    """
    root = Path(index_dir)
    rebuild = f"run `qa build --index {root} --shards N` to rebuild it"
    build_dir, raw = _read_manifest(root, rebuild)
    if raw.get("kind") != "sharded":
        raise IndexLoadError(f"{root}/ is not a sharded index")
    if raw["format_version"] != FORMAT_VERSION:
        raise IndexLoadError(f"{root}/ has index format {raw['format_version']}; {rebuild}")
    try:
        manifest = Manifest.from_json(raw)
        entries = raw["shards"]
        corpus_path = build_dir / CORPUS_FILE
        if _digest(corpus_path) != manifest.files.get(CORPUS_FILE):
            raise ValueError(f"{CORPUS_FILE} is missing, truncated or corrupt")
        corpus = json.loads(corpus_path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise IndexLoadError(f"{build_dir} is corrupt ({e}); {rebuild}") from None
    if model is not None and model != manifest.model:
        raise IndexLoadError(f"{root}/ was built with {manifest.model} but the model asked for "
                             f"is {model}; rebuild it with --model {model}, or leave --model unset")
    shards, firsts = [], []
    for entry in entries:
        shard = load(build_dir / entry["path"], manifest.model)
        meta = (shard.manifest.passages, len(shard.passages))
        if meta != (entry["passages"], entry["passages"]):
            raise IndexLoadError(f"{build_dir / entry['path']} holds {meta[1]} passages, the "
                                 f"collection's manifest says {entry['passages']}; {rebuild}")
        shards.append(shard)
        firsts.append(entry["first_pid"])
    index = ShardedIndex(root, manifest, shards, firsts, corpus)
    for shard, first in zip(shards, firsts):
        index.articles.update(shard.articles)
        index.passages += [replace(p, pid=p.pid + first) for p in shard.passages]
    index.vectors = _Rows([s.vectors for s in shards], firsts)
    index.bm25 = CorpusTable.from_corpus(corpus)
    index.stale = is_stale(manifest)
    return index


def open_index(index_dir: Path | str, model: str | None = None) -> Index | ShardedIndex:
    """store.load for one index, load_sharded for a sharded one."""
    return load_sharded(index_dir, model) if is_sharded(index_dir) else load(index_dir, model)


# ---------------------------------------------------------------- search and merge

@dataclass(frozen=True)
class ShardHits:
    """One shard's answer to a question, ids global: its best passages by each retriever, every
    candidate's two scores for the fusion, and the passage, vector and article of only the
    candidates likely to reach the answer (`shard_hits`'s `send`); the merge asks for any other it
    needs (`shard_passages`)."""

    allowed: int
    dense: list[tuple[int, float]]
    sparse: list[tuple[int, float]]
    cosine: dict[int, float]  # the fusion's dense score (retrieve.dense_scores)
    bm25: dict[int, float]
    passages: dict[int, Passage]
    vectors: dict[int, np.ndarray]
    articles: dict[str, Article]
    ms: float = 0.0  # what building it took the shard (Serve sets it: Ingress.ask_timed's split)


# Beyond k, how many of a shard's candidates, in its own fused order, come with their passage,
# vector and article. A candidate the merge needs and did not get is asked for again, so this
# trades reply size against a second round trip, not correctness (README, "The candidates'
# payload").
SEND_EXTRA = 8


def _ranked(method: str, dense: list[tuple[int, float]], sparse: list[tuple[int, float]],
            alpha: float, cosine: dict[int, float], bm25: dict[int, float]
            ) -> list[tuple[int, float]]:
    """The candidates in `method`'s order; hybrid fuses the two lists with the candidates' exact
    scores (`cosine`, `bm25`: by passage id), as Retriever.search does."""
    if method == "dense":
        return dense
    if method == "bm25":
        return sparse
    return fuse(dense, sparse, alpha, dense_of=lambda pids: np.array([cosine[p] for p in pids]),
                bm25_of=lambda pids: np.array([bm25[p] for p in pids], dtype=np.float32))


def shard_hits(retriever: Retriever, first_pid: int, question: str, qvec: np.ndarray | None,
               k: int, method: str, filters: Filters | None = None,
               send: int | None = None) -> ShardHits:
    """A shard's candidates for a question (see the module docstring).

    Args:
        retriever: the shard's Retriever.
        first_pid: the shard's first passage id in the collection.
        question, qvec, k, method, filters: as Retriever.search.
        send: how many candidates, best first by this shard's own fusion, come whole (default
            k + SEND_EXTRA; None of the others' texts, vectors or articles).
    """
    allowed = retriever.allowed(filters)
    n = len(retriever.index.passages) if allowed is None else len(allowed)
    want = min(n, max(MIN_CANDIDATES, 4 * k))
    dense: list[tuple[int, float]] = []
    sparse: list[tuple[int, float]] = []
    scores = None
    if want:
        if method != "bm25":
            assert qvec is not None, "dense and hybrid search need the question's vector"
            dense = retriever.dense(qvec, want, allowed)
        if method != "dense":
            scores = retriever.bm25_scores(question)
            sparse = retriever.bm25(question, want, allowed, scores=scores)
    local = np.array(sorted({p for p, _ in dense} | {p for p, _ in sparse}), dtype=np.int64)
    index = retriever.index
    cosine: dict[int, float] = {}
    if method == "hybrid" and len(local):
        assert qvec is not None
        cosine = dict(zip(local.tolist(), dense_scores(index.vectors[local], qvec).tolist()))
    bm25 = {int(p): scores[p] for p in local} if scores is not None else {}
    ranked = _ranked(method, dense, sparse, retriever.alpha, cosine, bm25)
    send = k + SEND_EXTRA if send is None else send
    whole = shard_passages(retriever, first_pid, [first_pid + p for p, _ in ranked[:send]])
    return replace(
        whole, allowed=n,
        dense=[(first_pid + p, s) for p, s in dense],
        sparse=[(first_pid + p, s) for p, s in sparse],
        cosine={first_pid + p: s for p, s in cosine.items()},
        bm25={first_pid + p: s for p, s in bm25.items()})


def shard_passages(retriever: Retriever, first_pid: int, pids) -> ShardHits:
    """The passages, vectors and articles of those of `pids` (global ids) this shard holds."""
    index = retriever.index
    local = [p - first_pid for p in pids if 0 <= p - first_pid < len(index.passages)]
    passages = {first_pid + p: replace(index.passages[p], pid=first_pid + p) for p in local}
    return ShardHits(allowed=0, dense=[], sparse=[], cosine={}, bm25={}, passages=passages,
                     vectors={first_pid + p: index.vectors[p] for p in local},
                     articles={q.doc_id: index.articles[q.doc_id] for q in passages.values()})


def merge_shard_hits(parts: list[ShardHits], k: int, method: str, alpha: float,
                     fetch=None) -> list[Hit]:
    """Every shard's candidates -> the collection's top-k hits, as Retriever.search ranks them.

    `fetch(pids)` -> ShardHits of every shard holding some of `pids` (`shard_passages`): asked
    for candidates the merge reaches whose passages no shard sent. Their vectors and articles go
    with them, so the caller keeps what it fetched (Serve's ingress holds it for the picker).
    """
    n = sum(p.allowed for p in parts)
    if n == 0:
        return []
    want = min(n, max(MIN_CANDIDATES, 4 * k))

    def best(lists) -> list[tuple[int, float]]:
        return sorted((x for xs in lists for x in xs), key=lambda x: (-x[1], x[0]))[:want]

    passages: dict[int, Passage] = {}
    cosine: dict[int, float] = {}
    bm25: dict[int, float] = {}
    for part in parts:
        passages.update(part.passages)
        cosine.update(part.cosine)
        bm25.update(part.bm25)
    dense, sparse = best(p.dense for p in parts), best(p.sparse for p in parts)
    ranked = _ranked(method, dense, sparse, alpha, cosine, bm25)
    while True:
        try:
            return merge(ranked, passages, k)  # type: ignore[arg-type]  # a dict by global id
        except KeyError as e:  # a candidate no shard sent whole: fetch it and those after it
            if fetch is None:
                raise
            missing = e.args[0]
            at = next(i for i, (p, _) in enumerate(ranked) if p == missing)
            for part in fetch([p for p, _ in ranked[at:at + 2 * k] if p not in passages]):
                passages.update(part.passages)
            if missing not in passages:  # no shard holds it: a shard answered for another index
                raise RuntimeError(f"no shard returned passage {missing}, which one of them ranked")


class ShardedRetriever:
    """Retriever.search over a ShardedIndex, asking each shard in this process."""

    def __init__(self, index: ShardedIndex, encoder, alpha: float | None = None):
        from .retrieve import HYBRID_ALPHA

        self.index = index
        self.encoder = encoder
        self.alpha = HYBRID_ALPHA if alpha is None else alpha
        self.shards = [Retriever(s, encoder, self.alpha) for s in index.shards]

    def search(self, question: str, k: int = 5, method: str = "hybrid",
               filters: Filters | None = None, qvec: np.ndarray | None = None) -> list[Hit]:
        """As Retriever.search, over every shard."""
        from .retrieve import MAX_CANDIDATES_K

        check_retriever(method)
        check_k(k, MAX_CANDIDATES_K)
        if method != "bm25" and qvec is None:
            qvec = self.encoder.encode([question])[0]
        parts = [shard_hits(r, first, question, qvec, k, method, filters)
                 for r, first in zip(self.shards, self.index.first_pids)]
        return merge_shard_hits(parts, k, method, self.alpha, fetch=self.passages)

    def passages(self, pids) -> list[ShardHits]:
        """merge_shard_hits's `fetch`: the passages no shard sent whole."""
        return [shard_passages(r, first, pids)
                for r, first in zip(self.shards, self.index.first_pids)]
