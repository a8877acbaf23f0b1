"""Question -> ranked Hits: dense (FAISS), BM25 (bm25s) and their fusion."""

from __future__ import annotations

import datetime
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .settings import UsageError, check_k, check_retriever
from .store import Index
from .text import query_tokens
from .types import Hit, Passage

if TYPE_CHECKING:
    from .embed import Encoder

# How many candidates each retriever hands to fusion and merging, at the least.
MIN_CANDIDATES = 50
# Weight of the dense score in the hybrid: measured on the SQuAD tuning half, SciFact and
# ArguAna (README, "Hybrid retrieval").
HYBRID_ALPHA = 0.5
# Retrieval itself takes any k (more than the corpus returns every passage); QA.ask caps it.
MAX_CANDIDATES_K = 10 ** 9
# A filter letting at most this many passages through is searched exactly on an approximate
# (HNSW, IVF) index: a matrix-vector product over them, about 2 ms at 20,000.
EXACT_FILTERED = 20_000
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ].*)?$")


@dataclass(frozen=True)
class Filters:
    """Restrict retrieval to some articles. Dates are checked here, once, for every caller (the
    CLI, the page, the API): YYYY-MM-DD, optionally followed by a time, which is ignored; they
    compare at day precision. An empty date is no bound.

    >>> Filters(since=" 2021-06-30 ").since
    '2021-06-30'
    >>> Filters(since="2021-02-30")
    Traceback (most recent call last):
    ...
    qa.settings.UsageError: since '2021-02-30' is not a date; use YYYY-MM-DD, e.g. 2021-06-30

    Raises:
        UsageError: a date that is not a calendar date in that form.
    """

    source: str | None = None
    since: str | None = None
    until: str | None = None
    doc: str | None = None

    def __post_init__(self):
        for name in ("since", "until"):
            object.__setattr__(self, name, parse_day(getattr(self, name), name))

    def active(self) -> bool:
        return any((self.source, self.since, self.until, self.doc))


def parse_day(value, name: str) -> str | None:
    """A date filter value, stripped, or None when empty.

    Raises:
        UsageError: not text, or not YYYY-MM-DD[T...] with a real calendar day.
    """
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else None
    if text == "":
        return None
    try:
        if text is None or not DAY.match(text):
            raise ValueError
        datetime.date.fromisoformat(text[:10])
    except ValueError:
        raise UsageError(f"{name} {value!r} is not a date; use YYYY-MM-DD, e.g. 2021-06-30") from None
    return text


class Retriever:
    """Holds a loaded Index and an encoder; answers many questions."""

    def __init__(self, index: Index, encoder: Encoder, alpha: float = HYBRID_ALPHA):
        self.index = index
        self.encoder = encoder
        self.alpha = alpha
        self._doc_pids: dict[str, list[int]] = {}
        for p in index.passages:
            self._doc_pids.setdefault(p.doc_id, []).append(p.pid)

    def search(self, question: str, k: int = 5, method: str = "hybrid",
               filters: Filters | None = None, qvec: np.ndarray | None = None) -> list[Hit]:
        """Top-k passages for a question, best first, near-duplicates merged.

        Args:
            question: the question text.
            k: how many hits; more than the corpus returns every passage.
            method: "dense", "bm25" or "hybrid".
            filters: restrict to some articles.
            qvec: the question's vector, when the caller already has it.
        """
        check_retriever(method)
        check_k(k, MAX_CANDIDATES_K)
        allowed = self.allowed(filters)
        n = len(self.index.passages) if allowed is None else len(allowed)
        if n == 0:
            return []
        want = min(n, max(MIN_CANDIDATES, 4 * k))
        if method == "bm25":
            ranked = self.bm25(question, want, allowed)
        else:
            vec = self.encoder.encode([question])[0] if qvec is None else qvec
            if method == "dense":
                ranked = self.dense(vec, want, allowed)
            else:
                sparse = self.bm25_scores(question)  # scored once, for the candidates and the fusion
                ranked = fuse(self.dense(vec, want, allowed),
                              self.bm25(question, want, allowed, scores=sparse),
                              self.alpha,
                              dense_of=lambda pids: dense_scores(self.index.vectors[pids], vec),
                              bm25_of=lambda pids: sparse[pids])
        return merge(ranked, self.index.passages, k)

    def dense(self, qvec: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        import faiss

        kind = self.index.manifest.index_type
        params = None
        if allowed is not None and kind != "Flat" and len(allowed) <= EXACT_FILTERED:
            # An approximate index visits part of the collection and may find few of a narrow
            # filter's passages, or none: score those passages exactly instead.
            scores = self.index.vectors[allowed] @ qvec
            top = np.lexsort((allowed, -scores))[:k]
            return [(int(allowed[i]), float(scores[i])) for i in top]
        if allowed is not None:
            # faiss's stubs lack the SearchParameters* classes' keywords; they exist at run time
            selector = faiss.IDSelectorBatch(allowed)
            if kind == "HNSW":
                params = faiss.SearchParametersHNSW(sel=selector)  # type: ignore[attr-defined]
            elif kind == "IVF":
                params = faiss.SearchParametersIVF(  # type: ignore[call-arg]
                    sel=selector, nprobe=faiss.extract_index_ivf(self.index.faiss_index).nprobe)
            else:
                params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        with one_faiss_thread():
            scores, ids = self.index.faiss_index.search(qvec.reshape(1, -1), k, params=params)
        # Equal scores (the same text twice) in passage id order, as a sharded index merges them.
        return sorted(((int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0),
                      key=lambda x: (-x[1], x[0]))

    def bm25(self, question: str, k: int, allowed: np.ndarray | None = None,
             scores: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (pid, BM25 score) among the allowed passages; `scores` when already computed."""
        scores = self.bm25_scores(question) if scores is None else scores
        if allowed is not None:
            masked = np.full_like(scores, -np.inf)
            masked[allowed] = scores[allowed]
            scores = masked
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        # Ties at the cut (often passages scoring 0) go to the smaller passage id, and so do ties
        # in the order: a sharded index (qa.shards) then picks the very same passages.
        kth = scores[top].min()
        above = np.flatnonzero(scores > kth)
        top = np.concatenate([above, np.flatnonzero(scores == kth)[:k - len(above)]])
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(i), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def bm25_scores(self, question: str) -> np.ndarray:
        """BM25 score of every passage for the question (zeros when no word is known)."""
        ids = self.index.bm25.get_tokens_ids(query_tokens(question))
        if not ids:
            return np.zeros(len(self.index.passages), dtype=np.float32)
        return self.index.bm25.get_scores_from_ids(ids)

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        """Passage ids the filters let through, or None for all."""
        if filters is None or not filters.active():
            return None
        pids: list[int] = []
        for doc_id, article in self.index.articles.items():
            if filters.doc and doc_id != filters.doc:
                continue
            if filters.source and filters.source.casefold() != article.source.casefold():
                continue
            day = article.date[:10]
            if (filters.since or filters.until) and not day:
                continue  # an undated article cannot be said to fall inside a date range
            if filters.since and day < filters.since[:10]:
                continue
            if filters.until and day > filters.until[:10]:
                continue
            pids += self._doc_pids.get(doc_id, [])
        return np.array(sorted(pids), dtype=np.int64)


@contextmanager
def one_faiss_thread():
    """FAISS on one OpenMP thread inside the block, the caller's count back after it.

    One question at a time, FAISS's threads cost more than they save (`qa bench`: a Flat search
    of 115,775 passages took 6.2 ms on one thread and 16.4 ms on two). torch shares the OpenMP
    runtime and the setting belongs to the calling thread, so it is put back at once: left at 1,
    it made encoding each question 3 ms slower.
    """
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def fuse(dense: list[tuple[int, float]], sparse: list[tuple[int, float]], alpha: float,
         dense_of, bm25_of) -> list[tuple[int, float]]:
    """Normalized score combination: alpha * dense + (1 - alpha) * bm25, each min-max scaled
    over the union of both candidate lists, with every candidate scored by both retrievers
    (a passage only one retriever found still gets the other's real score, not a zero).
    Ties keep the smaller passage id first.

    Chosen over reciprocal rank fusion by measurement (README, "Hybrid retrieval"): RRF throws
    away how far ahead the best passage is, and lost to BM25 at rank 1 on SQuAD.

    Args:
        dense, sparse: (pid, score) candidates of each retriever.
        alpha: weight of the dense score.
        dense_of, bm25_of: score arrays of any pids (np.ndarray) for each retriever.

    Returns:
        (pid, fused score in [0, 1]) best first.

    >>> dense_of = lambda p: np.array([0, .9, .5, .3])[p]
    >>> bm25_of = lambda p: np.array([0, 0., 8., 4.])[p]
    >>> [(p, round(s, 4)) for p, s in fuse([(1, .9), (2, .5)], [(2, 8.), (3, 4.)], .5, dense_of, bm25_of)]
    [(2, 0.6667), (1, 0.5), (3, 0.25)]
    """
    pids = np.array(sorted({p for p, _ in dense} | {p for p, _ in sparse}), dtype=np.int64)
    if len(pids) == 0:
        return []
    combined = alpha * _minmax(np.asarray(dense_of(pids), dtype=np.float64)) + \
        (1 - alpha) * _minmax(np.asarray(bm25_of(pids), dtype=np.float64))
    order = np.argsort(-combined, kind="stable")
    return [(int(pids[i]), float(combined[i])) for i in order]


def dense_scores(vectors: np.ndarray, qvec: np.ndarray) -> np.ndarray:
    """Each row's inner product with the question's vector, as the fusion scores it: float64,
    row by row, so a passage's score does not depend on which others are scored with it and a
    shard (qa.shards) computes the very number one index does. (float32 matrix products differ
    in the last bits with the rows around them.)

    >>> v = np.array([[.6, .8], [1., 0.]], dtype=np.float32)
    >>> dense_scores(v, np.array([.6, .8], dtype=np.float32)).round(6).tolist()
    [1.0, 0.6]
    """
    return (np.asarray(vectors, dtype=np.float64) * np.asarray(qvec, dtype=np.float64)).sum(axis=1)


def _minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def merge(ranked: list[tuple[int, float]], passages: list[Passage], k: int) -> list[Hit]:
    """Best-first hits where a passage that mostly repeats a better one (overlapping chunks of
    one article, or the same text twice) is moved behind all distinct passages, so it shows only
    when k asks for more passages than there are distinct ones."""
    kept: list[Passage] = []
    repeats: list[tuple[Passage, float]] = []
    seen_text: set[str] = set()
    scores: list[float] = []
    for pid, score in ranked:
        p = passages[pid]
        key = " ".join(p.text.lower().split())
        if key in seen_text or any(_mostly_overlaps(p, q) for q in kept):
            repeats.append((p, score))
            continue
        seen_text.add(key)
        kept.append(p)
        scores.append(score)
        if len(kept) == k:
            break
    pairs = list(zip(kept, scores)) + repeats[:max(0, k - len(kept))]
    return [Hit(passage=p, score=s, rank=i) for i, (p, s) in enumerate(pairs, 1)]


def _mostly_overlaps(a: Passage, b: Passage) -> bool:
    if a.doc_id != b.doc_id:
        return False
    shared = min(a.char_end, b.char_end) - max(a.char_start, b.char_start)
    return shared > 0.5 * min(a.char_end - a.char_start, b.char_end - b.char_start)
