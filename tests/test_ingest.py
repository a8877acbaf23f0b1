"""Ingestion: metadata of the seeds, boilerplate left out, every kind of bad input, formats."""

from __future__ import annotations

import json
import logging
import re

import pytest

from qa.ingest import IngestReport, decode, ingest, parse_text, read_file
from qa.settings import UserError

from conftest import SEEDS, write_files as _write

# What each seed says about itself, and nothing more: a field the article does not state is "".
SEED_META = {
    "000_8c8a69ca8b028a93": ("Foshan: National Innovation City", "2022-01-17T09:14", "", "Michelle"),
    "001_7c43ea33db645370": ("Major economic indicators of Foshan Hi-tech Zone surge in 2020",
                             "2021-05-18", "", ""),
    "002_123a76ea91cc5d8a": ('Foshan released "Innovation China" pilot city scheme',
                             "2021-10-12T09:32", "", "Ivy"),
    "003_fa579be8430ff762": ("Dongguan accredited national innovative city", "2022-01-17T09:41",
                             "Dongguan Today", ""),
    "004_e707e5471eeb2870": ("Foshan focuses on innovation, upgrading", "2018-10-23T07:55",
                             "China Daily", "Hao Nan"),
}

# Lines of the seeds that are not article body: crumbs, headlines (also repeated), date and
# credit lines, photo captions, e-mail, print edition, the trailing link lists.
BOILERPLATE = {
    "000_8c8a69ca8b028a93": ["Foshan: National Innovation City", "2022-01-17 09:14",
                             "Jihua Laboratory", "Author | Michelle", "Revisor | Jersey",
                             "Photo | Foshan Daily"],
    "001_7c43ea33db645370": ["Home>In Focus", "Updated: May 18,2021",
                             "Major economic indicators of Foshan Hi-tech Zone surge in 2020"],
    "002_123a76ea91cc5d8a": ["2021-10-12 09:32", "Bright Dream Robotics (Photo by Foshan Daily)",
                             "Author | Ivy", "Revisor | Jersey"],
    "003_fa579be8430ff762": ["Source : Dongguan Today", "Editor: Zheng Sihui"],
    "004_e707e5471eeb2870": ["China / News", "Foshan focuses on innovation, upgrading",
                             "By Hao Nan (China Daily) Updated: 2018-10-23 07:55",
                             "haonan@chinadaily.com.cn", "(China Daily 10/23/2018 page10)",
                             "Highlights", "Hot Topics"],
}
# Body paragraphs per seed: boilerplate removal must not eat the article either.
BODY_PARAGRAPHS = {"000_8c8a69ca8b028a93": 5, "001_7c43ea33db645370": 11,
                   "002_123a76ea91cc5d8a": 7, "003_fa579be8430ff762": 6,
                   "004_e707e5471eeb2870": 8}


@pytest.fixture(scope="module")
def seeds():
    return {a.doc_id: a for a in ingest([SEEDS]).articles}


def test_all_five_seeds_are_read_once(seeds):
    assert sorted(seeds) == sorted(SEED_META)


@pytest.mark.parametrize("doc_id", sorted(SEED_META))
def test_seed_metadata(seeds, doc_id):
    a = seeds[doc_id]
    assert (a.title, a.date, a.source, a.author) == SEED_META[doc_id]


@pytest.mark.parametrize("doc_id", sorted(SEED_META))
def test_seed_text_is_the_file_as_read(seeds, doc_id):
    assert seeds[doc_id].text == (SEEDS / f"{doc_id}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("doc_id", sorted(BOILERPLATE))
def test_seed_boilerplate_is_not_body(seeds, doc_id):
    a = seeds[doc_id]
    assert len(a.body) == BODY_PARAGRAPHS[doc_id]
    for line in BOILERPLATE[doc_id]:
        starts = [m.start() for m in re.finditer(re.escape(line), a.text)]
        assert starts, f"{line!r} is not in {doc_id}; the test data changed"
        for s in starts:
            e = s + len(line)
            assert not any(b0 < e and s < b1 for b0, b1 in a.body), (doc_id, line)


def test_no_boilerplate_in_any_passage_of_the_index(seeds_index):
    from qa.store import load

    index = load(seeds_index)
    for p in index.passages:
        text = index.articles[p.doc_id].text
        for line in BOILERPLATE[p.doc_id]:
            for m in re.finditer(re.escape(line), text):
                # A headline may be quoted inside a body sentence; its own line may not be indexed.
                own_line = text[:m.start()].endswith("\n") or m.start() == 0
                if own_line:
                    assert not (m.start() < p.char_end and p.char_start < m.end()), (p.pid, line)
        assert "@" not in p.text and "Highlights" not in p.text and "page10" not in p.text


@pytest.mark.parametrize("header, expected", [
    ("2022-01-17 09:14", {"date": "2022-01-17T09:14"}),
    ("Updated: May 18,2021", {"date": "2021-05-18"}),
    ("By Hao Nan (China Daily) Updated: 2018-10-23 07:55",
     {"date": "2018-10-23T07:55", "author": "Hao Nan", "source": "China Daily"}),
    ("2022-01-17 09:41\u2003\u2003Source : Dongguan Today",
     {"date": "2022-01-17T09:41", "source": "Dongguan Today"}),
    ("Author | Michelle", {"author": "Michelle"}),
    ("Editor: Zheng Sihui", {}),  # an editor is not the author
    ("Photo | Foshan Daily", {}),  # nor is a photo credit the source
    ("", {}),  # no header: nothing is guessed
])
def test_header_lines(header, expected):
    text = f"A headline\n{header}\n\nThe council approved the plan on Monday, officials said.\n"
    a = parse_text("x", text)
    got = {k: v for k, v in a.meta().items() if k in ("date", "author", "source") and v}
    assert got == expected
    assert a.title == "A headline"
    assert [text[s:e] for s, e in a.body] == [
        "The council approved the plan on Monday, officials said."]


ARTICLE = ("Bridge opens next spring\n2021-03-04\n\nThe city council said on Monday that the new "
           "bridge over the river will open next spring. It will cost 40 million dollars.\n\n"
           "Officials expect heavy traffic in the first weeks.\n")


def test_cp1252_file_is_decoded_with_a_warning(tmp_path, caplog):
    text = ("Caf\u00e9 owners \u201cwelcome\u201d the new rules\n\nThe owners of the caf\u00e9 "
            "in Se\u00f1or Garc\u00eda\u2019s street said they \u201cwelcome\u201d the new opening "
            "hours \u2013 which begin in May.\n")
    _write(tmp_path, {"legacy.txt": text.encode("cp1252")})
    with caplog.at_level(logging.WARNING):
        report = ingest([tmp_path])
    [a] = report.articles
    assert a.text == text  # the curly quotes, é and ñ come back exactly
    assert a.title == "Caf\u00e9 owners \u201cwelcome\u201d the new rules"
    assert any("legacy.txt" in r.getMessage() and "not UTF-8" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("name, data, why", [
    ("empty.txt", b"", "empty"),
    ("blank.md", b" \n\n\t\n", "empty"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "binary"),
    ("noise.txt", bytes([0x81, 0x8d, 0x8f, 0x90, 0x9d, 0xfe, 0xff, 0xc3]) * 64, "not UTF-8"),
    ("crumbs.txt", "Home>News\n\nHighlights\nHot Topics\n", "no article text"),
])
def test_bad_file_is_skipped_with_a_warning_naming_it(tmp_path, caplog, name, data, why):
    _write(tmp_path, {"good.txt": ARTICLE, name: data})
    with caplog.at_level(logging.WARNING):
        report = ingest([tmp_path])
    assert [a.doc_id for a in report.articles] == ["good"]
    [(where, reason)] = report.skipped
    assert where.endswith(name) and why in reason
    assert any(name in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_same_article_twice_is_indexed_once_and_reported(tmp_path, caplog):
    # The copy differs only in line endings and trailing blanks: still the same article.
    _write(tmp_path, {"a.txt": ARTICLE, "copies/a-again.txt": ARTICLE.replace("\n", "\r\n") + "\n\n"})
    with caplog.at_level(logging.WARNING):
        report = ingest([tmp_path])
    assert [a.doc_id for a in report.articles] == ["a"]
    assert report.duplicates == [("copies/a-again", "a")]
    assert any("a-again.txt" in r.getMessage() and "duplicate" in r.getMessage()
               for r in caplog.records)


def test_two_files_with_one_doc_id_are_both_kept(tmp_path, caplog):
    _write(tmp_path, {"story.md": "# Markdown story\n\nThe school board approved a budget of "
                                  "12 million dollars for next year.\n",
                      "story.txt": ARTICLE})
    with caplog.at_level(logging.WARNING):
        report = ingest([tmp_path])
    assert sorted(a.doc_id for a in report.articles) == ["story", "story.txt"]
    assert any("story.txt" in r.getMessage() for r in caplog.records)


def test_markdown_and_nested_folders(tmp_path):
    _write(tmp_path, {"2021/may/foshan.md": "# Foshan opens a lab\n\n*Updated: May 18, 2021*\n\n"
                                            "Foshan opened a new robotics laboratory on Monday, "
                                            "the city said.\n",
                      "top.txt": ARTICLE, ".hidden/skip.txt": ARTICLE + "x",
                      "notes.pdf": b"%PDF-1.4"})
    report = ingest([tmp_path])
    by_id = {a.doc_id: a for a in report.articles}
    assert sorted(by_id) == ["2021/may/foshan", "top"]
    md = by_id["2021/may/foshan"]
    assert md.title == "Foshan opens a lab"
    assert [md.text[s:e] for s, e in md.body] == [
        "Foshan opened a new robotics laboratory on Monday, the city said."]
    assert report.files == 2


def test_a_single_file_can_be_a_source(tmp_path):
    _write(tmp_path, {"one.txt": ARTICLE})
    [a] = ingest([tmp_path / "one.txt"]).articles
    assert a.doc_id == "one" and a.date == "2021-03-04" and a.title == "Bridge opens next spring"


HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Harbour tunnel opens to traffic - Riverside Gazette</title>
<meta property="og:title" content="Harbour tunnel opens to traffic">
<meta property="og:site_name" content="Riverside Gazette">
<meta name="author" content="Jane Porter">
<meta property="article:published_time" content="2023-06-14T08:30:00+00:00">
</head><body>
<header><nav><a href="/">Home</a> &gt; <a href="/city">City</a> <a href="/sport">Sport</a>
<a href="/login">Log in</a></nav></header>
<main><article>
<h1>Harbour tunnel opens to traffic</h1>
<p>The new harbour tunnel opened to traffic on Wednesday morning after six years of
construction, the city&#8217;s transport department said.</p>
<p>The tunnel, which cost 1.2 billion dollars, links the northern docks with the business
district and is expected to carry 40,000 vehicles a day.</p>
<p>Mayor Alan Reyes said the project would cut commuting times by up to twenty minutes for
residents of the northern suburbs.</p>
<p>Engineers had to bore through layers of soft clay beneath the harbour floor, which delayed
the work by almost two years.</p>
</article></main>
<aside><h3>Most read</h3><ul><li><a href="/a">Council votes on budget</a></li>
<li><a href="/b">Storm warning for weekend</a></li></ul></aside>
<footer><p>Copyright 2023 Riverside Gazette. All rights reserved.</p>
<p>Contact: news@riverside.example</p></footer>
</body></html>
"""


@pytest.mark.parametrize("suffix", [".html", ".htm"])
def test_html_page_via_trafilatura(tmp_path, suffix):
    _write(tmp_path, {f"news/tunnel{suffix}": HTML})
    [a] = ingest([tmp_path]).articles
    assert a.doc_id == "news/tunnel"
    assert (a.title, a.date, a.source, a.author) == (
        "Harbour tunnel opens to traffic", "2023-06-14", "Riverside Gazette", "Jane Porter")
    body = [a.text[s:e] for s, e in a.body]
    assert len(body) == 4
    assert body[0].startswith("The new harbour tunnel opened") and "city\u2019s" in body[0]
    assert body[3].endswith("almost two years.")
    joined = " ".join(body)
    for junk in ("Log in", "Most read", "Storm warning", "Copyright", "news@riverside"):
        assert junk not in joined


def test_beir_corpus_jsonl_with_a_malformed_line(tmp_path, caplog):
    rows = [json.dumps({"_id": "d1", "title": "Tunnel", "text": "The tunnel opened on Monday."}),
            '{"_id": "d2", "title": "broken", "text": "no closing brace"',
            json.dumps({"_id": "d3", "title": "", "text": "Second doc.\nWith two lines."}),
            json.dumps({"_id": "d4", "title": "no text"}),
            ""]
    _write(tmp_path, {"corpus.jsonl": "\n".join(rows) + "\n"})
    with caplog.at_level(logging.WARNING):
        report = ingest([tmp_path])
    by_id = {a.doc_id: a for a in report.articles}
    assert sorted(by_id) == ["d1", "d3"]
    assert by_id["d1"].title == "Tunnel" and by_id["d1"].text == "The tunnel opened on Monday."
    assert [by_id["d3"].text[s:e] for s, e in by_id["d3"].body] == ["Second doc.", "With two lines."]
    assert [where.rsplit(":", 1)[1] for where, _ in report.skipped] == ["2", "4"]
    assert any("corpus.jsonl:2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("make", ["missing", "empty", "only-unsupported", "only-bad"])
def test_no_articles_is_an_error_that_says_what_to_do(tmp_path, make):
    source = tmp_path / "src"
    if make != "missing":
        source.mkdir()
    if make == "only-unsupported":
        _write(source, {"a.pdf": b"%PDF", "b.docx": b"PK"})
    if make == "only-bad":
        _write(source, {"a.txt": b"", "b.txt": b"\x00\x01"})
    with pytest.raises(UserError) as e:
        ingest([source])
    assert str(source) in str(e.value)
    assert "folder" in str(e.value) or "qa build" in str(e.value)


def test_no_sources_is_an_error():
    with pytest.raises(UserError, match="qa build"):
        ingest([])


def test_decode_prefers_utf8_and_strips_a_bom():
    report = IngestReport()
    assert decode("\ufeffCaf\u00e9".encode("utf-8"), "x", report) == "Caf\u00e9"
    assert report.skipped == []


def test_a_missing_dependency_is_not_reported_as_unreadable_articles(tmp_path, monkeypatch):
    """With dateparser gone, the build must say so, not "no readable articles"."""
    import sys

    from qa.ingest import ingest

    (tmp_path / "a.txt").write_text("A title\nMay 18, 2021\n\nSome body text of the article.\n")
    monkeypatch.setitem(sys.modules, "dateparser", None)  # `import dateparser` raises ImportError
    with pytest.raises(ImportError):
        ingest([tmp_path])


def messy_sources(folder) -> None:
    """A folder of every kind of article and of bad input that ingestion decides about: HTML,
    text and markdown, a doc_id two files give, a copy, bad files, a corpus.jsonl with a
    malformed line and a doc_id already used (qa.ingest.ingest's report must not depend on how
    the files were read)."""
    rows = [json.dumps({"_id": "d1", "title": "Tunnel", "text": "The tunnel opened on Monday."}),
            '{"_id": "d2", "title": "broken"',
            json.dumps({"_id": "story", "title": "Clash", "text": "A doc_id the files use."})]
    _write(folder, {"a.txt": ARTICLE, "copies/a-again.txt": ARTICLE.replace("\n", "\r\n"),
                    "news/tunnel.html": HTML, "story.md": "# Markdown story\n\nThe school "
                    "board approved a budget of 12 million dollars for next year.\n",
                    "story.txt": ARTICLE.replace("40 million", "45 million"), "empty.txt": b"",
                    "image.txt": b"\x89PNG\r\n\x1a\n\x00" + bytes(range(256)) * 4,
                    "z/corpus.jsonl": "\n".join(rows) + "\n"})


def test_files_read_in_other_processes_give_the_same_report(tmp_path, caplog):
    """ingest with a reader that parses every file in another process (as the Ray build does on
    the cluster) keeps, renames, skips and de-duplicates exactly as reading here, and says so
    here."""
    from concurrent.futures import ProcessPoolExecutor

    messy_sources(tmp_path)
    with caplog.at_level(logging.WARNING):
        here = ingest([tmp_path])
    said_here = [r.getMessage() for r in caplog.records]
    caplog.clear()
    with ProcessPoolExecutor(2) as pool, caplog.at_level(logging.WARNING):
        elsewhere = ingest([tmp_path], read=lambda files: list(pool.map(read_file, *zip(*files))))
    assert [r.getMessage() for r in caplog.records] == said_here
    assert elsewhere == here
    assert [a.doc_id for a in here.articles] == ["a", "news/tunnel", "story", "story.txt", "d1"]
    assert here.duplicates == [("copies/a-again", "a")]
    assert [(where.removeprefix(f"{tmp_path}/"), why.split(" (")[0].split(",")[0])
            for where, why in here.skipped] == [
        ("empty.txt", "empty file"), ("image.txt", "binary file"),
        ("z/corpus.jsonl:2", "not a corpus line with _id and text"),
        ("z/corpus.jsonl:3", f"doc_id 'story' is already used by {tmp_path / 'story.md'}; rename "
                             f"one of them")]
