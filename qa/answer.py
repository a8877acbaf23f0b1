"""Hits -> an Answer snippet (verbatim sentences with exact offsets), or an abstention."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .store import Index, english_stemmer
from .types import Answer, Hit, Span

# Sentences of this many top passages compete for the snippet.
SNIPPET_PASSAGES = 3

_NUMBER = r"\$?\d[\d,]*(?:\.\d+)?\s*(?:%|percent|per cent|trillion|billion|million|thousand|yuan|dollars|km|kilometers|miles)?"
_MONTHS = r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan\.|Feb\.|Aug\.|Sept?\.|Oct\.|Nov\.|Dec\.)"
ENTITY = {
    "number": re.compile(_NUMBER),
    "date": re.compile(rf"(?:{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{_MONTHS}\s+\d{{4}}|"
                       rf"{_MONTHS}\s+\d{{4}}|(?:late |early |mid-)?{_MONTHS}|\b(?:1[5-9]|20)\d{{2}}s?\b)"),
    "person": re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+\b|\b[A-Z][a-z]+\b"),
    "place": re.compile(r"\b[A-Z][a-z]+(?:\s+(?:[A-Z][a-z]+|of|and))*\b"),
}
# The kind of answer a question asks for, from its wording.
QUESTION_TYPES = [
    ("number", re.compile(r"\bhow (?:many|much|long|far|big|large|old|high|fast)\b|\bwhat (?:percentage|share|proportion|number|amount|rate)\b|\bwhat was the (?:value|total)\b", re.I)),
    ("date", re.compile(r"\bwhen\b|\bwhat (?:year|month|day|date|time)\b|\bwhich (?:year|month|day|date)\b|\bin which year\b", re.I)),
    ("person", re.compile(r"\bwho(?:m|se)?\b|\bwhich (?:person|official|organi[sz]ation|company|body|ministry|team)\b", re.I)),
    ("place", re.compile(r"\bwhere\b|\bwhich (?:city|country|province|place|region|state|town)\b|\bin what (?:city|country|place)\b", re.I)),
]
_WORD = re.compile(r"[A-Za-z0-9]+")
_STOP = frozenset("""a an the of in on at to for from by with and or but is are was were be been being
what which who whom whose when where why how do does did has have had it its this that these those
as into about than then so such there their they them he she his her we our you your i me my
many much long""".split())


@dataclass(frozen=True)
class Calibration:
    """How the snippet is scored and when to abstain; stored in the index manifest ("answer").

    confidence = sigmoid(bias + sum(weights[f] * feature f)); abstain below `threshold`.
    """

    sentence_weights: dict
    confidence_weights: dict
    bias: float
    threshold: float

    @classmethod
    def from_manifest(cls, manifest: dict) -> Calibration:
        c = manifest.get("answer") or {}
        return cls(sentence_weights=c.get("sentence_weights", DEFAULT_SENTENCE_WEIGHTS),
                   confidence_weights=c.get("confidence_weights", DEFAULT_CONFIDENCE_WEIGHTS),
                   bias=c.get("bias", -6.0), threshold=c.get("threshold", 0.5))


DEFAULT_SENTENCE_WEIGHTS = {"cosine": 1.0, "overlap": 0.6, "type": 0.25, "rank": 0.15}
DEFAULT_CONFIDENCE_WEIGHTS = {"dense_top": 6.0, "overlap": 4.0, "type": 1.0, "cosine": 2.0}


def question_type(question: str) -> str | None:
    """'How many patents ...' -> 'number'; 'When was ...' -> 'date'; None when unclear."""
    for kind, pattern in QUESTION_TYPES:
        if pattern.search(question):
            return kind
    return None


def content_stems(text: str) -> set[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    return set(english_stemmer().stemWords([w for w in words if w not in _STOP]))


def entity_span(sentence: str, kind: str | None, question: str) -> Span | None:
    """The first span of the asked-for kind in the sentence that the question does not already
    name (a question about 2020 is not answered by "2020"); offsets within the sentence."""
    if kind is None:
        return None
    asked = content_stems(question) | {w.lower() for w in _WORD.findall(question)}
    first_word_end = len(sentence.split(" ", 1)[0])
    for m in ENTITY[kind].finditer(sentence):
        text = m.group(0).strip()
        if not text or not any(ch.isalnum() for ch in text):
            continue
        words = {w.lower() for w in _WORD.findall(text)}
        if words and words <= asked:
            continue
        if kind in ("person", "place") and m.start() < first_word_end and " " not in text:
            continue  # a capitalised first word is no name
        start = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        return start, start + len(text)
    return None


def pick(question: str, qvec: np.ndarray, hits: list[Hit], index: Index, encoder,
         calibration: Calibration, dense_top: float) -> tuple[Answer | None, float]:
    """The best answering sentence among the top passages, and the confidence that it answers.

    Args:
        question: the question as asked (after follow-up resolution).
        qvec: its unit vector.
        hits: ranked hits.
        index: the loaded index (for the article text).
        encoder: encodes the candidate sentences.
        calibration: weights and threshold.
        dense_top: the best cosine between the question and any passage.

    Returns:
        (answer or None when there are no hits, confidence in [0, 1]).
    """
    candidates: list[tuple[Hit, Span]] = [(h, s) for h in hits[:SNIPPET_PASSAGES]
                                          for s in h.passage.sentences]
    if not candidates:
        return None, 0.0
    texts = [index.articles[h.passage.doc_id].text[a:b] for h, (a, b) in candidates]
    cos = encoder.encode(texts) @ qvec
    kind = question_type(question)
    q_stems = content_stems(question)
    w = calibration.sentence_weights
    best, best_score, best_features = 0, -math.inf, {}
    for i, ((hit, span), text) in enumerate(zip(candidates, texts)):
        stems = content_stems(text)
        overlap = len(q_stems & stems) / len(q_stems) if q_stems else 0.0
        has_type = 1.0 if kind and entity_span(text, kind, question) else 0.0
        features = {"cosine": float(cos[i]), "overlap": overlap, "type": has_type,
                    "rank": 1.0 / hit.rank}
        score = sum(w[f] * features[f] for f in w)
        if score > best_score:
            best, best_score, best_features = i, score, features
    hit, (a, b) = candidates[best]
    features = best_features | {"dense_top": dense_top}
    z = calibration.bias + sum(calibration.confidence_weights[f] * features[f]
                               for f in calibration.confidence_weights)
    confidence = 1.0 / (1.0 + math.exp(-z))
    local = entity_span(texts[best], kind, question)
    highlight = (a + local[0], a + local[1]) if local else None
    answer = Answer(text=texts[best], doc_id=hit.passage.doc_id, char_start=a, char_end=b,
                    passage_rank=hit.rank, confidence=round(confidence, 4), highlight=highlight)
    return answer, confidence
