"""Article -> Passages: sentence-aware chunks sized in the model's word pieces, exact offsets."""

from __future__ import annotations

import re
from typing import Callable, Sequence

from .types import Article, Passage, Span

TokenCounter = Callable[[Sequence[str]], list[int]]

# blingfire does not split before a sentence that opens with a number ("... spending. 5,718
# high-tech enterprises ..."); a lower-case word, a full stop (or ! ?) and a digit is one.
_DIGIT_START = re.compile(r"(?<=[a-z]{3}[.!?])\s+(?=\d)")


def sentences(text: str, start: int, end: int) -> list[Span]:
    """Sentence spans (article offsets) of the paragraph text[start:end].

    >>> sentences("One. Two is here.", 0, 17)
    [(0, 4), (5, 17)]
    """
    import blingfire

    paragraph = text[start:end]
    if not paragraph.strip():
        return []
    _, offsets = blingfire.text_to_sentences_and_offsets(paragraph)
    spans: list[Span] = []
    for a, b in offsets:
        piece = paragraph[a:b]
        cuts = [a] + [a + m.end() for m in _DIGIT_START.finditer(piece)] + [b]
        for s, e in zip(cuts, cuts[1:]):
            s, e = _strip(paragraph, s, e)
            if e > s:
                spans.append((start + s, start + e))
    return spans


def chunk(article: Article, count_tokens: TokenCounter, *, max_tokens: int, hard_limit: int,
          overlap: int, first_pid: int = 0) -> list[Passage]:
    """Pack the sentences of each body paragraph into passages of about max_tokens word pieces.

    Args:
        article: the article; only its body paragraphs are chunked.
        count_tokens: word pieces of each text, without special tokens.
        max_tokens: the size a passage is filled up to.
        hard_limit: the size no passage may exceed (what the model reads without truncating);
            a longer sentence is cut at word boundaries into pieces of max_tokens.
        overlap: sentences repeated at the start of the next passage of the same paragraph.
        first_pid: the passage id given to the first passage.

    Returns:
        Passages in article order with `text == article.text[char_start:char_end]`.
    """
    assert 0 < max_tokens <= hard_limit, (max_tokens, hard_limit)
    text = article.text
    passages: list[Passage] = []
    for p_start, p_end in article.body:
        units = _fit(text, sentences(text, p_start, p_end), count_tokens, max_tokens,
                     hard_limit)
        for group in _pack(units, max_tokens, overlap):
            a, b = group[0][0][0], group[-1][0][1]
            passages.append(Passage(pid=first_pid + len(passages), doc_id=article.doc_id,
                                    char_start=a, char_end=b, text=text[a:b],
                                    sentences=tuple(span for span, _ in group)))
    return passages


def _fit(text: str, spans: list[Span], count_tokens: TokenCounter, max_tokens: int,
         hard_limit: int) -> list[tuple[Span, int]]:
    """Pair each sentence with its size; cut one longer than hard_limit into max_tokens pieces."""
    sizes = count_tokens([text[a:b] for a, b in spans]) if spans else []
    units: list[tuple[Span, int]] = []
    for span, size in zip(spans, sizes):
        if size <= hard_limit:
            units.append((span, size))
        else:
            units.extend(_cut(text, span, count_tokens, max_tokens))
    return units


def _cut(text: str, span: Span, count_tokens: TokenCounter, limit: int) -> list[tuple[Span, int]]:
    """Cut a span at word breaks into pieces of at most limit word pieces."""
    words = [(span[0] + m.start(), span[0] + m.end())
             for m in re.finditer(r"\S+", text[span[0]:span[1]])]
    sizes = count_tokens([text[a:b] for a, b in words])
    pieces: list[tuple[Span, int]] = []
    start, total, prev_end = None, 0, span[0]
    for (a, b), size in zip(words, sizes):
        if start is not None and total + size > limit:
            pieces.append(((start, prev_end), total))
            start, total = None, 0
        if size > limit:  # one "word" longer than the model reads (a URL, a table row)
            # Pieces of one word are sized alone; joined, they would tokenize differently, so
            # each claims the whole limit and is never packed with a neighbour.
            pieces.extend((piece, limit) for piece, _ in _split_word(text, a, b, count_tokens, limit))
            continue
        if start is None:
            start = a
        total += size
        prev_end = b
    if start is not None:
        pieces.append(((start, prev_end), total))
    return pieces


def _split_word(text: str, a: int, b: int, count_tokens: TokenCounter,
                limit: int) -> list[tuple[Span, int]]:
    """Cut text[a:b] by characters into pieces of at most limit word pieces, counted, not guessed."""
    pieces: list[tuple[Span, int]] = []
    while a < b:
        end, size = b, count_tokens([text[a:b]])[0]
        while size > limit and end - a > 1:
            end = a + max(1, (end - a) * limit // (size + 1))
            size = count_tokens([text[a:end]])[0]
        pieces.append(((a, end), size))
        a = end
    return pieces


def _pack(units: list[tuple[Span, int]], max_tokens: int,
          overlap: int) -> list[list[tuple[Span, int]]]:
    groups: list[list[tuple[Span, int]]] = []
    i = 0
    while i < len(units):
        group, total = [units[i]], units[i][1]
        j = i + 1
        while j < len(units) and total + units[j][1] <= max_tokens:
            group.append(units[j])
            total += units[j][1]
            j += 1
        groups.append(group)
        if j >= len(units):
            break
        # Repeat up to `overlap` sentences, as many as leave room for the next new one.
        i = max(i + 1, j - overlap)
        while i < j and sum(size for _, size in units[i:j + 1]) > max_tokens:
            i += 1
    return groups


def _strip(s: str, a: int, b: int) -> Span:
    while a < b and s[a].isspace():
        a += 1
    while b > a and s[b - 1].isspace():
        b -= 1
    return a, b
