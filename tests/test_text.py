"""Words: index and query tokens agree, and the picker's stems are the BM25 tokens less question words."""

from __future__ import annotations

import pytest

from qa.store import load
from qa.text import QUESTION_WORDS, english_stemmer, query_tokens, stems, stopwords, tokenize


def test_stems_drop_stop_and_question_words():
    assert stems("How many companies were there?") == ["compani"]
    assert stems("?!") == [] and stems("") == []


@pytest.mark.parametrize("text", [
    "How many high-tech enterprises did Foshan have in 2020?",
    "Dongguan's application was APPROVED in April 2018, the ministry said.",
    "Zhuhai–Macao: 87.6 billion yuan, 17.16 percent, café naïve résumé",
    "", "?!", "the of and a",
])
def test_index_and_query_tokens_agree(text):
    """What `qa build` indexes for a text is what a question with the same words looks up."""
    tokenized = tokenize([text])
    words = {i: w for w, i in tokenized.vocab.items()}
    indexed = [words[i] for i in tokenized.ids[0]]
    assert [w for w in indexed if w] == query_tokens(text)


@pytest.mark.parametrize("text", ["How many companies were there?",
                                  "When was Dongguan's application approved?",
                                  "How long did the Foshan expo last, and how much did it cost?"])
def test_picker_stems_are_the_query_tokens_without_question_words(text):
    question_stems = set(english_stemmer().stemWords(sorted(QUESTION_WORDS)))
    assert stems(text) == [t for t in query_tokens(text) if t not in question_stems]
    assert stems(text) != query_tokens(text) or not question_stems & set(query_tokens(text))


def test_stop_words_are_bm25s_english_list():
    from bm25s.stopwords import STOPWORDS_EN

    assert stopwords() == frozenset(STOPWORDS_EN) and "the" in stopwords()


def test_the_seed_index_vocabulary_is_made_of_query_tokens(seeds_index):
    """Every passage's indexed words, read back from the saved index, are its query tokens."""
    index = load(seeds_index)
    vocab = set(index.bm25.vocab_dict)
    for p in index.passages[:10]:
        text = index.embed_text(p)
        assert set(query_tokens(text)) <= vocab, p.pid
