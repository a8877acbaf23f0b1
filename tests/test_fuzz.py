"""Hostile input, property-based (hypothesis): files that break parsers, questions that break code.

Ingestion: random bytes, random and deeply nested HTML, broken JSON lines and enormous lines are
each ingested or skipped with a warning naming them, and the seed articles beside them come out
exactly as they do alone. Questions: any unicode, control characters, 1 MB, any k -> an answer or
a UserError, never another exception, and the answer always cites real offsets.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qa.engine import MAX_K
from qa.ingest import ingest
from qa.retrieve import Filters
from qa.settings import RETRIEVERS, Settings, UserError

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"

# ---------------------------------------------------------------- hostile files

TAGS = ["div", "p", "span", "article", "main", "table", "tr", "td", "ul", "li", "script", "style",
        "b", "i", "a", "h1", "section", "nav", "footer", "iframe", "svg", "!--", "?xml", "![CDATA["]
words = st.text(st.characters(codec="utf-8"), max_size=40)


@st.composite
def html_tree(draw, depth: int = 0) -> str:
    """Random, often broken HTML: unclosed and mismatched tags, odd attributes, entities."""
    parts = []
    for _ in range(draw(st.integers(0, 4 if depth < 4 else 0))):
        kind = draw(st.sampled_from(["text", "tag", "tag", "junk"]))
        if kind == "text":
            parts.append(draw(words))
        elif kind == "junk":
            parts.append(draw(st.sampled_from(["<", ">", "&", "&#0;", "&#xD800;", "&bogus;", "</",
                                               "<!", "\x00", "\ufeff", "<<>>", "]]>", "-->"])))
        else:
            tag = draw(st.sampled_from(TAGS))
            attr = draw(st.sampled_from(["", ' class="x"', " onerror=alert(1)", ' style="',
                                         " a=" + "b" * 50, ' lang="zh"']))
            inner = draw(html_tree(depth + 1))
            close = draw(st.sampled_from([f"</{tag}>", "", "</div>", "</html>"]))
            parts.append(f"<{tag}{attr}>{inner}{close}")
    return "".join(parts)


def deep_html(depth: int, tag: str) -> str:
    return ("<html><body>" + f"<{tag}>" * depth + "A sentence of text inside many tags, "
            "long enough to count as an article paragraph." + f"</{tag}>" * depth + "</body></html>")


@st.composite
def hostile_file(draw) -> tuple[str, bytes]:
    """(suffix, content) of a file a crawler could drop in the corpus folder."""
    kind = draw(st.sampled_from(["bytes", "html", "deep", "line", "jsonl", "text"]))
    if kind == "bytes":
        return draw(st.sampled_from([".txt", ".md", ".html", ".jsonl"])), draw(st.binary(max_size=4000))
    if kind == "html":
        head = draw(st.sampled_from(["", "<!DOCTYPE html><html><head><title>T</title></head><body>",
                                     "<?xml version='1.0' encoding='latin-1'?>"]))
        return ".html", (head + draw(html_tree())).encode("utf-8", "surrogatepass")
    if kind == "deep":
        depth = draw(st.sampled_from([300, 3_000, 30_000, 100_000]))
        return draw(st.sampled_from([".html", ".htm"])), deep_html(depth, draw(st.sampled_from(
            ["div", "span", "b", "table"]))).encode()
    if kind == "line":  # one enormous line, with or without spaces or a newline
        unit = draw(st.sampled_from(["word ", "a", "長", "x,", " ", "\t", "Tell me. "]))
        size = draw(st.sampled_from([10_000, 200_000, 2_000_000]))
        return draw(st.sampled_from([".txt", ".md"])), ("Title\n" + unit * (size // len(unit))).encode()
    if kind == "jsonl":
        lines = draw(st.lists(st.one_of(
            st.just("[" * 100_000), st.just('{"_id": "x", "text": ' + "[" * 5000 + "]" * 5000 + "}"),
            st.just('{"_id": null}'), st.just('"just a string"'), st.just("{" * 10),
            st.builds(lambda i, t: json.dumps({"_id": i, "text": t}), st.text(max_size=8),
                      st.text(max_size=200)),
            st.builds(lambda v: json.dumps({"_id": "v", "text": v}),
                      st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=3)))),
            max_size=5))
        return ".jsonl", "\n".join(lines).encode("utf-8", "surrogatepass")
    text = draw(st.text(st.characters(codec="utf-8", exclude_categories=[]), max_size=3000))
    return draw(st.sampled_from([".txt", ".md"])), text.encode("utf-8", "surrogatepass")


def article_fields(articles) -> dict:
    return {a.doc_id: (a.text, a.body, a.title, a.date, a.source, a.author) for a in articles}


@pytest.fixture(scope="module")
def clean_seeds() -> dict:
    return article_fields(ingest([SEEDS]).articles)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.data_too_large])
@given(files=st.lists(hostile_file(), min_size=1, max_size=3))
@example(files=[(".jsonl", b"[" * 100_000)])
@example(files=[(".html", deep_html(100_000, "div").encode())])
@example(files=[(".txt", b"Title\n" + b"word " * 400_000)])
@example(files=[(".html", b"\x00\x01\x02<html>" * 1000)])
def test_hostile_files_are_ingested_or_skipped_and_the_rest_is_unaffected(files, clean_seeds,
                                                                           tmp_path_factory, caplog):
    folder = tmp_path_factory.mktemp("corpus")
    shutil.copytree(SEEDS, folder, dirs_exist_ok=True)
    names = []
    for n, (suffix, content) in enumerate(files):
        name = f"zz_hostile_{n}{suffix}"
        (folder / name).write_bytes(content)
        names.append(name)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        report = ingest([folder])
    seeds = {a.doc_id: a for a in report.articles if "zz_hostile" not in a.path}
    assert article_fields(seeds.values()) == clean_seeds
    skipped = " ".join(where for where, _ in report.skipped)
    ingested = {a.path.split(":")[0] for a in report.articles}
    for name in names:
        path = str(folder / name)
        ok = path in ingested or path in skipped or bool(report.duplicates)
        assert ok, f"{name} was neither ingested nor skipped"
        if path in skipped and path not in ingested:
            assert name in caplog.text, f"no warning names {name}"
    for a in report.articles:  # whatever was ingested keeps the offsets contract
        assert all(0 <= s < e <= len(a.text) for s, e in a.body)


@pytest.mark.slow
def test_build_with_hostile_files_answers_like_the_seeds_alone(tmp_path, encoder, seeds_index):
    """End to end with the real model: hostile files beside the seeds change nothing for them."""
    from qa.build import build
    from qa.engine import QA
    from qa.store import load

    folder = tmp_path / "corpus"
    shutil.copytree(SEEDS, folder)
    (folder / "zz_deep.html").write_text(deep_html(100_000, "div"))
    (folder / "zz_bytes.txt").write_bytes(bytes(range(256)) * 20)
    (folder / "zz_line.txt").write_text("A very long line\n" + "Foshan word " * 2_000)
    (folder / "zz_nested.jsonl").write_text("[" * 100_000 + "\n" + '{"_id": 3, "text": 4}\n')
    (folder / "zz_unicode.md").write_text("Ünïcödé \u202e title\n\n" + "\u0000\u200b\ud7ff 混合 text. " * 300)
    summary = build([folder], Settings(index_dir=tmp_path / "index"), encoder=encoder, progress=False)
    skipped = {Path(where.split(":")[0]).name for where, _ in summary.skipped}
    assert {"zz_deep.html", "zz_bytes.txt", "zz_nested.jsonl"} <= skipped
    hostile, clean = load(tmp_path / "index"), load(seeds_index)
    for doc_id in clean.articles:
        ours = [(p.char_start, p.char_end, p.text) for p in hostile.passages if p.doc_id == doc_id]
        theirs = [(p.char_start, p.char_end, p.text) for p in clean.passages if p.doc_id == doc_id]
        assert ours == theirs, doc_id
    qa = QA(hostile, encoder, Settings(index_dir=tmp_path / "index"))
    out = qa.to_json(qa.ask("When was Dongguan's application approved?"))
    assert out["answer"] and out["answer"]["doc_id"].startswith("003_")


# ---------------------------------------------------------------- hostile questions

ks = st.one_of(st.sampled_from([0, -1, 1, 5, MAX_K, MAX_K + 1, 10**9, -(10**9), 2**63]),
               st.integers(-5, 2000), st.none(), st.booleans(), st.floats(allow_nan=True),
               st.text(max_size=3))
any_text = st.text(st.characters(codec="utf-8"), max_size=300)
control = st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Mn"]), max_size=50)


def check_result(engine, result) -> None:
    out = engine.to_json(result)
    json.dumps(out, ensure_ascii=False)  # always serializable
    for p in out["passages"]:
        article = engine.index.articles[p["doc_id"]]
        assert article.text[p["char_start"]:p["char_end"]] == p["text"]
    if out["answer"]:
        a = out["answer"]
        assert engine.index.articles[a["doc_id"]].text[a["char_start"]:a["char_end"]] == a["text"]
    assert out["abstained"] == (out["answer"] is None)


dates = st.dates().map(str)


def _is_day(value) -> bool:
    """An independent reading of a valid date filter: empty, or an ISO day (a time may follow)."""
    if value is None or not value.strip():
        return True
    text = value.strip()
    try:
        datetime.date.fromisoformat(text[:10])
    except ValueError:
        return False
    return re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ].*)?", text) is not None


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(question=st.one_of(any_text, control, st.builds(lambda a, b: a + b, control, any_text)),
       k=ks, retriever=st.one_of(st.none(), st.sampled_from(RETRIEVERS), st.text(max_size=8)),
       history=st.one_of(st.none(), st.lists(any_text, max_size=3)),
       # Filters' fields as given (source, since, until, doc): the core checks the dates
       filters=st.one_of(st.none(), st.tuples(st.one_of(st.none(), any_text),
                                              st.one_of(st.none(), any_text, dates),
                                              st.one_of(st.none(), any_text, dates),
                                              st.one_of(st.none(), any_text))))
@example(question="When was Dongguan's application approved?", k=0, retriever=None, history=None,
         filters=None)
@example(question="x", k=-1, retriever=None, history=None, filters=None)
@example(question="x", k=10**9, retriever=None, history=None, filters=None)
@example(question="\x00\x01\x1b[31m\u202e\ufeff", k=5, retriever=None, history=None, filters=None)
@example(question="And Dongguan?", k=3, retriever="bm25", history=["\x00", "How many?"], filters=None)
def test_any_question_gets_an_answer_or_a_user_error(engine, question, k, retriever, history, filters):
    try:
        chosen = None if filters is None else Filters(*filters)
        result = engine.ask(question, k=k, retriever=retriever, filters=chosen, history=history)
    except UserError as e:
        assert str(e)  # a message that says what to do
        valid_k = k is None or (type(k) is int and 1 <= k <= MAX_K)
        bad_date = filters is not None and not all(_is_day(v) for v in filters[1:3])
        assert bad_date or not valid_k or not question.strip() or \
            retriever not in (None, *RETRIEVERS) or \
            not "".join(ch for ch in question if ch.isprintable()).strip(), str(e)
        return
    assert k is None or (type(k) is int and 1 <= k <= MAX_K)
    check_result(engine, result)


@pytest.mark.parametrize("question", [
    "When was Dongguan's application approved? " * 24_000,        # ~1 MB of words
    "a" * 1_000_000,                                              # ~1 MB, one word
    "長" * 1_000_000,                                             # 1 M CJK characters
    "\u0301" * 1_000_000,                                         # combining marks only
    "\x00" * 1_000_000 + "Foshan?",                               # NULs, then a question
    "e\u0301" * 500_000,
])
def test_one_megabyte_question(engine, question):
    import time

    started = time.perf_counter()
    try:
        result = engine.ask(question, k=3)
    except UserError as e:
        assert "empty" in str(e)
        return
    assert time.perf_counter() - started < 30
    check_result(engine, result)
    if len(question) > 10_000:
        assert any("only the first" in n for n in result.notices)
