"""BM25 with collection-wide statistics: what lets one shard score passages as the whole index.

BM25 (bm25s' "lucene" variant) scores a passage with three numbers besides its own words: the
number of passages in the collection, their average length, and how many passages hold each word
(document frequency). A shard built with its own numbers would score differently from the single
index, and scores from two shards could not be compared. Built with the collection's numbers,
every (passage, word) score is computed from the same float inputs as in a single index, so it is
the same float32 value, and a question's score (the sum over its words, in the question's order)
is too.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np

from .text import tokenize


def corpus_stats_part(texts: list[str]) -> dict:
    """The BM25 statistics of some passages, to be added up with `add_stats` over a collection.

    Returns:
        {"num_docs": int, "total_len": int, "df": {word: passages holding it}}
    """
    tokens = tokenize(texts)
    words = {i: t for t, i in tokens.vocab.items()}
    df: Counter = Counter()
    total = 0
    for ids in tokens.ids:
        total += len(ids)
        df.update(words[i] for i in set(ids))
    return {"num_docs": len(tokens.ids), "total_len": total, "df": dict(df)}


def add_stats(parts: Iterable[dict]) -> dict:
    """Parts from `corpus_stats_part` -> the collection's statistics, as a shard build takes them.

    Returns:
        {"num_docs", "avg_doc_len", "df"}; avg_doc_len is computed as bm25s computes it (the
        float64 mean of integer lengths, exact below 2**53 words).
    """
    num, total = 0, 0
    df: Counter = Counter()
    for part in parts:
        num += part["num_docs"]
        total += part["total_len"]
        df.update(part["df"])
    avg = float(np.float64(total) / num) if num else 0.0
    return {"num_docs": num, "avg_doc_len": avg, "df": dict(sorted(df.items()))}


def corpus_scores(retriever, vocab: dict[str, int], corpus_token_ids: list[list[int]],
                  corpus: dict) -> dict:
    """bm25s' score matrix of some passages (`BM25.build_index_from_ids`), computed with the
    collection's statistics `corpus` (from `add_stats`) instead of the passages' own.

    The steps and helpers are bm25s' own (0.2.6 to 0.3.x), with n_docs, avg_doc_len and the
    IDF's document frequencies replaced; tests/test_shards.py checks the result equals a single
    index's scores exactly.
    """
    from bm25s import scoring

    if retriever.method in retriever.methods_requiring_nonoccurrence:
        raise ValueError(f"corpus-wide statistics are not supported for BM25 method {retriever.method}")
    words = {i: t for t, i in vocab.items()}
    unique = [i for i in vocab.values()]
    local_df = scoring._calculate_doc_freqs(corpus_token_ids, unique, show_progress=False)
    global_df = {i: int(corpus["df"].get(words[i], 0)) for i in local_df}
    idf = scoring._build_idf_array(doc_frequencies=global_df, n_docs=corpus["num_docs"],
                                   compute_idf_fn=scoring._select_idf_scorer(retriever.idf_method),
                                   dtype=retriever.dtype)
    retriever.nonoccurrence_array = None
    # local_df sizes the output arrays (one entry per (passage, word) pair held here).
    flat, doc_idx, vocab_idx = scoring._build_scores_and_indices_for_matrix(
        corpus_token_ids=corpus_token_ids, idf_array=idf,
        # np.float64 as bm25s has it: NumPy 2 keeps float32 arithmetic with a Python float
        # but goes to float64 with a NumPy one, and the scores would differ in the last bits.
        avg_doc_len=np.float64(corpus["avg_doc_len"]),
        doc_frequencies=local_df, k1=retriever.k1, b=retriever.b, delta=retriever.delta,
        nonoccurrence_array=None, method=retriever.method, dtype=retriever.dtype,
        int_dtype=retriever.int_dtype, show_progress=False)
    shape = (len(corpus_token_ids), len(unique))
    if retriever.csc_backend == "scipy":
        import scipy.sparse as sp

        matrix = sp.csc_matrix((flat, (doc_idx, vocab_idx)), shape=shape, dtype=retriever.dtype)
        data, indices, indptr = matrix.data, matrix.indices, matrix.indptr
    else:
        data, indices, indptr = retriever._np_csc(data=flat, rows=doc_idx, cols=vocab_idx, shape=shape)
        data = data.astype(retriever.dtype)
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": len(corpus_token_ids)}
