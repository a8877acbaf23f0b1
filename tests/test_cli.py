"""The `qa` command, run as a user runs it: exit codes, messages, JSON, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SEEDS

QA = [sys.executable, "-m", "qa.cli"]
ARTICLE = ("Bridge opens next spring\n2021-03-04\n\nThe city council said on Monday that the new "
           "bridge over the river will open next spring. It will cost 40 million dollars.\n\n"
           "Officials expect heavy traffic in the first weeks.\n")


def qa(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("QA_MODEL", "QA_INDEX")}
    full_env.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([*QA, *args], capture_output=True, text=True, cwd=ROOT, env=full_env,
                          timeout=timeout)


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


def test_help_is_fast_and_imports_no_model():
    started = time.perf_counter()
    r = qa("--help")
    assert r.returncode == 0 and "build" in r.stdout and "ask" in r.stdout
    assert time.perf_counter() - started < 5
    probe = subprocess.run([sys.executable, "-c", "import sys, qa.cli; qa.cli._parser(); "
                            "print(sorted(m for m in ('torch', 'sentence_transformers', 'faiss', "
                            "'gradio', 'transformers') if m in sys.modules))"],
                           capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr


def test_no_command_prints_usage():
    r = qa()
    assert r.returncode == 2 and "usage" in r.stdout.lower()


def test_ask_json_schema_with_k_larger_than_the_corpus(seeds_index):
    from qa.store import load

    n = len(load(seeds_index).passages)
    r = qa("ask", "When was Dongguan's application approved?", "--index", str(seeds_index),
           "--json", "--k", "500")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["question"] == "When was Dongguan's application approved?"
    assert [p["rank"] for p in out["passages"]] == list(range(1, n + 1))  # every passage
    assert len({(p["doc_id"], p["char_start"]) for p in out["passages"]}) == n
    seeds = {p.stem: p.read_text(encoding="utf-8") for p in SEEDS.glob("*.txt")}
    for p in out["passages"]:
        assert {"rank", "score", "doc_id", "title", "date", "source", "char_start", "char_end",
                "text"} <= set(p)
        assert isinstance(p["score"], float) and isinstance(p["char_start"], int)
        assert seeds[p["doc_id"]][p["char_start"]:p["char_end"]] == p["text"]
    top = out["passages"][0]
    assert (top["doc_id"], top["title"], top["date"], top["source"]) == (
        "003_fa579be8430ff762", "Dongguan accredited national innovative city",
        "2022-01-17T09:41", "Dongguan Today")
    assert "April 2018" in top["text"]
    assert [p["score"] for p in out["passages"]] == sorted(
        (p["score"] for p in out["passages"]), reverse=True)


@pytest.mark.parametrize("question", ["", "   ", "\t\n"])
def test_ask_an_empty_question_exits_2(seeds_index, question):
    r = qa("ask", question, "--index", str(seeds_index))
    assert r.returncode == 2
    assert "question is empty" in r.stderr and r.stdout == ""
    no_traceback(r)


def test_ask_a_very_long_question_gets_a_notice(seeds_index):
    question = "When was Dongguan's application approved? " + "and more " * 1500
    r = qa("ask", question, "--index", str(seeds_index), "--json", "--k", "2")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    out = json.loads(r.stdout)
    assert "10,000" in " ".join(out["notices"]) and len(out["passages"]) == 2


def test_ask_warns_when_the_index_is_stale(tmp_path, encoder):
    from qa.settings import Settings
    from qa.build import build

    src = tmp_path / "src"
    src.mkdir()
    (src / "bridge.txt").write_text(ARTICLE)
    build([src], Settings(index_dir=tmp_path / "index"), encoder=encoder, progress=False)
    (src / "bridge.txt").write_text(ARTICLE.replace("40 million", "45 million"))
    r = qa("ask", "How much will the bridge cost?", "--index", str(tmp_path / "index"))
    assert r.returncode == 0, r.stderr
    assert "older than its sources" in r.stderr and "qa build" in r.stderr
    assert "40 million dollars" in r.stdout  # still answered, from the old index


def test_ask_without_an_index_says_how_to_build_one(tmp_path):
    r = qa("ask", "Anything?", "--index", str(tmp_path / "none"))
    assert r.returncode == 1 and "qa build" in r.stderr
    no_traceback(r)


def test_ask_with_another_model_is_refused(seeds_index):
    for r in (qa("ask", "Anything?", "--index", str(seeds_index), "--model", "no-such-model-xyz"),
              qa("ask", "Anything?", "--index", str(seeds_index),
                 env={"QA_MODEL": "no-such-model-xyz"})):
        assert r.returncode == 1
        assert "all-MiniLM-L6-v2" in r.stderr and "no-such-model-xyz" in r.stderr
        assert "qa build" in r.stderr
        no_traceback(r)


def test_build_summary_and_bad_inputs(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "bridge.txt").write_text(ARTICLE)
    (src / "sub" / "copy.txt").write_text(ARTICLE)
    (src / "legacy.txt").write_bytes("Caf\u00e9 \u201crules\u201d change\n\nThe caf\u00e9 owners "
                                     "said the \u201cnew\u201d rules start in May.\n".encode("cp1252"))
    (src / "empty.md").write_text("")
    (src / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    index = tmp_path / "index"
    r = qa("build", str(src), "--index", str(index))
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert re.fullmatch(rf"built {re.escape(str(index))}: 2 documents, \d+ passages \(Flat\), "
                        rf"2 skipped, 1 duplicates, \d+\.\d s\n", r.stdout), r.stdout
    for name in ("legacy.txt", "empty.md", "image.txt", "copy.txt"):
        assert name in r.stderr
    assert "Batches" in r.stderr  # the progress bar while embedding
    assert "DEBUG" not in r.stderr
    ask = qa("ask", "When do the new cafe rules start?", "--index", str(index), "--json")
    assert json.loads(ask.stdout)["passages"][0]["doc_id"] == "legacy"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_build_from_nothing_fails_and_writes_no_index(tmp_path, make):
    source = tmp_path / "src"
    if make == "empty":
        source.mkdir()
    index = tmp_path / "index"
    r = qa("build", str(source), "--index", str(index))
    assert r.returncode == 1 and str(source) in r.stderr and "error:" in r.stderr
    no_traceback(r)
    assert not index.exists()


def test_build_from_nothing_keeps_an_existing_index(tmp_path, seeds_index):
    index = tmp_path / "index"
    shutil.copytree(seeds_index, index)
    before = sorted(p.relative_to(index).as_posix() for p in index.rglob("*"))
    (tmp_path / "empty").mkdir()
    r = qa("build", str(tmp_path / "empty"), "--index", str(index))
    assert r.returncode == 1
    assert sorted(p.relative_to(index).as_posix() for p in index.rglob("*")) == before


def test_build_with_a_model_that_does_not_exist(tmp_path):
    """QA_MODEL here; `--model` goes the same way, and is tried on `qa ask` above."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "bridge.txt").write_text(ARTICLE)
    index = tmp_path / "index"
    r = qa("build", str(src), "--index", str(index), env={"QA_MODEL": "no-such-model-xyz"})
    assert r.returncode == 1
    assert "no-such-model-xyz" in r.stderr and "--model" in r.stderr
    no_traceback(r)
    assert not index.exists()


@pytest.mark.parametrize("args", [["--max-tokens", "8"], ["--overlap", "-1"]])
def test_build_refuses_bad_chunk_settings(tmp_path, args):
    r = qa("build", str(SEEDS), "--index", str(tmp_path / "index"), *args)
    assert r.returncode == 1 and "--max-tokens" in r.stderr
    no_traceback(r)


@pytest.mark.slow
@pytest.mark.parametrize("flags,said", [
    (["--source", "Nowhere Times"], "sources here: "),
    (["--doc", "nope"], "doc ids here: 000_8c8a69ca8b028a93"),
    (["--until", "2000-01-01"], "articles here are dated"),
])
def test_a_filter_that_matches_nothing_says_so_and_lists_what_exists(seeds_index, flags, said):
    r = qa("ask", "When was Dongguan approved?", "--index", str(seeds_index), *flags)
    assert r.returncode == 1 and said in r.stderr and r.stdout == "", r.stderr


def test_a_bad_k_exits_2_before_anything_loads(tmp_path):
    r = qa("ask", "When?", "--index", str(tmp_path / "none"), "--k", "0")
    assert r.returncode == 2 and "k must be a whole number" in r.stderr


@pytest.mark.slow
def test_nprobe_is_refused_where_it_cannot_apply_and_names_the_fix(seeds_index, tmp_path):
    """--nprobe is for IVF indexes, from 1 to their lists; QA_NPROBE must be a number."""
    r = qa("ask", "When was Dongguan approved?", "--index", str(seeds_index), "--nprobe", "4")
    assert r.returncode == 2 and "is a Flat index" in r.stderr and "--index-type ivf" in r.stderr
    no_traceback(r)
    ivf = tmp_path / "ivf"
    assert qa("build", "--index", str(ivf), "--index-type", "ivf", "--quiet").returncode == 0
    for bad in ("0", "2"):  # 40 passages: one list
        r = qa("ask", "When was Dongguan approved?", "--index", str(ivf), "--nprobe", bad)
        assert r.returncode == 2 and "from 1 to 1" in r.stderr and f"got {bad}" in r.stderr
    r = qa("ask", "When was Dongguan approved?", "--index", str(ivf), env={"QA_NPROBE": "many"})
    assert r.returncode == 2 and "QA_NPROBE must be a whole number" in r.stderr
    no_traceback(r)
    r = qa("ask", "When was Dongguan approved?", "--index", str(ivf), "--nprobe", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["passages"], r.stderr
    r = qa("ask", "When?", "--ray", "127.0.0.1:1", "--nprobe", "8")
    assert r.returncode == 2 and "qa serve --nprobe" in r.stderr
