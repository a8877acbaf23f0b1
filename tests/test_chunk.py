"""Chunking: exact offsets, sentence boundaries, sizes in the model's own word pieces."""

from __future__ import annotations

import pytest

from qa.chunk import chunk, sentences
from qa.settings import Settings
from qa.build import build
from qa.store import load
from qa.types import Article


def words(texts):
    return [len(t.split()) for t in texts]


def article(paragraphs: list[str], title: str = "") -> Article:
    text, body = "", []
    for p in paragraphs:
        text += "\n\n" if text else ""
        body.append((len(text), len(text) + len(p)))
        text += p
    return Article(doc_id="a", text=text, title=title, body=tuple(body))


@pytest.fixture(scope="module")
def index(seeds_index):
    return load(seeds_index)


def test_sentences_have_article_offsets():
    text = "Head\n\nOne is here. Two is there! 5,718 firms grew. Three?"
    spans = sentences(text, 6, len(text))
    assert [text[a:b] for a, b in spans] == ["One is here.", "Two is there!", "5,718 firms grew.",
                                             "Three?"]


@pytest.mark.parametrize("paragraph", ["", "   ", "\u00a0\u3000"])
def test_sentences_of_an_empty_paragraph(paragraph):
    assert sentences(paragraph, 0, len(paragraph)) == []


def test_every_passage_and_sentence_of_the_seeds_is_verbatim(index):
    assert index.passages
    for p in index.passages:
        text = index.articles[p.doc_id].text
        assert text[p.char_start:p.char_end] == p.text
        assert p.sentences and p.sentences[0][0] == p.char_start and p.sentences[-1][1] == p.char_end
        for (a, b), (c, d) in zip(p.sentences, p.sentences[1:]):
            assert a < b <= c < d
        for a, b in p.sentences:
            assert text[a:b] == text[a:b].strip() and text[a:b]


def test_passages_stay_inside_one_body_paragraph_and_cover_it(index):
    covered: dict[str, set] = {}
    for p in index.passages:
        body = index.articles[p.doc_id].body
        assert any(s <= p.char_start and p.char_end <= e for s, e in body), p.pid
        covered.setdefault(p.doc_id, set()).update(p.sentences)
    for doc_id, article in index.articles.items():
        every = {s for a, b in article.body for s in sentences(article.text, a, b)}
        assert covered[doc_id] == every, doc_id  # no sentence of the body is lost


def test_passage_ids_are_positions(index):
    assert [p.pid for p in index.passages] == list(range(len(index.passages)))


def test_seeds_passages_fit_the_model_with_title_context(index, encoder, model_tokenizer):
    """Counted with the real tokenizer on exactly what is embedded, special tokens included."""
    texts = [index.embed_text(p) for p in index.passages]
    assert all(t.startswith(index.articles[p.doc_id].title + ". ")
               for t, p in zip(texts, index.passages))
    sizes = [len(ids) for ids in model_tokenizer(texts)["input_ids"]]
    assert max(sizes) <= encoder.max_seq_length == 256
    # Filled up to about 128 word pieces, the length the model was trained on.
    bare = encoder.count_tokens([p.text for p in index.passages])
    assert max(bare) <= 128 + 60  # one long sentence may go over, never the model's limit


LONG_TITLE = "Council report on the harbour districts and the northern docks"


@pytest.fixture(scope="module")
def long_index(tmp_path_factory, encoder):
    """A real index of one article whose middle sentence is 600 words long."""
    src = tmp_path_factory.mktemp("long-src")
    sentence = ("The council " + " ".join(
        f"reviewed item{i} of the harbour plan" if i % 3 else f"approved budget line {i}"
        for i in range(112)) + " before closing the session.")
    assert len(sentence.split()) >= 600
    blob = "https://example.org/" + "x1-" * 800  # a 2,420-character "word"
    text = (f"{LONG_TITLE}\n2021-03-04\n\nThe harbour plan was debated for a week. {sentence} "
            f"Members then went home.\n\nThe data is at {blob} for anyone to read.\n")
    (src / "long.txt").write_text(text, encoding="utf-8")
    path = tmp_path_factory.mktemp("long-index")
    build([src], Settings(index_dir=path), encoder=encoder, progress=False)
    return load(path), text, sentence, blob


def test_a_600_word_sentence_is_cut_so_the_model_never_truncates(long_index, encoder,
                                                                model_tokenizer):
    index, text, sentence, blob = long_index
    assert index.articles["long"].title == LONG_TITLE
    sizes = [len(ids) for ids in model_tokenizer(
        [index.embed_text(p) for p in index.passages])["input_ids"]]
    assert max(sizes) <= encoder.max_seq_length
    assert len(index.passages) >= 8  # 600 words of ~1.3 pieces, cut near 128
    for p in index.passages:
        assert text[p.char_start:p.char_end] == p.text
    # Nothing is lost: every word of the article body is in some passage.
    start = text.index(sentence)
    for m in __import__("re").finditer(r"\S+", sentence):
        a, b = start + m.start(), start + m.end()
        assert any(p.char_start <= a and b <= p.char_end for p in index.passages), m.group()
    blob_start = text.index(blob)
    pieces = sorted((p.char_start, p.char_end) for p in index.passages
                    if p.char_start < blob_start + len(blob) and blob_start < p.char_end)
    assert pieces[0][0] <= blob_start and pieces[-1][1] >= blob_start + len(blob)
    for (a, b), (c, d) in zip(pieces, pieces[1:]):
        assert c <= b  # contiguous: no character of the long word dropped


def test_max_tokens_and_hard_limit_with_a_word_counter():
    a = article(["One two three. Four five six. Seven eight nine. Ten eleven twelve."])
    ps = chunk(a, words, max_tokens=6, hard_limit=8, overlap=0)
    assert [p.text for p in ps] == ["One two three. Four five six.",
                                    "Seven eight nine. Ten eleven twelve."]
    ps = chunk(a, words, max_tokens=3, hard_limit=3, overlap=0)
    assert len(ps) == 4


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_overlap_in_sentences(overlap):
    a = article([" ".join(f"Sentence number {i} here." for i in range(10))])
    ps = chunk(a, words, max_tokens=12, hard_limit=12, overlap=overlap)
    assert len(ps) > 1
    for p, q in zip(ps, ps[1:]):
        shared = set(p.sentences) & set(q.sentences)
        assert len(shared) == overlap
        assert q.sentences[-1][1] > p.sentences[-1][1]  # each passage brings new text
    assert ps[0].char_start == 0 and ps[-1].char_end == len(a.text)


def test_overlap_never_crosses_paragraphs():
    a = article(["First para one. First para two.", "Second para one. Second para two."])
    ps = chunk(a, words, max_tokens=3, hard_limit=4, overlap=1)
    assert [p.text for p in ps] == ["First para one.", "First para two.", "Second para one.",
                                    "Second para two."]


def test_long_sentence_is_cut_at_word_breaks_with_a_word_counter():
    a = article(["Short start. " + " ".join(f"w{i}" for i in range(25)) + ". Short end."])
    ps = chunk(a, words, max_tokens=10, hard_limit=12, overlap=0, first_pid=7)
    assert [p.pid for p in ps] == list(range(7, 7 + len(ps)))
    assert max(words([p.text for p in ps])) <= 12
    assert all(a.text[p.char_start:p.char_end] == p.text for p in ps)
    assert " ".join(p.text for p in ps).split() == a.text.split()


def test_an_article_without_body_has_no_passages():
    assert chunk(Article(doc_id="a", text="Only a title"), words, max_tokens=5, hard_limit=5,
                 overlap=1) == []
