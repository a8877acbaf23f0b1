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

import bisect
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .chunk import sentences
from .settings import UserError
from .store import Index, Manifest
from .text import english_stemmer, stems
from .types import Answer, Hit, Linear, Passage, Span  # noqa: F401  (Passage: rescore's example)

if TYPE_CHECKING:
    from .reader import ReaderCalibration
    from .shards import ShardedIndex

PACKAGED_CALIBRATION = Path(__file__).with_name("calibration.json")
# Articles whose sentence spans a Picker keeps for the reader's neighbours (Picker.reading).
ARTICLE_CACHE = 4096

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
_YEAR = re.compile(r"(?<![\d.,$])(1[5-9]\d\d|20\d\d)(?![\d%]|\.\d|s\b)")
_YEAR_RANGE = re.compile(r"(1[5-9]\d\d|20\d\d)\s*(?:-|–|—|to|through|until|and)\s*(1[5-9]\d\d|20\d\d)\b")
# A question that asks for a year or a date, and what in a snippet can answer it: a number of
# 3-4 digits that is not part of a larger figure ("c1180", "1990s", "AD 800"), a month, a century.
_ASKS_YEAR = re.compile(r"\b(?:what|which) (year|date)\b", re.IGNORECASE)
_NAMES_TIME = re.compile(rf"(?<![\d,.])\d{{3,4}}s?(?![\d]|[,.]\d)|{_MONTHS}|\b[Cc]entur(?:y|ies)\b")
_YEAR_SHORT_RANGE = re.compile(r"\b(1[5-9]\d\d|20\d\d)[-–—](\d\d)\b(?![-–—]?\d)")  # "2018-20"


@dataclass(frozen=True)
class Calibration:
    """How sentences are scored and when to abstain; stored in the index manifest ("answer").

    sentence score = bias + sum(weights[f] * feature f) over SENTENCE_FEATURES;
    confidence = sigmoid(bias + sum(weights[f] * feature f)) over CONFIDENCE_FEATURES;
    abstain when confidence < threshold. `passages` top passages compete and are re-ordered;
    the snippet grows to at most `max_run` adjacent sentences to hold `run_mass` (see Picker.run).
    """

    sentence: Linear
    confidence: Linear
    threshold: float
    passages: int
    max_run: int = 1
    run_mass: float = 1.0

    def __post_init__(self) -> None:
        assert self.sentence.features == SENTENCE_FEATURES, self.sentence.features
        assert self.confidence.features == CONFIDENCE_FEATURES, self.confidence.features

    @classmethod
    def from_manifest(cls, manifest: Manifest, where: Path | str = "the index manifest"
                      ) -> Calibration:
        """The manifest's "answer" block, or the packaged defaults for an index built before it.

        Raises:
            UserError: a malformed block, naming `where` (the manifest) and the fix.
        """
        return cls.from_block(manifest.answer, where)

    @classmethod
    def from_block(cls, c: Mapping[str, Any], where: Path | str = "the index manifest"
                   ) -> Calibration:
        """A manifest's "answer" block; the packaged defaults when it is empty or incomplete."""
        if "sentence" not in c or "confidence" not in c:
            return packaged_calibration()
        try:
            return cls.from_dict(c)
        except ValueError as e:
            raise UserError(f"the answer calibration in {where} is malformed ({e}); rebuild the "
                            f"index with `qa build`") from None

    @classmethod
    def from_dict(cls, c: Mapping[str, Any]) -> Calibration:
        """The calibration of parsed JSON (qa/calibration.json, a manifest's "answer" block).

        Raises:
            ValueError: a missing field or one of the wrong type, named.
        """
        if not isinstance(c, Mapping):
            raise ValueError(f"expected an object, got {type(c).__name__}")
        missing = [k for k in ("sentence", "confidence", "threshold", "passages") if k not in c]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        try:
            sentence = Linear.from_json(c["sentence"], SENTENCE_FEATURES)
        except ValueError as e:
            raise ValueError(f"sentence: {e}") from None
        try:
            confidence = Linear.from_json(c["confidence"], CONFIDENCE_FEATURES)
        except ValueError as e:
            raise ValueError(f"confidence: {e}") from None
        threshold, passages = c["threshold"], c["passages"]
        max_run, run_mass = c.get("max_run", 1), c.get("run_mass", 1.0)
        if not _number(threshold) or not 0 <= threshold <= 1:
            raise ValueError(f"'threshold' must be a number in [0, 1], got {threshold!r}")
        for name, value in (("passages", passages), ("max_run", max_run)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name!r} must be a whole number of at least 1, got {value!r}")
        if not _number(run_mass) or not 0 <= run_mass <= 1:
            raise ValueError(f"'run_mass' must be a number in [0, 1], got {run_mass!r}")
        return cls(sentence=sentence, confidence=confidence, threshold=float(threshold),
                   passages=passages, max_run=max_run, run_mass=float(run_mass))

    def to_dict(self) -> dict:
        """The JSON form, as `qa calibrate` writes it."""
        return {"passages": self.passages, "max_run": self.max_run, "run_mass": self.run_mass,
                "sentence": self.sentence.to_json(), "confidence": self.confidence.to_json(),
                "threshold": self.threshold}


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@lru_cache(maxsize=1)
def packaged_calibration() -> Calibration:
    """qa/calibration.json, which every new index copies into its manifest.

    Raises:
        UserError: the file is missing or malformed, named with the fix.
    """
    try:
        return Calibration.from_dict(json.loads(PACKAGED_CALIBRATION.read_text()))
    except FileNotFoundError:
        raise UserError(f"{PACKAGED_CALIBRATION} is missing; reinstall qa or run `qa calibrate`"
                        ) from None
    except ValueError as e:
        raise UserError(f"{PACKAGED_CALIBRATION} is not an answer calibration ({e}); reinstall qa "
                        f"or run `qa calibrate`") from None


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
    found = _candidates(sentence, kind, question)
    return found[0] if found else None


def _candidates(sentence: str, kind: str, question: str) -> list[Span]:
    """Every span of the asked-for kind that the question does not already name (entity_span's
    rules), in order."""
    asked = _asked(question)
    first_word_end = len(sentence.split(" ", 1)[0])
    dates = ([m.span() for m in ENTITY["date"].finditer(sentence)] if kind == "number" else [])
    out: list[Span] = []
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
            continue
        start = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        out.append((start, start + len(text)))
    return out


_LIST_SEP = re.compile(r",\s*(?:and\s+)?|\s+and\s+")
_HOW_MANY = re.compile(r"\b(?i:how many)\s+((?:[A-Za-z][\w-]*\s+){0,3}?[A-Za-z][\w-]*)"
                       r"(?=\s+(?:did|do|does|were|was|are|is|has|have|had|will|would|can|could|"
                       r"in|of|at|on|for|from|that|there|by|does|[A-Z]\w*)\b|\s*[?.,]|$)")


def years(text: str) -> set[int]:
    """The years a text names, with the years inside a range it names ("2016-2018", "2018-20").

    >>> sorted(years("From 2016 to 2018, output grew 12% (2,018 units); the 1990s are gone."))
    [2016, 2017, 2018]
    """
    found = {int(y) for y in _YEAR.findall(text)}
    ranges = [(int(a), int(b)) for a, b in _YEAR_RANGE.findall(text)]
    ranges += [(int(a), int(a) // 100 * 100 + int(b)) for a, b in _YEAR_SHORT_RANGE.findall(text)]
    for a, b in ranges:
        if 0 < b - a <= 50:
            found.update(range(a, b + 1))
    return found


def no_shared_word(features: dict[str, float]) -> str:
    """Why an answer is no answer when not one word of the question is in the article it comes
    from ("cover" 0: markup, keyboard mashing, words the articles never use), else "".
    Nearness of meaning alone then picked it: on 655 right answers to SQuAD 1.1 tuning
    questions this never happened.

    >>> no_shared_word({"cover": 0.0})
    'no word of the question is in the article of the closest sentence'
    >>> no_shared_word({"cover": 0.4})
    ''
    """
    return "no word of the question is in the article of the closest sentence" \
        if features["cover"] <= 0 else ""


def year_clash(question: str, snippet: str) -> str:
    """Why the snippet cannot answer the question, when the question asks about a year and the
    snippet speaks of other years only ("" when it can).

    A figure for 2020 does not answer a question about 2018. On the tuning halves (questions
    that name a year: 23 seeds, 241 SQuAD 1.1 and 32 SQuAD 2.0 answered right) this never fired
    on a right answer; it fired on 6 of 49 wrong SQuAD answers and 22 of 77 SQuAD 2.0
    unanswerable questions (README, "Answer snippets").

    >>> year_clash("How many firms did Foshan have in 2018?", "It had 5,718 firms in 2020.")
    'the question asks about 2018, but the closest sentence speaks of 2020'
    >>> year_clash("How many firms did it have in 2018?", "Between 2016 and 2020 it had 5,718.")
    ''
    """
    asked = years(question)
    if not asked:
        return ""
    said = years(snippet)
    if not said or asked & said:
        return ""
    asked_text, said_text = (", ".join(map(str, sorted(ys))) for ys in (asked, said))
    return f"the question asks about {asked_text}, but the closest sentence speaks of {said_text}"


def no_year_named(question: str, snippet: str) -> str:
    """Why the snippet cannot answer the question, when the question asks for a year or a date
    ("What year ...", "On what date ...") and the snippet names no year, month or century at all
    ("" when it names one, or the question asks for something else).

    A sentence that says "officially launched shortly after" does not tell the date. On the
    tuning halves it never fired on a right answer (178 questions that ask for a year or date,
    as the shipped reader answers them: the seeds' 3, SQuAD 1.1's 150, SQuAD 2.0's 25); it fired
    on 2 wrong SQuAD 1.1 answers and on 2 of 42 such SQuAD 2.0 unanswerable questions (README,
    "Answer snippets"; scripts/rule_check.py).

    >>> no_year_named("In what year was the zone founded?", "The zone was founded shortly after.")
    'the question asks for a year, but the closest sentence names none'
    >>> no_year_named("To which year is the casket dated?", "The casket is dated c1180.")
    ''
    >>> no_year_named("How many firms were there?", "There were many.")
    ''
    """
    m = _ASKS_YEAR.search(question)
    if not m or _NAMES_TIME.search(snippet):
        return ""
    return f"the question asks for a {m.group(1).lower()}, but the closest sentence names none"


def counted(question: str) -> list[str]:
    """The stems of what a "how many ..." question counts; [] for any other question.

    >>> counted("How many high-tech enterprises did Foshan have in 2020?")
    ['high', 'tech', 'enterpris']
    >>> counted("How many SMEs were located in the zone?"), counted("How much did it cost?")
    (['smes'], [])
    """
    m = _HOW_MANY.search(question)
    return stems(m.group(1)) if m else []


def asked_number(text: str, question: str) -> Span | None:
    """The number in `text` that counts what a "how many ..." question asks about, when the
    words say so: the number followed within a few words by the counted thing's head noun (the
    most of its words wins), or, in a "... A and B were 1 and 2 respectively" sentence, the
    number in the position of the item that names the counted thing. None otherwise (the
    caller then takes the first number).

    >>> t = "Foshan had 1,323 small firms and 5,718 high-tech enterprises."
    >>> s = asked_number(t, "How many high-tech enterprises did Foshan have?"); t[s[0]:s[1]]
    '5,718'
    >>> t = "The number of small firms and high-tech enterprises were 1,323 and 2,931 respectively."
    >>> s = asked_number(t, "How many high-tech enterprises were there?"); t[s[0]:s[1]]
    '2,931'
    >>> asked_number(t, "How many SMEs were there?") is None
    True
    """
    thing = counted(question)
    if not thing:
        return None
    head, want = thing[-1], set(thing)
    spans = _candidates(text, "number", question)
    best, best_score = None, 0
    for a, b in spans:
        after = english_stemmer().stemWords([w.lower() for w in _WORD.findall(text[b:])][:len(want) + 2])
        score = len(want & set(after)) if head in after else 0
        if score > best_score:
            best, best_score = (a, b), score
    if best is not None:
        return best
    # "X and Y ... were 1 and 2, respectively": the i-th number belongs to the i-th item.
    for m in re.finditer(r"\brespectively\b", text):
        group = [sp for sp in spans if sp[1] <= m.start()]
        run = group[-1:]
        for sp in reversed(group[:-1]):  # the numbers listed just before "respectively"
            if _LIST_SEP.fullmatch(text[sp[1]:run[0][0]]):
                run.insert(0, sp)
            else:
                break
        if len(run) < 2:
            continue
        items = _LIST_SEP.split(text[:run[0][0]])[-len(run):]
        if len(items) < len(run):
            continue
        hits = [len(want & set(stems(item))) if head in stems(item) else 0 for item in items]
        if max(hits) > 0 and hits.count(max(hits)) == 1:
            return run[hits.index(max(hits))]
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


class SentenceReader(Protocol):
    """What the picker needs of a reader: qa.reader.Reader, `qa calibrate`'s memo of one, or a
    test's fake. Its calibration is None only while `qa calibrate --reader` fits it."""

    calibration: ReaderCalibration | None

    def score(self, question: str, pairs: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Logits for (title, sentence, before, after) readings (Picker.reading), higher = more
        likely the answer."""
        ...


@dataclass(frozen=True)
class Terms:
    """A question's content stems with their IDF weights (unknown stems weigh the most)."""

    question: str
    weights: dict[str, float]
    total: float


@dataclass(frozen=True, eq=False)
class Candidate:
    """One sentence of the top passages, competing to be the answer.

    `span` is the sentence in article offsets, `index` its place among the passage's sentences,
    `kind` the kind of answer the question asks for, and `features` its SENTENCE_FEATURES.
    """

    hit: Hit
    span: Span
    text: str
    kind: str | None
    index: int
    features: dict[str, float]
    terms: Terms

    @property
    def doc_id(self) -> str:
        return self.hit.passage.doc_id


@dataclass(frozen=True)
class Picked:
    """What the picker decided: hits re-ordered, the best answer, its confidence, the best
    sentence (article offsets) of each passage it read, by pid, the abstention model's inputs
    (what `qa calibrate --reader` fits on), and why the answer was ruled out, if it was."""

    hits: tuple[Hit, ...]
    answer: Answer | None
    confidence: float
    sentences: dict[int, Span] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    ruled_out: str = ""


class Picker:
    """Scores sentences against questions for one loaded index (holds the IDF table), and with
    a reader (qa.reader.Reader), lets it re-read the best candidates."""

    def __init__(self, index: Index | ShardedIndex, calibration: Calibration,
                 reader: SentenceReader | None = None):
        self.index = index
        self.calibration = calibration
        self.reader = reader
        bm25 = index.bm25
        assert bm25 is not None, "a loaded index has its BM25 statistics"
        vocab = bm25.vocab_dict
        df = np.diff(np.asarray(bm25.scores["indptr"]))
        n = max(int(bm25.scores.get("num_docs", len(index.passages))), 1)
        self.max_idf = math.log(1 + (n + 0.5) / 0.5)
        self.idf = {t: math.log(1 + (n - df[i] + 0.5) / (df[i] + 0.5))
                    for t, i in vocab.items() if i < len(df)}
        self._stems: dict[tuple[str, int, int], list[str]] = {}
        self._article_stems: dict[str, set[str]] = {}
        self._sentences: dict[str, list[Span]] = {}

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

    def candidates(self, question: str, qvec: np.ndarray | None, hits: list[Hit]
                   ) -> list[Candidate]:
        """One Candidate per sentence of the top passages (a sentence shared by overlapping
        passages counts once, for the better-ranked passage)."""
        top = hits[:self.calibration.passages]
        if not top:
            return []
        q = list(dict.fromkeys(stems(question)))
        q_set = set(q)
        weights = {t: self.idf.get(t, self.max_idf) for t in q}
        total = sum(weights.values()) or 1.0
        terms = Terms(question, weights, total)
        q_pairs = set(zip(q, q[1:])) if len(q) > 1 else set()
        q_pref = {t[:PREFIX]: w for t, w in weights.items()}
        kind = question_type(question)
        scores = [h.score for h in top]
        lo, hi = min(scores), max(scores)
        vectors = self.index.vectors
        assert vectors is not None, "a loaded index has its vectors"
        pcos = (vectors[[h.passage.pid for h in top]] @ qvec if qvec is not None
                else np.zeros(len(top)))
        out: list[Candidate] = []
        seen = set()
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
                out.append(Candidate(hit, (a, b), text, kind, j, {
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
                }, terms))
        return out

    def sentence_score(self, c: Candidate) -> float:
        return self.calibration.sentence.score(c.features)

    def confidence_features(self, best: Candidate, scored: list[tuple[float, Candidate]]
                            ) -> dict[str, float]:
        """Question-level features of the winning sentence, for the abstention model."""
        others = [s for s, c in scored if c.doc_id != best.doc_id]
        article = self.article_stems(best.doc_id)
        weights, total = best.terms.weights, best.terms.total
        doc = best.doc_id
        spans = best.hit.passage.sentences
        j = best.index
        near = set().union(*(self.sentence_stems(doc, a, b) for a, b in spans[max(0, j - 1):j + 2]))
        near_pref = {t[:PREFIX] for t in near}
        missing = [w for t, w in weights.items() if t not in near and t[:PREFIX] not in near_pref]
        a, b = spans[max(0, j - 1)][0], spans[min(len(spans) - 1, j + 1)][1]
        window_text = self.index.articles[doc].text[a:b]
        numbers = _DIGITS.findall(best.terms.question)
        return {
            "best": scored[0][0],
            "window": 1.0 - sum(missing) / total,
            "maxmiss": max(missing, default=0.0) / self.max_idf,
            "nummiss": (sum(n not in window_text for n in numbers) / len(numbers)) if numbers else 0.0,
            "margin": scored[0][0] - (max(others) if others else scored[0][0] - 1.0),
            "pcos": best.features["pcos"],
            "wov": best.features["wov"],
            "cover": sum(w for t, w in weights.items() if t in article) / total,
            "oov": sum(w for t, w in weights.items() if t not in self.idf) / total,
            "type_missing": 1.0 if best.kind and not best.features["type"] else 0.0,
            "untyped": best.features["untyped"],
        }

    def pick(self, question: str, qvec: np.ndarray | None, hits: list[Hit]) -> Picked:
        """Re-order the top passages by their best sentence, and take that sentence as answer.

        Args:
            question: the question as asked (after follow-up resolution).
            qvec: its unit vector (None: passage cosine counts as 0).
            hits: ranked hits from the retriever.

        Returns:
            Picked: hits (top `calibration.passages` re-ordered, ranks renumbered), the answer
            (None when there are no sentences), its confidence in [0, 1] (0 when the answer is
            ruled out: it speaks of other years than the question asks about), and the best
            sentence of each passage read.
        """
        cands = self.candidates(question, qvec, hits) if stems(question) else []
        if not cands:  # no sentences, or a question without one content word ("the of and")
            return Picked(tuple(hits), None, 0.0)
        scored = sorted(((self.sentence_score(c), c) for c in cands), key=lambda x: -x[0])
        by_features = scored
        read: dict[str, float] = {}
        if self.reader is not None:
            scored, read = self.read(question, scored)
        best_of: dict[int, float] = {}
        sentences: dict[int, Span] = {}
        for s, c in scored:
            best_of.setdefault(c.hit.passage.pid, s)
            sentences.setdefault(c.hit.passage.pid, c.span)
        top = hits[:self.calibration.passages]
        order = sorted(top, key=lambda h: (-best_of.get(h.passage.pid, -math.inf), h.rank))
        reranked = rescore(order, best_of, hits[len(top):])
        new_rank = {h.passage.pid: h.rank for h in reranked}
        best = scored[0][1]
        if best is not by_features[0][1]:  # the feature model's view, with the reader's winner first
            by_features = [x for x in by_features if x[1] is best] + \
                [x for x in by_features if x[1] is not best]
        features = self.confidence_features(best, by_features)
        z = self.calibration.confidence.score(features)
        reader_calibration = self.reader.calibration if self.reader is not None else None
        if reader_calibration is not None:
            features = {**features, **read, "feature_z": z}
            confidence = reader_calibration.probability(features)
        else:
            confidence = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
        a, b = self.run(best, scored)
        text = self.index.articles[best.doc_id].text[a:b]
        ruled_out = (year_clash(question, text) or no_year_named(question, text)
                     or no_shared_word(features))
        if ruled_out:
            confidence = 0.0
        # A count: the number the question's words point at, anywhere in the snippet; else the
        # first span of the asked-for kind in the best sentence, then in the snippet.
        local = asked_number(text, question) if best.kind == "number" else None
        if local is None:
            local = entity_span(best.text, best.kind, question)
            if local:
                local = (local[0] + best.span[0] - a, local[1] + best.span[0] - a)
            else:
                local = entity_span(text, best.kind, question)
        hit = best.hit
        answer = Answer(text=text, doc_id=hit.passage.doc_id, char_start=a, char_end=b,
                        passage_rank=new_rank[hit.passage.pid], confidence=round(confidence, 4),
                        highlight=(a + local[0], a + local[1]) if local else None)
        return Picked(tuple(reranked), answer, confidence, sentences, features, ruled_out)

    @property
    def threshold(self) -> float:
        """Abstain below this confidence."""
        if self.reader is not None and self.reader.calibration is not None:
            return self.reader.calibration.threshold
        return self.calibration.threshold

    def reading(self, c: Candidate) -> tuple[str, str, str, str]:
        """What the reader reads of a candidate: its article's title, the sentence, and the
        article's sentences just before and after it ("" at the body's edges). News paragraphs
        are often one sentence long, so the neighbours are the article's, not the passage's."""
        article = self.index.articles[c.doc_id]
        spans = self.article_sentences(c.doc_id)
        a, b = c.span
        i = bisect.bisect_right(spans, (a, a)) - 1  # the last sentence that starts before a
        while i >= 0 and spans[i][1] > a:
            i -= 1
        j = bisect.bisect_left(spans, (b, b))  # the first that starts at or after b
        before = article.text[slice(*spans[i])] if i >= 0 else ""
        after = article.text[slice(*spans[j])] if j < len(spans) else ""
        return article.title, c.text, before, after

    def article_sentences(self, doc_id: str) -> list[Span]:
        """The sentence spans of an article's body paragraphs, in order (kept for the last
        ARTICLE_CACHE articles read)."""
        got = self._sentences.get(doc_id)
        if got is None:
            if len(self._sentences) >= ARTICLE_CACHE:
                self._sentences.clear()
            article = self.index.articles[doc_id]
            got = [s for a, b in article.body or ((0, len(article.text)),)
                   for s in sentences(article.text, a, b)]
            self._sentences[doc_id] = got
        return got

    def read(self, question: str, scored: list[tuple[float, Candidate]]
             ) -> tuple[list[tuple[float, Candidate]], dict[str, float]]:
        """The reader re-reads the best candidates by feature score (as many as its calibration
        `reads`).

        Returns:
            every candidate with its combined score, best first (those the reader did not read
            score as if it gave them one less than its lowest logit), and the reader's
            confidence features (its logits for the winner and the runner-up).
        """
        assert self.reader is not None and self.reader.calibration is not None
        rc = self.reader.calibration
        top = scored[:rc.reads([s for s, _ in scored[:rc.candidates]])]
        logits = self.reader.score(question, [self.reading(c) for _, c in top])
        floor = float(logits.min()) - 1.0
        combined = [(rc.feature * s + rc.reader * float(x), i, c, float(x))
                    for i, ((s, c), x) in enumerate(zip(top, logits))]
        combined += [(rc.feature * s + rc.reader * floor, len(top) + i, c, floor)
                     for i, (s, c) in enumerate(scored[len(top):])]
        combined.sort(key=lambda x: (-x[0], x[1]))
        second = max((x[3] for x in combined[1:] if x[1] < len(top)), default=floor)
        return ([(s, c) for s, _, c, _ in combined],
                {"read_best": combined[0][3], "read_second": second})

    def run(self, best: Candidate, scored: list[tuple[float, Candidate]]) -> Span:
        """The shortest run of adjacent sentences around the best one (at most `max_run`) that
        holds `run_mass` of the probability that a sentence answers (a softmax over all
        candidates); the best sentence alone when no run reaches it.

        A lone best sentence with 0.4 of the mass and a next sentence with 0.35 give a run of two
        when run_mass is 0.6.
        """
        max_run, need = self.calibration.max_run, self.calibration.run_mass
        if max_run <= 1:
            return best.span
        top = scored[0][0]
        weights = [math.exp(s - top) for s, _ in scored]
        total = sum(weights)
        doc = best.doc_id
        mass = {c.span: w / total for w, (_, c) in zip(weights, scored) if c.doc_id == doc}
        spans = best.hit.passage.sentences
        j = best.index
        for length in range(1, max_run + 1):
            runs = [spans[i:i + length] for i in range(max(0, j - length + 1), j + 1)
                    if i + length <= len(spans)]
            if not runs:
                break
            got = max(runs, key=lambda r: sum(mass.get(s, 0.0) for s in r))
            if sum(mass.get(s, 0.0) for s in got) >= need:
                return got[0][0], got[-1][1]
        return best.span
