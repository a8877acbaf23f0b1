"""The index on disk: manifest, round trip, refusals, staleness and atomic (re)builds."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qa.settings import Settings, UserError
from qa.build import build
from qa.store import FORMAT_VERSION, IndexLoadError, Manifest, fingerprint, load

from conftest import ROOT, SEEDS

ARTICLE = ("Bridge opens next spring\n2021-03-04\n\nThe city council said on Monday that the new "
           "bridge over the river will open next spring. It will cost 40 million dollars.\n\n"
           "Officials expect heavy traffic in the first weeks.\n")
OTHER = ("School budget approved\n2021-05-06\n\nThe school board approved a budget of 12 million "
         "dollars for next year, the chair said.\n")
THIRD = ("Hospital wing opens\n2021-07-08\n\nA new hospital wing with 200 beds opened on Friday "
         "after two years of work.\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below folder (the lock file aside) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def tiny(tmp_path, fake_encoder):
    """Two small articles built into an index with the fake encoder."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "bridge.txt").write_text(ARTICLE)
    (src / "school.txt").write_text(OTHER)
    index_dir = tmp_path / "index"
    build([src], Settings(index_dir=index_dir), encoder=fake_encoder, progress=False)
    return src, index_dir


@pytest.fixture
def seeds_copy(seeds_index, tmp_path):
    path = tmp_path / "seeds-index"
    shutil.copytree(seeds_index, path)
    return path


def test_manifest_records_what_the_issue_asks(seeds_index, encoder):
    index = load(seeds_index)
    m = index.manifest
    assert m.format_version == FORMAT_VERSION
    assert m.model == "all-MiniLM-L6-v2"
    assert m.dimension == encoder.dim == 384
    assert m.metric == "inner_product" and m.normalized is True
    assert m.index_type == "Flat"
    assert m.documents == len(index.articles) == 5
    assert m.passages == len(index.passages) == index.faiss_index.ntotal
    assert m.chunking == {"max_tokens": 128, "overlap": 1, "title_context": True,
                          "max_seq_length": 256}
    assert m.sources == (str(SEEDS.resolve()),)
    assert m.source_fingerprint == fingerprint([SEEDS])
    assert m.package_version and m.built_at[:4].isdigit()
    assert index.stale is False


def test_index_folder_is_readable_without_pickle(seeds_index):
    live = seeds_index / (seeds_index / "CURRENT").read_text().strip()
    names = {p.name for p in live.iterdir()}
    assert {"manifest.json", "articles.jsonl", "passages.jsonl", "index.faiss", "bm25"} <= names
    assert not [p for p in live.rglob("*") if p.suffix in (".pkl", ".pickle")]
    rows = [json.loads(line) for line in (live / "passages.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"pid", "doc_id", "char_start", "char_end", "text", "sentences"}


def test_stored_vectors_are_the_passages_embedded(seeds_index, encoder):
    """Round trip: the vector at row pid is the encoding of passage pid, unit length."""
    index = load(seeds_index)
    fresh = encoder.encode([index.embed_text(p) for p in index.passages])
    assert index.vectors.dtype == np.float32 and index.vectors.shape == fresh.shape
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(index.vectors, fresh, atol=1e-5)


def test_faiss_and_dense_retrieval_match_brute_force_numpy(seeds_index, encoder, questions):
    from qa.retrieve import Retriever

    index = load(seeds_index)
    retriever = Retriever(index, encoder)
    n = len(index.passages)
    for q in questions[::6]:
        qvec = encoder.encode([q["question"]])[0]
        exact = index.vectors @ qvec
        order = np.argsort(-exact, kind="stable")
        scores, ids = index.faiss_index.search(qvec.reshape(1, -1), n)
        np.testing.assert_allclose(scores[0], exact[order], atol=1e-5)
        assert set(ids[0][:3]) == set(order[:3]) or np.allclose(scores[0][:3], exact[order][:3])
        hits = retriever.search(q["question"], k=5, method="dense", qvec=qvec)
        assert hits[0].passage.pid == order[0]
        for hit in hits:
            assert hit.score == pytest.approx(float(exact[hit.passage.pid]), abs=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_load_refuses_another_model(seeds_index):
    with pytest.raises(IndexLoadError) as e:
        load(seeds_index, model="paraphrase-MiniLM-L3-v2")
    msg = str(e.value)
    assert "all-MiniLM-L6-v2" in msg and "paraphrase-MiniLM-L3-v2" in msg and "qa build" in msg
    assert load(seeds_index, model="all-MiniLM-L6-v2").passages  # its own model is fine


def _edit_manifest(index_dir: Path, **changes) -> None:
    live = index_dir / (index_dir / "CURRENT").read_text().strip()
    manifest = json.loads((live / "manifest.json").read_text())
    manifest.update(changes)
    (live / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, None])
def test_load_refuses_another_format_version(tiny, version):
    _, index_dir = tiny
    _edit_manifest(index_dir, format_version=version)
    with pytest.raises(IndexLoadError) as e:
        load(index_dir)
    assert f"format {version}" in str(e.value) and f"qa build --index {index_dir}" in str(e.value)


def test_manifest_of_another_model_is_refused_by_the_engine(tiny):
    from qa.engine import QA

    _, index_dir = tiny
    _edit_manifest(index_dir, model="some-other-model")
    with pytest.raises(UserError, match="qa build"):
        QA.open(Settings(index_dir=index_dir), check_model=True)


def test_missing_index_says_how_to_build_one(tmp_path):
    with pytest.raises(IndexLoadError, match="qa build"):
        load(tmp_path / "nothing-here")


def test_a_truncated_file_is_named(tiny):
    _, index_dir = tiny
    live = index_dir / (index_dir / "CURRENT").read_text().strip()
    data = (live / "index.faiss").read_bytes()
    (live / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexLoadError, match="index.faiss"):
        load(index_dir)


def test_stale_when_a_source_changes(tiny):
    src, index_dir = tiny
    assert load(index_dir).stale is False
    (src / "bridge.txt").write_text(ARTICLE.replace("40 million", "45 million"))
    assert load(index_dir).stale is True
    (src / "bridge.txt").write_text(ARTICLE)
    assert load(index_dir).stale is False
    (src / "new.md").write_text(THIRD)
    assert load(index_dir).stale is True
    (src / "new.md").unlink()
    (src / ".notes.txt").write_text("a hidden file is not a source")  # not read by ingest either
    (src / "readme.pdf").write_bytes(b"%PDF")
    assert load(index_dir).stale is False


def test_builds_with_the_same_content_give_the_same_fingerprint(tiny, tmp_path):
    src, _ = tiny
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert fingerprint([src]) == fingerprint([copy])
    (copy / "bridge.txt").write_text(ARTICLE + " ")
    assert fingerprint([src]) != fingerprint([copy])


class Boom(RuntimeError):
    pass


def test_a_build_that_fails_while_embedding_leaves_the_old_index(tiny, fake_encoder, monkeypatch):
    src, index_dir = tiny
    before = snapshot(index_dir)
    monkeypatch.setattr(fake_encoder, "encode", lambda *a, **k: (_ for _ in ()).throw(Boom()))
    (src / "more.txt").write_text(THIRD)
    with pytest.raises(Boom):
        build([src], Settings(index_dir=index_dir), encoder=fake_encoder, progress=False)
    assert snapshot(index_dir) == before
    assert len(load(index_dir).articles) == 2


def test_a_build_that_fails_while_writing_leaves_the_old_index(tiny, fake_encoder, monkeypatch):
    import qa.store

    src, index_dir = tiny
    before = snapshot(index_dir)
    seen = []

    def fail(*args, **kwargs):  # articles.jsonl and passages.jsonl are already written
        seen.extend(p.name for p in (index_dir / "builds").iterdir())
        raise Boom()

    monkeypatch.setattr(qa.store, "make_faiss_index", fail)
    (src / "more.txt").write_text(THIRD)
    with pytest.raises(Boom):
        build([src], Settings(index_dir=index_dir), encoder=fake_encoder, progress=False)
    assert any(name.endswith(".tmp") for name in seen)  # it did fail midway through writing
    assert snapshot(index_dir) == before  # and its half-written folder is gone
    assert len(load(index_dir).articles) == 2


def test_a_rebuild_switches_atomically_and_cleans_up(tiny, fake_encoder):
    src, index_dir = tiny
    old = (index_dir / "CURRENT").read_text()
    (index_dir / "builds" / ".20000101-000000-1.tmp").mkdir()  # left by a killed build
    (src / "more.txt").write_text(THIRD)
    time.sleep(1.1)  # build folders are named by the second
    build([src], Settings(index_dir=index_dir), encoder=fake_encoder, progress=False)
    new = (index_dir / "CURRENT").read_text()
    assert new != old
    assert [p.name for p in (index_dir / "builds").iterdir()] == [new.strip().split("/")[1]]
    assert len(load(index_dir).articles) == 3


def test_no_index_is_written_when_there_is_nothing_to_index(tmp_path, fake_encoder):
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UserError):
            build([source], Settings(index_dir=tmp_path / "index"), encoder=fake_encoder,
                  progress=False)
    assert not (tmp_path / "index").exists()


def test_an_empty_source_keeps_the_previous_index(tiny, fake_encoder, tmp_path):
    _, index_dir = tiny
    before = snapshot(index_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        build([tmp_path / "empty"], Settings(index_dir=index_dir), encoder=fake_encoder)
    assert snapshot(index_dir) == before


def test_a_second_concurrent_build_refuses(tiny, fake_encoder):
    import fcntl

    src, index_dir = tiny
    with (index_dir / ".lock").open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another `qa build`"):
            build([src], Settings(index_dir=index_dir), encoder=fake_encoder, progress=False)


# ------------------------------------------------------------------ kill -9 during a real build

def _bigger_corpus(folder: Path, copies: int) -> Path:
    """The seeds, each repeated with a distinct closing line so none is a duplicate."""
    folder.mkdir()
    for n in range(copies):
        for seed in sorted(SEEDS.glob("*.txt")):
            text = seed.read_text(encoding="utf-8")
            (folder / f"{seed.stem}-{n}.txt").write_text(
                text.replace("\n\n", f"\n\nCopy {n} of this article was filed for the test.\n\n", 1),
                encoding="utf-8")
    return folder


def _answers(index_dir: Path, questions: list[str]) -> list:
    from qa.engine import QA

    qa = QA.open(Settings(index_dir=index_dir))
    return [[(h.passage.doc_id, h.passage.char_start, h.passage.char_end, round(h.score, 5))
             for h in qa.ask(q, k=5).hits] for q in questions]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["embedding", "writing"])
def test_kill_9_during_a_build_leaves_the_previous_index(seeds_copy, tmp_path, questions, moment):
    asked = [q["question"] for q in questions[:3]]
    before_answers = _answers(seeds_copy, asked)
    before = snapshot(seeds_copy)
    corpus = _bigger_corpus(tmp_path / "corpus", copies=6)
    log = (tmp_path / "build.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "qa.cli", "build", str(corpus), "--index",
                             str(seeds_copy)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)
    builds = seeds_copy / "builds"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if moment == "writing" and any(p.name.endswith(".tmp") for p in builds.iterdir()):
                break
            if moment == "embedding" and "Batches" in Path(log.name).read_text(errors="replace"):
                time.sleep(0.5)  # well inside the embedding loop
                break
            time.sleep(0.002)
        assert proc.poll() is None, f"the build ended before the kill:\n{Path(log.name).read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    after = snapshot(seeds_copy)
    # CURRENT and the live build are untouched; only the unfinished build was left beside them.
    live = before["CURRENT"].decode().strip()
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [name for name in set(after) - set(before) if name.startswith(live + "/")]
    if moment == "writing":
        assert [p for p in builds.iterdir() if p.name.endswith(".tmp")], \
            "the kill should have caught the build while it wrote"
    index = load(seeds_copy)
    assert len(index.articles) == 5 and not index.stale
    assert _answers(seeds_copy, asked) == before_answers


def test_a_missing_dependency_while_loading_is_not_called_corruption(tiny, monkeypatch):
    import faiss

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'faiss._swigfaiss'")

    monkeypatch.setattr(faiss, "read_index", missing)
    with pytest.raises(ModuleNotFoundError):
        load(tiny[1])


@pytest.mark.parametrize("changes,named", [
    ({"dimension": "384"}, "'dimension' is str, not int"),
    ({"sources": "seeds"}, "'sources' is str, not list"),
    ({"normalized": 1}, "'normalized' is int, not bool"),
    ({"chunking": {"title_context": "yes"}}, "title_context"),
    ({"files": {"index.faiss": 7}}, "'files' must map"),
    ({"index_type": "IVF", "ivf": None}, "an IVF index needs 'ivf'"),
    ({"index_type": "IVF", "ivf": {"nlist": 4}}, "an IVF index needs 'ivf'"),
])
def test_a_manifest_field_of_the_wrong_type_is_named(tiny, changes, named):
    _edit_manifest(tiny[1], **changes)
    with pytest.raises(IndexLoadError, match=re.escape(named) + ".*qa build --index"):
        load(tiny[1])


def test_the_manifest_is_a_frozen_record(tiny):
    import dataclasses

    m = load(tiny[1]).manifest
    assert isinstance(m, Manifest) and m.title_context is True and m.sources
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.model = "other"


# ------------------------------------------------------------------ IVF

def _many_articles(folder: Path, n: int) -> Path:
    """n one-passage articles of distinct words, so the fake encoder spreads them out."""
    folder.mkdir()
    words = [f"w{i}" for i in range(400)]
    rng = np.random.default_rng(3)
    for i in range(n):
        body = " ".join(rng.choice(words, 12))
        year = 2020 + i % 2
        (folder / f"a{i:03d}.txt").write_text(f"Item {i}\n{year}-01-01\n\nIt said {body}.\n")
    return folder


@pytest.mark.parametrize("passages, nlist", [(0, 1), (30, 1), (4_033, 103), (1_000_000, 4_000)])
def test_ivf_lists_grow_with_the_root_of_the_size(passages, nlist):
    from qa.store import index_fields, ivf_lists

    assert ivf_lists(passages) == nlist
    fields = index_fields(passages, "ivf")
    if passages == 0:  # nothing to train lists on
        assert fields["index_type"] == "Flat" and fields["ivf"] is None
    else:
        assert fields == {"index_type": "IVF", "hnsw": None,
                          "ivf": {"nlist": nlist, "nprobe": min(16, nlist)}}
    assert index_fields(passages)["index_type"] == ("HNSW" if passages >= 200_000 else "Flat")


def test_an_ivf_build_round_trips_and_finds_each_passage(tmp_path, fake_encoder):
    src = _many_articles(tmp_path / "src", 400)
    build([src], Settings(index_dir=tmp_path / "flat"), encoder=fake_encoder, progress=False)
    build([src], Settings(index_dir=tmp_path / "ivf"), encoder=fake_encoder, progress=False,
          index_type="ivf")
    flat, ivf = load(tmp_path / "flat"), load(tmp_path / "ivf")
    assert (flat.manifest.index_type, flat.manifest.ivf) == ("Flat", None)
    assert ivf.manifest.index_type == "IVF" and ivf.manifest.ivf == {"nlist": 10, "nprobe": 10}
    assert np.array_equal(ivf.vectors, flat.vectors)  # read back through the IVF's direct map
    from qa.retrieve import Retriever

    found = Retriever(ivf, fake_encoder).dense
    assert all(found(v, 1)[0][0] == pid for pid, v in enumerate(ivf.vectors))


def test_a_narrow_filter_on_an_ivf_index_is_searched_exactly(tmp_path, fake_encoder):
    """An IVF index probing one of its lists finds few of one article's passages; a filter that
    lets few passages through is scored over those passages, exactly."""
    import faiss

    from qa.retrieve import Filters, Retriever
    from qa.store import reindexed

    src = _many_articles(tmp_path / "src", 400)
    build([src], Settings(index_dir=tmp_path / "flat"), encoder=fake_encoder, progress=False)
    ivf = load(reindexed(load(tmp_path / "flat"), tmp_path / "ivf", "ivf").parent.parent)
    faiss.extract_index_ivf(ivf.faiss_index).nprobe = 1
    retriever = Retriever(ivf, fake_encoder)
    q = fake_encoder.encode(["It said w1 w2 w3"])[0]
    unfiltered = retriever.dense(q, 400)
    assert len(unfiltered) < 400  # one list of ten holds about a tenth of the passages
    allowed = retriever.allowed(Filters(since="2021-01-01"))
    assert allowed is not None and len(allowed) == 200
    exact = sorted(((float(ivf.vectors[i] @ q), -int(i)) for i in allowed), reverse=True)[:50]
    got = retriever.dense(q, 50, allowed)
    assert [pid for pid, _ in got] == [-i for _, i in exact]
    assert np.allclose([s for _, s in got], [s for s, _ in exact], atol=1e-6)


def test_shards_can_be_ivf_and_reindexing_one_is_refused(tiny, tmp_path, fake_encoder):
    from qa.store import reindexed

    src, _ = tiny
    build([src], Settings(index_dir=tmp_path / "sh"), encoder=fake_encoder, progress=False, shards=2,
          index_type="ivf")
    shard = load(next((tmp_path / "sh" / "builds").iterdir()) / "shard-000")
    assert shard.manifest.index_type == "IVF" and shard.manifest.ivf == {"nlist": 1, "nprobe": 1}
    with pytest.raises(UserError, match="build it again with --index-type"):
        reindexed(shard, tmp_path / "copy", "ivf")
