"""Sharded indexes: collection-wide BM25, the shard plan, the exact merge, and atomic publishing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from qa.bm25corpus import add_stats, corpus_stats_part
from qa.build import build
from qa.engine import QA
from qa.settings import Settings, UserError
from qa.shards import is_sharded, load_sharded, plan_shards
from qa.store import IndexLoadError, load, make_bm25
from qa.text import query_tokens

from conftest import ROOT, SEEDS


def scores(bm25, question: str, n: int) -> np.ndarray:
    ids = bm25.get_tokens_ids(query_tokens(question))
    return bm25.get_scores_from_ids(ids) if ids else np.zeros(n, dtype=np.float32)


@pytest.mark.parametrize("cuts", [[0, 40], [0, 13, 40], [0, 1, 20, 39, 40]])
def test_shards_score_bm25_exactly_as_the_whole_collection(seeds_index, questions, cuts):
    texts = [load(seeds_index).embed_text(p) for p in load(seeds_index).passages]
    whole = make_bm25(texts)
    spans = list(zip(cuts, cuts[1:]))
    corpus = add_stats(corpus_stats_part(texts[a:b]) for a, b in spans)
    parts = [make_bm25(texts[a:b], corpus) for a, b in spans]
    for q in questions:
        expected = scores(whole, q["question"], len(texts))
        got = np.concatenate([scores(p, q["question"], b - a) for p, (a, b) in zip(parts, spans)])
        assert np.array_equal(expected, got), q["question"]  # bit for bit, not approximately


def test_a_shard_built_with_its_own_statistics_would_differ(seeds_index, questions):
    """The check above can fail: local statistics give other scores."""
    texts = [load(seeds_index).embed_text(p) for p in load(seeds_index).passages]
    whole, alone = make_bm25(texts), make_bm25(texts[:13])
    assert any(not np.array_equal(scores(whole, q["question"], 40)[:13],
                                  scores(alone, q["question"], 13)) for q in questions)


def test_corpus_stats_add_up():
    a, b = corpus_stats_part(["Foshan city grew", "the city"]), corpus_stats_part(["Foshan again"])
    total = add_stats([a, b])
    assert total["num_docs"] == 3
    assert total["df"]["foshan"] == 2 and total["df"]["citi"] == 2
    assert total["avg_doc_len"] == pytest.approx(np.mean([3, 1, 2]))
    assert add_stats([]) == {"num_docs": 0, "avg_doc_len": 0.0, "df": {}}


@pytest.mark.parametrize("counts, shards, expected", [
    ([5], 1, [(0, 1)]),
    ([1, 1, 1, 1], 2, [(0, 2), (2, 4)]),
    ([3, 1, 1, 3, 2], 2, [(0, 3), (3, 5)]),
    ([100, 1, 1], 3, [(0, 1), (1, 2), (2, 3)]),  # one article each, however uneven
    ([0, 0, 4], 2, [(0, 2), (2, 3)]),
])
def test_plan_shards_tiles_the_articles(counts, shards, expected):
    plan = plan_shards(counts, shards)
    assert plan == expected
    assert plan[0][0] == 0 and plan[-1][1] == len(counts)
    assert all(a < b for a, b in plan) and all(p[1] == q[0] for p, q in zip(plan, plan[1:]))


@pytest.mark.parametrize("counts, shards", [([1, 2], 3), ([], 1), ([1], 0)])
def test_plan_shards_refuses_what_cannot_be_split(counts, shards):
    with pytest.raises(UserError, match="shards"):
        plan_shards(counts, shards)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, encoder):
    """seeds/ built in this process into 2 and into 4 shards."""
    out = {}
    for n in (2, 4):
        path = tmp_path_factory.mktemp(f"seeds-{n}-shards")
        build([SEEDS], Settings(index_dir=path), encoder=encoder, progress=False, shards=n)
        out[n] = path
    return out


_REFERENCE: dict = {}


def same_answers(one: QA, other: QA, questions: list[dict], methods=("hybrid",)) -> list[str]:
    """What differs between two engines over the questions: [] when top-10 passage ids (in
    order), scores (1e-5), answer snippet and abstention all agree. `one`'s results are computed
    once per engine and method (asking is the slow part of these tests)."""
    diffs = []
    for q in questions:
        for method in methods:
            key = (id(one), q["id"], method)
            if key not in _REFERENCE:
                _REFERENCE[key] = one.ask(q["question"], k=10, retriever=method)
            a = _REFERENCE[key]
            b = other.ask(q["question"], k=10, retriever=method)
            ids_a = [h.passage.pid for h in a.hits]
            ids_b = [h.passage.pid for h in b.hits]
            gap = max((abs(x.score - y.score) for x, y in zip(a.hits, b.hits)), default=0.0)
            if ids_a != ids_b or gap > 1e-5 or a.answer != b.answer or a.abstained != b.abstained:
                diffs.append(f"{q['id']} {method}: {ids_a} vs {ids_b}, gap {gap:.2g}, "
                             f"{a.answer and a.answer.text!r} vs {b.answer and b.answer.text!r}")
    return diffs


def passage_rows(index) -> list[tuple]:
    return [(p.pid, p.doc_id, p.char_start, p.char_end, p.text) for p in index.passages]


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_sharded_in_process_answers_as_one_index(sharded, seeds_index, engine, encoder, questions, n):
    index = load_sharded(sharded[n])
    assert len(index.shards) == n
    assert passage_rows(index) == passage_rows(engine.index)  # ids and texts identical
    other = QA.open(Settings(index_dir=sharded[n]), encoder=encoder)
    assert same_answers(engine, other, questions, ("hybrid", "dense", "bm25")) == []


@pytest.mark.slow
def test_each_shard_is_a_normal_index(sharded, encoder):
    root = sharded[2]
    index = load_sharded(root)
    build_dir = root / (root / "CURRENT").read_text().strip()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    assert [e["path"] for e in manifest["shards"]] == ["shard-000", "shard-001"]
    assert manifest["bm25"]["num_docs"] == len(index.passages)
    for entry, shard in zip(manifest["shards"], index.shards):
        alone = QA.open(Settings(index_dir=build_dir / entry["path"]), encoder=encoder)
        assert len(alone.index.passages) == entry["passages"]
        assert alone.index.manifest.passages == entry["passages"]
        result = alone.ask("When was Dongguan's application approved?", k=3)
        assert result.hits  # it answers on its own, from its own passages
    out = subprocess.run([sys.executable, "-m", "qa.cli", "ask", "When was it approved?",
                          "--index", str(build_dir / "shard-000"), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["passages"]


@pytest.mark.slow
def test_store_load_of_a_sharded_index_says_how_to_open_it(sharded):
    assert is_sharded(sharded[2])
    with pytest.raises(IndexLoadError, match="sharded index"):
        load(sharded[2])


@pytest.mark.slow
def test_a_failed_sharded_build_leaves_the_previous_index(sharded, tmp_path, encoder, monkeypatch):
    import shutil

    import qa.shards

    root = tmp_path / "index"
    shutil.copytree(sharded[2], root)
    before = (root / "CURRENT").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(qa.shards, "write_collection", broken)
    with pytest.raises(RuntimeError):
        build([SEEDS], Settings(index_dir=root), encoder=encoder, progress=False, shards=4)
    assert (root / "CURRENT").read_text() == before
    assert [p.name for p in (root / "builds").iterdir()] == [before.strip().split("/")[1]]
    assert len(load_sharded(root).shards) == 2


def test_single_machine_imports_no_ray():
    code = ("import sys, qa.cli, qa.engine, qa.build, qa.shards, qa.cluster; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr


def test_ray_flag_without_ray_names_the_extra(monkeypatch, capsys):
    from qa.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["build", str(SEEDS), "--ray", "127.0.0.1:1", "--shards", "2", "--index",
                 "/nonexistent/never-written"]) == 1
    err = capsys.readouterr().err
    assert "pip install -e .[ray]" in err and "Traceback" not in err


def test_ray_flag_needs_shards(capsys):
    from qa.cli import main

    assert main(["build", "--ray", "auto", "--index", "/nonexistent/never-written"]) != 0
    assert "--shards" in capsys.readouterr().err


# ---------------------------------------------------------------- on a Ray cluster

@pytest.mark.slow
def test_ray_build_answers_as_one_index(ray_cluster, tmp_path, engine, encoder, questions):
    """Built on a 2-node loopback cluster with 2 and with 4 shards: passages identical to the
    single-machine build, and for every seeds question the same top-10 passages in order,
    scores within 1e-5, the same snippet and abstention."""
    import os

    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    for n in (2, 4):
        index_dir = tmp_path / f"ray-{n}"
        out = subprocess.run([sys.executable, "-m", "qa.cli", "build", str(SEEDS), "--index",
                              str(index_dir), "--ray", ray_cluster, "--shards", str(n), "--quiet"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"({n} shards on Ray)" in out.stdout
        index = load_sharded(index_dir)
        assert len(index.shards) == n
        assert passage_rows(index) == passage_rows(engine.index)
        other = QA.open(Settings(index_dir=index_dir), encoder=encoder)
        assert same_answers(engine, other, questions) == []


def same_json(one: QA, replies: dict[str, dict], questions: list[dict]) -> list[str]:
    """As same_answers, for `qa ask --json` objects (from Serve) against one engine's results."""
    diffs = []
    for q in questions:
        key = (id(one), q["id"], "hybrid")
        if key not in _REFERENCE:
            _REFERENCE[key] = one.ask(q["question"], k=10)
        a, b = one.to_json(_REFERENCE[key]), replies[q["id"]]
        ids_a = [(p["doc_id"], p["char_start"]) for p in a["passages"]]
        ids_b = [(p["doc_id"], p["char_start"]) for p in b["passages"]]
        gap = max((abs(x["score"] - y["score"]) for x, y in zip(a["passages"], b["passages"])),
                  default=0.0)
        if ids_a != ids_b or gap > 1e-5 or a["answer"] != b["answer"] or a["abstained"] != b["abstained"]:
            diffs.append(f"{q['id']}: {ids_a[:3]} vs {ids_b[:3]}, gap {gap:.2g}")
    return diffs


@pytest.mark.slow
def test_serve_answers_as_one_index(ray_cluster, sharded, engine, questions):
    """`qa serve` on the 2-node cluster (a deployment per shard, an ingress that encodes once and
    merges): every seeds question gets what the single-machine index answers, through the Python
    handle and through `qa ask --ray`."""
    import os

    import ray

    from qa import serve

    try:
        got = serve.deploy(ray_cluster, sharded[4], Settings(index_dir=sharded[4]))
        assert got == {"shards": 4, "replicas": 1}
        replies = {q["id"]: serve.ask(ray_cluster, q["question"], k=10) for q in questions}
        assert same_json(engine, replies, questions) == []
        env = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        q = questions[0]
        out = subprocess.run([sys.executable, "-m", "qa.cli", "ask", q["question"], "--k", "10",
                              "--ray", ray_cluster, "--json"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout) == replies[q["id"]]
    finally:
        ray.shutdown()  # this process was a driver of the cluster the fixture ends


SQUAD = ROOT.parent / "shared" / "beir" / "squad-v1.1-dev"


@pytest.mark.slow
def test_squad_questions_answer_as_one_index_in_shards_and_through_serve(ray_cluster, tmp_path,
                                                                         encoder):
    """A few hundred SQuAD 1.1 dev questions over the first 300 paragraphs: the index in 2
    shards (in process) and in 4 shards (through Serve on the 2-node cluster) answer each as the
    single index does. The in-process shards are those of the Ray build (the test above); the
    full 2,067 paragraphs and 500 questions are `qa bench --ray` (README, Ray)."""
    import random

    import ray

    from conftest import require_shared_data
    from qa import serve
    from qa.bench_cluster import count_differences, sample_questions

    if not (SQUAD / "questions.jsonl").is_file():
        require_shared_data(f"{SQUAD} is missing")
    corpus = tmp_path / "corpus.jsonl"
    with (SQUAD / "corpus.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(300))]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    asked = sample_questions(SQUAD / "questions.jsonl", {r["_id"] for r in rows}, 300)
    assert len(asked) == 300
    engines = {}
    for n in (None, 2, 4):
        path = tmp_path / f"index-{n}"
        build([corpus], Settings(index_dir=path), encoder=encoder, progress=False, shards=n)
        engines[n] = QA.open(Settings(index_dir=path), encoder=encoder)
    one = {q["id"]: engines[None].to_json(engines[None].ask(q["question"], k=10)) for q in asked}
    two = {q["id"]: engines[2].to_json(engines[2].ask(q["question"], k=10)) for q in asked}
    assert count_differences(one, two)["any"] == 0, count_differences(one, two)
    try:
        serve.deploy(ray_cluster, tmp_path / "index-4", Settings(index_dir=tmp_path / "index-4"))
        some = random.Random(1).sample(asked, 150)
        four = {q["id"]: serve.ask(ray_cluster, q["question"], k=10) for q in some}
        assert count_differences({i: one[i] for i in four}, four)["any"] == 0
    finally:
        ray.shutdown()
