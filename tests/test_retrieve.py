"""Retrieval: fusion by hand, merging of near-duplicates, filters, and the three retrievers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qa.retrieve import Filters, Retriever, fuse, merge, one_faiss_thread
from qa.settings import UserError
from qa.types import Article, Passage

FOSHAN_2022 = "000_8c8a69ca8b028a93"
HI_TECH_ZONE_2021 = "001_7c43ea33db645370"
DONGGUAN = "003_fa579be8430ff762"
CHINA_DAILY_2018 = "004_e707e5471eeb2870"


def scores(table: dict[int, float]):
    return lambda pids: np.array([table[int(p)] for p in pids])


def test_fuse_matches_a_hand_computed_case():
    # union {1, 2, 3}; dense .9 .5 .3 -> min-max 1, 1/3, 0; bm25 0 8 4 -> 0, 1, 1/2
    # alpha .5: p1 .5, p2 (1/3 + 1)/2 = 2/3, p3 (0 + 1/2)/2 = 1/4
    got = fuse([(1, .9), (2, .5)], [(2, 8.0), (3, 4.0)], 0.5,
               scores({1: .9, 2: .5, 3: .3}), scores({1: 0.0, 2: 8.0, 3: 4.0}))
    assert [p for p, _ in got] == [2, 1, 3]
    assert [s for _, s in got] == pytest.approx([2 / 3, 0.5, 0.25])


@pytest.mark.parametrize("alpha,first", [(1.0, 1), (0.0, 2)])
def test_fuse_alpha_one_is_dense_and_zero_is_bm25(alpha, first):
    got = fuse([(1, .9), (2, .5)], [(2, 8.0), (1, 1.0)], alpha,
               scores({1: .9, 2: .5}), scores({1: 1.0, 2: 8.0}))
    assert got[0][0] == first


def test_fuse_scores_a_candidate_with_both_retrievers():
    # pid 3 is only a BM25 candidate, but its real dense score (the best) must count
    got = fuse([(1, .5)], [(3, 2.0), (1, 1.0)], 0.5, scores({1: .5, 3: .9}),
               scores({1: 1.0, 3: 2.0}))
    assert got == [(3, 1.0), (1, 0.0)]


@pytest.mark.parametrize("dense,sparse", [([], []), ([(4, .2)], []), ([], [(4, 3.0)])])
def test_fuse_empty_and_single_inputs(dense, sparse):
    got = fuse(dense, sparse, 0.5, scores({4: .2}), scores({4: 3.0}))
    assert got == ([] if not dense and not sparse else [(4, 0.0)])


def passage(pid, doc, start, end, text=None):
    return Passage(pid=pid, doc_id=doc, char_start=start, char_end=end,
                   text=text or f"text {pid} of {doc}")


def test_merge_puts_overlapping_chunks_and_repeated_text_last_and_renumbers():
    passages = [passage(0, "a", 0, 100), passage(1, "a", 60, 160),  # 40 shared: kept
                passage(2, "a", 10, 90),                              # inside 0: a repeat
                passage(3, "b", 0, 50, "Same words here."),
                passage(4, "c", 0, 50, "same  words HERE."),          # same text: a repeat
                passage(5, "b", 200, 260)]
    ranked = [(0, .9), (2, .8), (1, .7), (3, .6), (4, .5), (5, .4)]
    hits = merge(ranked, passages, k=4)
    assert [h.passage.pid for h in hits] == [0, 1, 3, 5]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert [h.score for h in hits] == [.9, .7, .6, .4]
    # repeats show only when k asks for more passages than there are distinct ones
    assert [h.passage.pid for h in merge(ranked, passages, k=10)] == [0, 1, 3, 5, 2, 4]


def test_merge_stops_at_k_and_handles_empty():
    passages = [passage(i, str(i), 0, 10) for i in range(5)]
    assert len(merge([(i, 1.0 - i / 10) for i in range(5)], passages, k=2)) == 2
    assert merge([], passages, k=3) == []


def fake_index():
    arts = {"x": Article("x", "t", date="2021-03-04T10:00", source="China Daily"),
            "y": Article("y", "t", date="2022-01-17", source="Dongguan Today"),
            "z": Article("z", "t", date="", source="")}
    passages = [passage(0, "x", 0, 1), passage(1, "y", 0, 1), passage(2, "x", 1, 2),
                passage(3, "z", 0, 1)]
    return SimpleNamespace(articles=arts, passages=passages, manifest=SimpleNamespace(index_type="Flat"))


@pytest.mark.parametrize("filters,pids", [
    (None, None),
    (Filters(), None),
    (Filters(doc="x"), [0, 2]),
    (Filters(source="china daily"), [0, 2]),
    (Filters(since="2021-06-01"), [1]),
    (Filters(until="2021-03-04"), [0, 2]),           # the day itself counts, time ignored
    (Filters(since="2021-03-04", until="2022-01-17"), [0, 1, 2]),
    (Filters(since="2023-01-01"), []),
    (Filters(doc="nope"), []),
    (Filters(source="Dongguan Today", doc="x"), []),
])
def test_filters_select_passages(filters, pids):
    got = Retriever(fake_index(), encoder=None).allowed(filters)
    assert (got is None and pids is None) or got.tolist() == pids


def test_dense_orders_equal_scores_by_passage_id():
    """The same text twice scores the same; FAISS returns such ties in no set order, and a
    sharded index merges them by passage id, so one index orders them so too."""
    import faiss

    index = fake_index()
    flat = faiss.IndexFlatIP(2)  # its heap returns these ties largest id first
    flat.add(np.array([[1, 0], [.6, .8], [1, 0], [.6, .8]], dtype=np.float32))
    index.faiss_index = flat
    got = Retriever(index, encoder=None).dense(np.array([1, 0], dtype=np.float32), 4)
    assert [p for p, _ in got] == [0, 2, 1, 3]
    assert [round(s, 6) for _, s in got] == [1.0, 1.0, 0.6, 0.6]


def test_dense_scores_do_not_depend_on_the_rows_scored_beside():
    from qa.retrieve import dense_scores

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 384)).astype(np.float32)
    qvec = rng.standard_normal(384).astype(np.float32)
    every = dense_scores(vectors, qvec)
    for rows in (rng.choice(300, 40, replace=False), np.array([7]), np.arange(299, -1, -3)):
        assert dense_scores(vectors[rows], qvec).tolist() == every[rows].tolist()  # bit for bit
    np.testing.assert_allclose(every, vectors.astype(np.float64) @ qvec.astype(np.float64))


# ---------------------------------------------------------------- real model, real index

@pytest.fixture(scope="module")
def retriever(engine):
    return engine.retriever


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
def test_each_retriever_finds_the_article(retriever, method):
    hits = retriever.search("When was Dongguan's application to become an innovative city "
                            "approved?", k=3, method=method)
    assert hits[0].passage.doc_id == DONGGUAN
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("filters,docs", [
    (Filters(doc=DONGGUAN), {DONGGUAN}),
    (Filters(source="China Daily"), {CHINA_DAILY_2018}),
    (Filters(since="2022-01-01"), {FOSHAN_2022, DONGGUAN}),
    (Filters(until="2021-05-18"), {HI_TECH_ZONE_2021, CHINA_DAILY_2018}),
    (Filters(since="2030-01-01"), set()),
])
def test_filters_end_to_end(retriever, method, filters, docs):
    hits = retriever.search("innovative city", k=50, method=method, filters=filters)
    assert {h.passage.doc_id for h in hits} == docs


def test_hybrid_hits_are_never_near_duplicates(retriever):
    hits = retriever.search("Foshan high-tech enterprises", k=10, method="hybrid")
    for i, a in enumerate(hits):
        for b in hits[i + 1:]:
            if a.passage.doc_id == b.passage.doc_id:
                shared = min(a.passage.char_end, b.passage.char_end) - \
                    max(a.passage.char_start, b.passage.char_start)
                assert shared <= 0.5 * min(a.passage.char_end - a.passage.char_start,
                                           b.passage.char_end - b.passage.char_start)


@pytest.mark.parametrize("method,k", [("sparse", 5), ("hybrid", 0)])
def test_bad_method_or_k_is_a_user_error(retriever, method, k):
    with pytest.raises(UserError):
        retriever.search("anything", k=k, method=method)


@pytest.mark.parametrize("question", ["the of and", "?!.,;", "Wie hoch ist der Umsatz?"])
def test_unknown_or_stop_words_do_not_break_bm25(retriever, question):
    assert len(retriever.search(question, k=3, method="bm25")) <= 3
    assert len(retriever.search(question, k=3, method="hybrid")) == 3


def test_dense_search_leaves_the_callers_openmp_threads_alone(engine):
    """FAISS searches one question with one OpenMP thread, but torch shares that setting: left at
    1 it slowed every question's encoding by about 3 ms. The caller's setting comes back."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        r = Retriever(engine.index, engine.encoder)
        hits = r.search("When was Dongguan's application approved?", k=3, method="dense")
        assert hits and faiss.omp_get_max_threads() == 2
        with one_faiss_thread():
            assert faiss.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)


def test_hybrid_scores_bm25_once_per_question(engine, monkeypatch):
    retriever = Retriever(engine.index, engine.encoder)
    calls = []
    real = retriever.bm25_scores
    monkeypatch.setattr(retriever, "bm25_scores", lambda q: calls.append(q) or real(q))
    hits = retriever.search("When was Dongguan's application approved?", k=5, method="hybrid")
    assert hits and calls == ["When was Dongguan's application approved?"]


@pytest.mark.parametrize("value", ["abc", "2021-02-30", "2021-13-01", "21-06-30", "last week", 20210630])
def test_filters_refuse_what_is_not_a_date(value):
    from qa.settings import UsageError

    with pytest.raises(UsageError, match="is not a date; use YYYY-MM-DD") as e:
        Filters(since=value)
    assert e.value.exit_code == 2
    with pytest.raises(UsageError):
        Filters(until=value)


@pytest.mark.parametrize("value,kept", [(None, None), ("", None), ("  ", None),
                                        (" 2021-06-30 ", "2021-06-30"),
                                        ("2022-01-17T09:41", "2022-01-17T09:41")])
def test_filters_keep_real_dates_and_drop_empty_ones(value, kept):
    assert Filters(since=value).since == kept and Filters(until=value).until == kept
