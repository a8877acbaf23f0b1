"""qa bench: the pure helpers, and one real run at a tiny size (not a timed test)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa.bench import bench_questions, parse_sizes, percentiles, recall_at, seed_corpus
from qa.cli import main


def test_seed_corpus_is_distinct_deterministic_and_sized():
    rows = seed_corpus(300)
    assert len(rows) == 300
    assert len({r["text"] for r in rows}) == 300 and len({r["_id"] for r in rows}) == 300
    assert rows == seed_corpus(300)
    assert rows != seed_corpus(300, seed=1)
    assert all(r["title"] and len(r["text"].split()) >= 8 for r in rows)


@pytest.mark.parametrize("text, expected", [("1000,10000", [1000, 10000]), ("10k, 1e5", [10000, 100000]),
                                                 ("seeds,1k", ["seeds", 1000])])
def test_parse_sizes(text, expected):
    assert parse_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "10", "seed"])
def test_parse_sizes_refuses(text):
    with pytest.raises(Exception, match="sizes"):
        parse_sizes(text)


def test_percentiles_nearest_rank():
    seconds = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(seconds) == {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


def test_recall_against_exact():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 2, 9], [4, 5, 6]])
    assert recall_at(exact, approx, k=3) == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)


@pytest.mark.slow
def test_bench_runs_at_a_tiny_size_and_on_the_seeds(tmp_path, capsys, engine):
    rc = main(["bench", "--sizes", "seeds,150", "--rounds", "10", "--out", str(tmp_path), "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    by_size = {}
    for r in rows:
        by_size.setdefault(r["size"], set()).add((r["retriever"], r["index_type"]))
    assert list(by_size) == ["seeds", 150]
    for retrievers in by_size.values():
        assert retrievers == {("bm25", "-"), ("dense", "Flat"), ("dense", "HNSW"),
                              ("hybrid+answer", "Flat"), ("hybrid+answer", "HNSW"),
                              ("hybrid+reader", "Flat"), ("hybrid+reader", "HNSW")}
    seeds = [r for r in rows if r["size"] == "seeds"]
    assert {r["passages"] for r in seeds} == {len(engine.index.passages)}
    assert {r["documents"] for r in seeds} == {5}
    for r in rows:
        assert r["chosen_index"] == "Flat"
        assert set(r["split_p50_ms"]) == {"bare_forward", "encode", "search", "pick"}
        assert all(v > 0 for v in r["split_p50_ms"].values())
        assert r["size"] == "seeds" or r["passages"] >= 150
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["build_passages_per_s"] > 0 and r["encode_passages_per_s"] > 0
        assert r["peak_rss_mb"] > 100 and r["index_mb"] > 0
        assert r["faiss_search"]["Flat"]["recall_at_10"] == 1.0
        assert 0 <= r["faiss_search"]["HNSW"]["recall_at_10"] <= 1
    assert (tmp_path / "latency_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "bench.json").read_text()) == rows


def test_the_timed_questions_ship_with_the_package_and_are_the_test_set():
    from conftest import ROOT

    from qa.settings import QUESTIONS

    assert QUESTIONS.parent.name == "qa" and QUESTIONS.is_file()
    # tests/questions.jsonl links to the packaged file, so the two cannot drift apart
    assert (ROOT / "tests" / "questions.jsonl").read_bytes() == QUESTIONS.read_bytes()
    asked = bench_questions(None)
    assert len(asked) == len(QUESTIONS.read_text().splitlines()) and asked[0].endswith("?")


def test_bench_names_a_missing_question_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["bench", "--sizes", "seeds", "--question-file", str(missing),
                 "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert f"question file {missing} does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was built or written


def test_soak_names_a_missing_question_file(tmp_path, capsys):
    from qa.soak import main as soak_main

    missing = tmp_path / "nope.jsonl"
    assert soak_main(["--question-file", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"question file {missing} does not exist" in err and "Traceback" not in err


# ---------------------------------------------------------------- past one machine

from qa.bench import parse_counts  # noqa: E402
from qa.bench_cluster import (count_differences, differences, sample_questions,  # noqa: E402
                              unit_vectors)


@pytest.mark.parametrize("text, expected", [("1,2", [1, 2]), ("1k, 10k,1M", [1000, 10000, 1000000]),
                                                 ("2.5k", [2500])])
def test_parse_counts(text, expected):
    assert parse_counts(text, "--shard-sizes") == expected


@pytest.mark.parametrize("argv, says", [
    (["--ray", "127.0.0.1:1", "--sizes", "seeds,1000"], "one size"),
    (["--ray", "127.0.0.1:1", "--workers", "0"], "--workers: 0 is too small"),
    (["--ray", "127.0.0.1:1", "--workers", "one"], "--workers 'one'"),
    (["--ray", "127.0.0.1:1", "--check-shards", "2,x"], "--check-shards"),
    (["--ray", "127.0.0.1:1", "--check-questions", "0"], "--check-questions must be at least 1"),
    (["--ray", "127.0.0.1:1", "--shards", "0"], "--shards must be at least 1"),
    (["--shard-sizes", "10"], "--shard-sizes: 10 is too small"),
    (["--shard-sizes", "1k", "--workers", "2"], "add --ray ADDRESS"),
    (["--sizes", "seeds", "--workers", "2"], "add --ray ADDRESS"),
    (["--ann-size", "10k"], "--ann-size needs --shard-sizes"),
    (["--shard-sizes", "1k", "--ann", "lsh"], "--ann: expected some of hnsw,ivf-flat,ivf-pq"),
    (["--shard-sizes", "1k", "--rounds", "3"], "--rounds must be at least 10"),
])
def test_bench_past_one_machine_refuses_bad_options(tmp_path, capsys, argv, says):
    assert main(["bench", *argv, "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was built or written


def test_unit_vectors_are_unit_and_deterministic():
    v = unit_vectors(250, 384)
    assert v.dtype == np.float32 and v.shape == (250, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.array_equal(v, unit_vectors(250, 384)) and not np.array_equal(v, unit_vectors(250, 384, 1))


def _reply(*passages, answer=None, abstained=True):
    return {"passages": [{"doc_id": d, "char_start": c, "score": s} for d, c, s in passages],
            "answer": answer, "abstained": abstained}


def test_differences_count_each_kind():
    ref = _reply(("a", 0, 0.9), ("b", 10, 0.5), answer={"text": "1985"}, abstained=False)
    assert differences(ref, ref) == set()
    assert differences(ref, _reply(("a", 0, 0.9 + 5e-6), ("b", 10, 0.5), answer={"text": "1985"},
                                   abstained=False)) == set()  # within 1e-5
    assert differences(ref, _reply(("b", 10, 0.5), ("a", 0, 0.9), answer={"text": "1985"},
                                   abstained=False)) == {"ids", "scores"}  # swapped order
    assert differences(ref, _reply(("a", 0, 0.9), ("b", 10, 0.5))) == {"snippet", "abstention"}
    got = count_differences({"q1": ref, "q2": ref}, {"q1": ref, "q2": _reply(("a", 0, 0.8))})
    assert got["questions"] == 2 and got["any"] == 1 and got["examples"] == ["q2"]
    assert got["mismatches"] == {"ids": 1, "scores": 1, "snippet": 1, "abstention": 1}


def test_sample_questions_is_fixed_and_keeps_to_the_documents(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "doc": f"d{i % 3}",
                                        "answers": ["x"]}) + "\n" for i in range(30)))
    some = sample_questions(path, {"d0", "d1"}, 5)
    assert len(some) == 5 and some == sample_questions(path, {"d0", "d1"}, 5)
    assert all(int(q["id"][1:]) % 3 != 2 for q in some)
    assert len(sample_questions(path, None, None)) == 30
    with pytest.raises(Exception, match="no question"):
        sample_questions(path, {"elsewhere"}, 5)


def test_bench_shard_search_tiny_run(tmp_path, capsys):
    rc = main(["bench", "--shard-sizes", "300,2k", "--rounds", "10", "--json", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["vectors"], r["index"]) for r in rows] == [
        (300, "Flat"), (2000, "Flat"), (2000, "HNSW32"), (2000, "IVF-Flat"), (2000, "IVF-PQ"),
        (2000, "IVF-PQ nprobe 64")]
    for r in rows:
        assert r["figure"] == "shard_search"
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert 0 <= r["recall_at_10"] <= 1 and r["load_average"] >= 0
    flat = {r["index"]: r for r in rows if r["vectors"] == 2000}
    assert flat["Flat"]["recall_at_10"] == 1.0 and flat["Flat"]["bytes_per_vector"] == 4 * 384
    assert flat["IVF-PQ nprobe 64"]["recall_at_10"] >= flat["IVF-PQ"]["recall_at_10"]
    assert json.loads((tmp_path / "shard_search.json").read_text()) == [
        {k: v for k, v in r.items() if k != "figure"} for r in rows]
    assert "| 2,000 " in (tmp_path / "shard_search.md").read_text()


@pytest.mark.slow
def test_bench_ray_on_a_two_node_cluster(ray_cluster, tmp_path, capsys):
    """A bounded `qa bench --ray` on the seeds: one Ray build (1 actor, 2 shards), a dozen
    questions in process and through Serve, all answered as the single index answers them."""
    import ray

    try:
        rc = main(["bench", "--ray", ray_cluster, "--sizes", "seeds", "--workers", "1",
                   "--check-shards", "2", "--check-questions", "12", "--rounds", "10", "--json",
                   "--out", str(tmp_path)])
    finally:
        ray.shutdown()  # this process was a driver of the cluster the fixture ends
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    by = {}
    for r in rows:
        by.setdefault(r["figure"], []).append(r)
    assert by["cluster"][0]["nodes"] == 2 and by["cluster"][0]["cpus_per_node"] == [1, 1]
    builds = {(r["how"], r["workers"], r["shards"]): r for r in by["build"]}
    assert set(builds) == {("single process", 1, 1), ("ray", 1, 2)}
    assert {r["passages"] for r in by["build"]} == {40} and {r["documents"] for r in by["build"]} == {5}
    assert all(r["passages_per_s"] > 0 and r["load_average"] >= 0 for r in by["build"])
    assert by["encode"][0]["threads"] == 1 and by["encode"][0]["passages_per_s"] > 0
    assert {(r["path"], r["shards"]) for r in by["same_answers"]} == {
        ("in process (Ray build)", 2), ("Serve", 2), ("Serve, ingress here", 2)}
    for r in by["same_answers"]:
        assert r["questions"] >= 10 and r["any"] == 0, r  # the same answers as the single index
    assert [r["path"] for r in by["latency"]] == ["serve", "serve, ingress here", "in process",
                                                  "in process, 1 thread"]
    assert all(r["questions"] == 10 and 0 < r["p50_ms"] <= r["p95_ms"] for r in by["latency"])
    split = by["serve_split"][0]["serve_ms"]  # the no-op fan-out is timed apart from the answers
    assert split["noop_fanout"] > 0 and 0 < split["hop"] < split["client"]
    assert 0 < split["shard"] < split["fanout"]  # the shards time their own work
    assert json.loads((tmp_path / "ray.json").read_text()) == rows
    assert "| Ray " in (tmp_path / "ray.md").read_text()
