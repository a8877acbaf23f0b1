"""Hits -> an Answer snippet (verbatim sentences with exact offsets), or an abstention.

No model runs here: the question was encoded once, and every passage vector is in the index.
Each sentence of the top passages is scored by a small logistic model over cheap features
(IDF-weighted overlap with the question, word pairs in order, the neighbours' overlap, whether it
holds the kind of answer asked for, the passage's rank, retrieval score and cosine). The top
passages are re-ordered by their best sentence, and the best sentence is the snippet. A second
logistic model turns the winner's features into a confidence; below the threshold we abstain.
Both models' coefficients are fitted by `qa calibrate` and stored as JSON in the index manifest.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .store import Index, Manifest
from .text import english_stemmer, stems
from .types import Answer, Hit, Passage, Span  # noqa: F401  (Passage: rescore's example)

if TYPE_CHECKING:
    from .shards import ShardedIndex

PACKAGED_CALIBRATION = Path(__file__).with_name("calibration.json")

_NUMBER = (r"\$?\d[\d,]*(?:\.\d+)?(?:\s*(?:%|percent|per cent|trillion|billion|million|thousand|"
           r"yuan|dollars|km|kilometers|kilometres|miles|years|months|days))?")
_MONTHS = (r"(?:January|February|March|April|May|June|July|August|September|October|November|"
           r"December|Jan\.|Feb\.|Aug\.|Sept?\.|Oct\.|Nov\.|Dec\.)")
ENTITY = {
    "number": re.compile(_NUMBER),
    "date": re.compile(rf"(?:{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{_MONTHS}\s+\d{{4}}|"
                       rf"{_MONTHS}\s+\d{{1,2}}\b|{_MONTHS}\s+\d{{4}}|(?:late |early |mid-)?{_MONTHS}|"
                       rf"\b(?:1[0-9]|20)\d{{2}}s?\b)"),
    "person": re.compile(r"\b[A-Z][\w'.-]*(?:[ -](?:[A-Z][\w'.-]*|of|de|von|van|the))*[ -]?[A-Z][\w'.-]*\b|\b[A-Z][a-z]+\b"),
    "place": re.compile(r"\b[A-Z][a-z]+(?:\s+(?:[A-Z][a-z]+|of|and))*\b"),
}
# The kind of answer a question asks for, from its wording.
QUESTION_TYPES = [
    ("number", re.compile(r"\bhow (?:many|much|long|far|big|large|old|high|fast|tall|wide|deep)\b|"
                          r"\bwhat (?:percentage|percent|share|proportion|number|amount|rate)\b|"
                          r"\bwhat was the (?:value|total)\b", re.IGNORECASE)),
    ("date", re.compile(r"\bwhen\b|\bwhat (?:year|month|day|date|time|century|decade)\b|"
                        r"\bwhich (?:year|month|day|date|century|decade)\b|\bin which year\b", re.IGNORECASE)),
    ("person", re.compile(r"\bwho(?:m|se)?\b|\bwhich (?:person|official|organi[sz]ation|company|"
                          r"body|ministry|team|group|agency)\b", re.IGNORECASE)),
    ("place", re.compile(r"\bwhere\b|\bwhich (?:city|country|province|place|region|state|town|"
                         r"county|continent|island|river)\b|\bin what (?:city|country|place|state)\b",
                         re.IGNORECASE)),
]
_WORD = re.compile(r"[A-Za-z0-9]+")

SENTENCE_FEATURES = ("wov", "ov", "pref", "bigram", "ctx", "type", "untyped", "rrank", "prel",
                     "pcos", "length", "novel")
PREFIX = 5  # "creators" and "created" stem apart but share "creat"
CONFIDENCE_FEATURES = ("best", "margin", "pcos", "wov", "window", "maxmiss", "nummiss", "cover",
                       "oov", "type_missing", "untyped")
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Calibration:
    """How sentences are scored and when to abstain; stored in the index manifest ("answer").

    sentence score = bias + sum(weights[f] * feature f) over SENTENCE_FEATURES;
    confidence = sigmoid(bias + sum(weights[f] * feature f)) over CONFIDENCE_FEATURES;
    abstain when confidence < threshold. `passages` top passages compete and are re-ordered;
    the snippet grows to at most `max_run` adjacent sentences to hold `run_mass` (see Picker.run).
    """

    sentence: dict
    confidence: dict
    threshold: float
    passages: int
    max_run: int = 1
    run_mass: float = 1.0

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Calibration:
        """The manifest's "answer" block, or the packaged defaults for an index built before it."""
        return cls.from_block(manifest.answer)

    @classmethod
    def from_block(cls, c: dict) -> Calibration:
        """A manifest's "answer" block; the packaged defaults when it is empty or incomplete."""
        if "sentence" not in c or "confidence" not in c:
            c = packaged_calibration()
        return cls.from_dict(c)

    @classmethod
    def from_dict(cls, c: dict) -> Calibration:
        return cls(sentence=c["sentence"], confidence=c["confidence"],
                   threshold=float(c["threshold"]), passages=int(c["passages"]),
                   max_run=int(c.get("max_run", 1)), run_mass=float(c.get("run_mass", 1.0)))


@lru_cache(maxsize=1)
def packaged_calibration() -> dict:
    return json.loads(PACKAGED_CALIBRATION.read_text())


def question_type(question: str) -> str | None:
    """'How many patents ...' -> 'number'; 'When was ...' -> 'date'; None when unclear."""
    for kind, pattern in QUESTION_TYPES:
        if pattern.search(question):
            return kind
    return None


def entity_span(sentence: str, kind: str | None, question: str) -> Span | None:
    """The first span of the asked-for kind in the sentence that the question does not already
    name (a question about 2020 is not answered by "2020"); offsets within the sentence.

    >>> entity_span("Revenue grew 17.16 percent in 2020.", "number", "How fast did it grow in 2020?")
    (13, 26)
    >>> entity_span("On May 17, 2021, it sold 87.6 billion yuan abroad.", "number", "How much was sold?")
    (25, 37)
    """
    if kind is None:
        return None
    asked = _asked(question)
    first_word_end = len(sentence.split(" ", 1)[0])
    # A date is no amount: "how much ..." is not answered by the 17 of "May 17" or by "2019".
    dates = ([m.span() for m in ENTITY["date"].finditer(sentence)] if kind == "number" else [])
    for m in ENTITY[kind].finditer(sentence):
        text = m.group(0).strip()
        if not text or not any(ch.isalnum() for ch in text):
            continue
        if any(a <= m.start() < b for a, b in dates):
            continue
        words = {w.lower() for w in _WORD.findall(text)}
        if words and (words <= asked or set(english_stemmer().stemWords(list(words))) <= asked):
            continue
        if kind in ("person", "place") and m.start() < first_word_end and " " not in text:
            continue  # a capitalised first word is no name
        start = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        return start, start + len(text)
    return None


@lru_cache(maxsize=64)
def _asked(question: str) -> frozenset[str]:
    """The question's words and stems; one question is checked against many sentences."""
    return frozenset({w.lower() for w in _WORD.findall(question)} | set(stems(question)))


def rescore(order: list[Hit], best_of: dict[int, float], rest: list[Hit]) -> list[Hit]:
    """Hits renumbered after re-ordering, with scores that fall as the rank grows.

    A re-ordered passage scores sigmoid(its best sentence's score), in (0, 1). The passages
    below them keep the retriever's order; their score is that of the last re-ordered passage,
    scaled by their retriever score relative to the first of them (and a little less), so the
    JSON scores never rise down the list.

    >>> h = lambda pid, score: Hit(Passage(pid, "d", 0, 1, "x"), score, pid)
    >>> [round(x.score, 3) for x in rescore([h(2, .5), h(1, .9)], {1: 0.0, 2: 2.0}, [h(3, .4), h(4, .2)])]
    [0.881, 0.5, 0.499, 0.25]
    """
    out = [Hit(h.passage, 1.0 / (1.0 + math.exp(-best_of.get(h.passage.pid, -50.0))), i + 1)
           for i, h in enumerate(order)]
    base = last = out[-1].score if out else 1.0
    first = rest[0].score if rest else 0.0
    for i, h in enumerate(rest):
        ratio = h.score / first if first > 0 else 0.999 ** i
        last = min(last, base * 0.999 * max(min(ratio, 1.0), 0.0))  # merge's repeats come last
        out.append(Hit(h.passage, last, len(out) + 1))
    return out


@dataclass(frozen=True)
class Picked:
    """What the picker decided: hits re-ordered, the best answer, its confidence, the best
    sentence (article offsets) of each passage it read, by pid, and the abstention model's
    inputs (what `qa calibrate --reader` fits on)."""

    hits: tuple[Hit, ...]
    answer: Answer | None
    confidence: float
    sentences: dict[int, Span] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)


class Picker:
    """Scores sentences against questions for one loaded index (holds the IDF table), and with
    a reader (qa.reader.Reader), lets it re-read the best candidates."""

    def __init__(self, index: Index | ShardedIndex, calibration: Calibration, reader=None):
        self.index = index
        self.calibration = calibration
        self.reader = reader
        vocab = index.bm25.vocab_dict
        df = np.diff(np.asarray(index.bm25.scores["indptr"]))
        n = max(int(index.bm25.scores.get("num_docs", len(index.passages))), 1)
        self.max_idf = math.log(1 + (n + 0.5) / 0.5)
        self.idf = {t: math.log(1 + (n - df[i] + 0.5) / (df[i] + 0.5))
                    for t, i in vocab.items() if i < len(df)}
        self._stems: dict[tuple[str, int, int], list[str]] = {}
        self._article_stems: dict[str, set[str]] = {}

    def sentence_stems(self, doc_id: str, a: int, b: int) -> list[str]:
        key = (doc_id, a, b)
        got = self._stems.get(key)
        if got is None:
            got = self._stems[key] = stems(self.index.articles[doc_id].text[a:b])
        return got

    def article_stems(self, doc_id: str) -> set[str]:
        got = self._article_stems.get(doc_id)
        if got is None:
            got = self._article_stems[doc_id] = set(stems(self.index.articles[doc_id].text))
        return got

    def candidates(self, question: str, qvec: np.ndarray | None, hits: list[Hit]) -> list[dict]:
        """One feature dict per sentence of the top passages (a sentence shared by overlapping
        passages counts once, for the better-ranked passage)."""
        top = hits[:self.calibration.passages]
        if not top:
            return []
        q = list(dict.fromkeys(stems(question)))
        q_set = set(q)
        weights = {t: self.idf.get(t, self.max_idf) for t in q}
        total = sum(weights.values()) or 1.0
        q_pairs = set(zip(q, q[1:])) if len(q) > 1 else set()
        q_pref = {t[:PREFIX]: w for t, w in weights.items()}
        kind = question_type(question)
        scores = [h.score for h in top]
        lo, hi = min(scores), max(scores)
        pcos = (self.index.vectors[[h.passage.pid for h in top]] @ qvec if qvec is not None
                else np.zeros(len(top)))
        out, seen = [], set()
        for hit, cos in zip(top, pcos):
            spans = hit.passage.sentences
            doc = hit.passage.doc_id
            words = [self.sentence_stems(doc, a, b) for a, b in spans]
            for j, (a, b) in enumerate(spans):
                if (doc, a, b) in seen:
                    continue
                seen.add((doc, a, b))
                s = set(words[j])
                s_pref = {x[:PREFIX] for x in s}
                near = s.union(*words[max(0, j - 1):j + 2])
                text = self.index.articles[doc].text[a:b]
                pairs = set(zip(words[j], words[j][1:]))
                out.append({
                    "hit": hit, "span": (a, b), "text": text, "kind": kind, "index": j,
                    "wov": sum(w for t, w in weights.items() if t in s) / total,
                    "ov": len(s & q_set) / len(q) if q else 0.0,
                    "pref": sum(w for t, w in q_pref.items() if t in s_pref) / total,
                    "bigram": len(q_pairs & pairs) / len(q_pairs) if q_pairs else 0.0,
                    "ctx": sum(w for t, w in weights.items() if t in near) / total,
                    "type": 1.0 if kind and entity_span(text, kind, question) else 0.0,
                    "untyped": 0.0 if kind else 1.0,
                    "rrank": 1.0 / hit.rank,
                    "prel": (hit.score - lo) / (hi - lo) if hi > lo else 1.0,
                    "pcos": float(cos),
                    "length": min(len(words[j]), 40) / 40,
                    "novel": len(s - q_set) / len(s) if s else 0.0,
                    "_weights": weights, "_total": total, "_question": question,
                })
        return out

    def sentence_score(self, c: dict) -> float:
        w = self.calibration.sentence
        return w["bias"] + sum(w["weights"][f] * c[f] for f in SENTENCE_FEATURES)

    def confidence_features(self, best: dict, scored: list[tuple[float, dict]]) -> dict:
        """Question-level features of the winning sentence, for the abstention model."""
        others = [s for s, c in scored if c["hit"].passage.doc_id != best["hit"].passage.doc_id]
        article = self.article_stems(best["hit"].passage.doc_id)
        weights, total = best["_weights"], best["_total"]
        doc = best["hit"].passage.doc_id
        spans = best["hit"].passage.sentences
        j = best["index"]
        near = set().union(*(self.sentence_stems(doc, a, b) for a, b in spans[max(0, j - 1):j + 2]))
        near_pref = {t[:PREFIX] for t in near}
        missing = [w for t, w in weights.items() if t not in near and t[:PREFIX] not in near_pref]
        a, b = spans[max(0, j - 1)][0], spans[min(len(spans) - 1, j + 1)][1]
        window_text = self.index.articles[doc].text[a:b]
        numbers = _DIGITS.findall(best["_question"])
        return {
            "best": scored[0][0],
            "window": 1.0 - sum(missing) / total,
            "maxmiss": max(missing, default=0.0) / self.max_idf,
            "nummiss": (sum(n not in window_text for n in numbers) / len(numbers)) if numbers else 0.0,
            "margin": scored[0][0] - (max(others) if others else scored[0][0] - 1.0),
            "pcos": best["pcos"],
            "wov": best["wov"],
            "cover": sum(w for t, w in weights.items() if t in article) / total,
            "oov": sum(w for t, w in weights.items() if t not in self.idf) / total,
            "type_missing": 1.0 if best["kind"] and not best["type"] else 0.0,
            "untyped": best["untyped"],
        }

    def pick(self, question: str, qvec: np.ndarray | None, hits: list[Hit]) -> Picked:
        """Re-order the top passages by their best sentence, and take that sentence as answer.

        Args:
            question: the question as asked (after follow-up resolution).
            qvec: its unit vector (None: passage cosine counts as 0).
            hits: ranked hits from the retriever.

        Returns:
            Picked: hits (top `calibration.passages` re-ordered, ranks renumbered), the answer
            (None when there are no sentences), its confidence in [0, 1], and the best sentence
            of each passage read.
        """
        cands = self.candidates(question, qvec, hits) if stems(question) else []
        if not cands:  # no sentences, or a question without one content word ("the of and")
            return Picked(tuple(hits), None, 0.0)
        scored = sorted(((self.sentence_score(c), c) for c in cands), key=lambda x: -x[0])
        by_features = scored
        if self.reader is not None:
            scored, read = self.read(question, scored)
        best_of: dict[int, float] = {}
        sentences: dict[int, Span] = {}
        for s, c in scored:
            best_of.setdefault(c["hit"].passage.pid, s)
            sentences.setdefault(c["hit"].passage.pid, c["span"])
        top = hits[:self.calibration.passages]
        order = sorted(top, key=lambda h: (-best_of.get(h.passage.pid, -math.inf), h.rank))
        reranked = rescore(order, best_of, hits[len(top):])
        new_rank = {h.passage.pid: h.rank for h in reranked}
        best = scored[0][1]
        if best is not by_features[0][1]:  # the feature model's view, with the reader's winner first
            by_features = [x for x in by_features if x[1] is best] + \
                [x for x in by_features if x[1] is not best]
        features = self.confidence_features(best, by_features)
        c = self.calibration.confidence
        z = c["bias"] + sum(c["weights"][f] * features[f] for f in CONFIDENCE_FEATURES)
        if self.reader is not None:
            features = {**features, **read, "feature_z": z}
            confidence = self.reader.calibration.probability(features)
        else:
            confidence = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
        a, b = self.run(best, scored)
        text = self.index.articles[best["hit"].passage.doc_id].text[a:b]
        local = entity_span(best["text"], best["kind"], question)
        if local:
            local = (local[0] + best["span"][0] - a, local[1] + best["span"][0] - a)
        else:
            local = entity_span(text, best["kind"], question)
        hit = best["hit"]
        answer = Answer(text=text, doc_id=hit.passage.doc_id, char_start=a, char_end=b,
                        passage_rank=new_rank[hit.passage.pid], confidence=round(confidence, 4),
                        highlight=(a + local[0], a + local[1]) if local else None)
        return Picked(tuple(reranked), answer, confidence, sentences, features)

    @property
    def threshold(self) -> float:
        """Abstain below this confidence."""
        return self.reader.calibration.threshold if self.reader else self.calibration.threshold

    def read(self, question: str, scored: list[tuple[float, dict]]
             ) -> tuple[list[tuple[float, dict]], dict[str, float]]:
        """The reader re-reads the best candidates by feature score.

        Returns:
            every candidate with its combined score, best first (those the reader did not read
            score as if it gave them one less than its lowest logit), and the reader's
            confidence features (its logits for the winner and the runner-up).
        """
        rc = self.reader.calibration
        top = scored[:rc.candidates]
        logits = self.reader.score(question, [(self.index.articles[c["hit"].passage.doc_id].title,
                                               c["text"]) for _, c in top])
        floor = float(logits.min()) - 1.0
        combined = [(rc.feature * s + rc.reader * float(x), i, c, float(x))
                    for i, ((s, c), x) in enumerate(zip(top, logits))]
        combined += [(rc.feature * s + rc.reader * floor, len(top) + i, c, floor)
                     for i, (s, c) in enumerate(scored[len(top):])]
        combined.sort(key=lambda x: (-x[0], x[1]))
        second = max((x[3] for x in combined[1:] if x[1] < len(top)), default=floor)
        return ([(s, c) for s, _, c, _ in combined],
                {"read_best": combined[0][3], "read_second": second})

    def run(self, best: dict, scored: list[tuple[float, dict]]) -> Span:
        """The shortest run of adjacent sentences around the best one (at most `max_run`) that
        holds `run_mass` of the probability that a sentence answers (a softmax over all
        candidates); the best sentence alone when no run reaches it.

        A lone best sentence with 0.4 of the mass and a next sentence with 0.35 give a run of two
        when run_mass is 0.6.
        """
        max_run, need = self.calibration.max_run, self.calibration.run_mass
        if max_run <= 1:
            return best["span"]
        top = scored[0][0]
        weights = [math.exp(s - top) for s, _ in scored]
        total = sum(weights)
        doc = best["hit"].passage.doc_id
        mass = {c["span"]: w / total for w, (_, c) in zip(weights, scored)
                if c["hit"].passage.doc_id == doc}
        spans = best["hit"].passage.sentences
        j = best["index"]
        for length in range(1, max_run + 1):
            runs = [spans[i:i + length] for i in range(max(0, j - length + 1), j + 1)
                    if i + length <= len(spans)]
            if not runs:
                break
            got = max(runs, key=lambda r: sum(mass.get(s, 0.0) for s in r))
            if sum(mass.get(s, 0.0) for s in got) >= need:
                return got[0][0], got[-1][1]
        return best["span"]
