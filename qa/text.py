"""Words: the one BM25 tokenizer, Snowball stemmer and stop-word list of the product.

The index (`qa.build`), the query (`qa.retrieve`), the answer picker (`qa.answer`) and the page
(`qa.web`) all take their words from here, so index and query tokens cannot drift apart.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

# The words bm25s indexes: two or more word characters (bm25s' default token pattern).
TOKEN = re.compile(r"(?u)\b\w\w+\b")
# Question words carry no topic: the picker drops them besides the English stop words.
QUESTION_WORDS = frozenset("""what which who whom whose when where why how many much long
did does do was were is are""".split())


def bm25s():
    """bm25s, imported with its logger (set to DEBUG on import) back at WARNING."""
    import bm25s as module

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return module


@lru_cache(maxsize=1)
def english_stemmer():
    """The Snowball English stemmer (PyStemmer)."""
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """bm25s' English stop words, the list BM25 drops at index and query time."""
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(texts: list[str]):
    """BM25 tokens of many texts, for indexing: lower-cased words, English stop words out,
    Snowball-stemmed.

    Returns:
        bm25s.tokenization.Tokenized (token ids and their vocabulary).
    """
    return bm25s().tokenize(texts, stopwords="en", stemmer=english_stemmer(), show_progress=False)


def query_tokens(text: str) -> list[str]:
    """BM25 tokens of one question, the same words `tokenize` indexes, in order.

    >>> query_tokens("How many high-tech companies were there?")
    ['how', 'mani', 'high', 'tech', 'compani', 'were']
    """
    return bm25s().tokenize([text], stopwords="en", stemmer=english_stemmer(),
                            return_ids=False, show_progress=False)[0]


def stems(text: str) -> list[str]:
    """Lower-cased, stop-word-free, Snowball-stemmed words, in order: the BM25 tokens without
    question words. The answer picker and the page compare questions and sentences with these.

    >>> stems("How many high-tech companies were there?")
    ['high', 'tech', 'compani']
    """
    stop = picker_stopwords()
    return english_stemmer().stemWords([w for w in TOKEN.findall(text.lower()) if w not in stop])


@lru_cache(maxsize=1)
def picker_stopwords() -> frozenset[str]:
    """The words `stems` leaves out: English stop words and question words."""
    return stopwords() | QUESTION_WORDS
