"""Fit the answer picker and the abstention model (`qa calibrate`); write qa/calibration.json.

Two logistic regressions, stored as plain JSON coefficients (never pickled):
- sentence: does this sentence of the top passages contain a gold answer? Trained on answerable
  questions (e.g. the SQuAD tuning half, articles 0-23, and tests/questions.jsonl).
- confidence: is the question answerable from the articles? Trained on the winners' features of
  answerable questions (label 1), of unanswerable questions (label 0), and of questions asked of
  an index about something else (`--negatives-index`, label 0).
The threshold is the highest confidence that keeps answerable questions that wrongly abstain at
or below `--max-wrong-abstain` on the training questions.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .answer import (
    CONFIDENCE_FEATURES,
    PACKAGED_CALIBRATION,
    SENTENCE_FEATURES,
    Calibration,
    Candidate,
    Picker,
    packaged_calibration,
)
from .evaluation.data import Question, load_questions, select
from .retrieve import Filters
from .settings import UserError
from .types import Hit, Linear

if TYPE_CHECKING:
    from .engine import QA
    from .reader import Reader, ReaderCalibration

# Per question: the question, its candidate sentences, the hits they came from, its vector.
Gathered = tuple[Question, list[Candidate], list[Hit], np.ndarray]
# The reader skips the candidates it could overturn only by an unusually wide margin: the reach
# is fitted so that its winner is the one of reading all for this share of each tuning set's
# questions (README, "The reader": "Reading as far as it can matter").
KEEP_WINNER = 0.995


def gather(qa: QA, questions: list[Question], retriever: str,
           qvecs: np.ndarray | None = None) -> list[Gathered]:
    """Per question: (question, candidates, hits, question vector) from the engine's own
    retrieval; a question with a `given` article is asked of it alone."""
    if qvecs is None:
        qvecs = qa.encoder.encode([q.question for q in questions])
    out: list[Gathered] = []
    for q, qvec in zip(questions, qvecs):
        hits = qa.retriever.search(q.question, k=qa.calibration.passages, method=retriever,
                                   qvec=qvec, filters=Filters(doc=q.given) if q.given else None)
        out.append((q, qa.picker.candidates(q.question, qvec, hits), hits, qvec))
    return out


def fit_logistic(X: np.ndarray, y: np.ndarray, names: tuple[str, ...],
                 weight: np.ndarray | None = None, C: float = 1.0) -> dict:
    """{"bias", "weights": {name: coef}} of an L2 logistic regression, the intercept unpenalised.

    The same problem and stopping rule as scikit-learn's LogisticRegression(C=C, max_iter=2000)
    with its default lbfgs solver: the weighted mean log loss plus ||w||^2 / (2 C sum(weight)),
    minimised from zeros by L-BFGS-B with gtol 1e-4, so refitting reproduces the shipped
    coefficients.
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    if len(set(y.tolist())) < 2:
        raise UserError("calibration needs both positive and negative examples; add answerable "
                        "and unanswerable questions")
    n, d = X.shape
    sw = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    l2 = 1.0 / (C * float(sw.sum()))
    sw = sw / sw.sum()
    target = y.astype(float)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, bias = theta[:-1], theta[-1]
        z = X @ coef + bias
        value = -np.sum(sw * (target * log_expit(z) + (1 - target) * log_expit(-z)))
        residual = sw * (expit(z) - target)
        return (float(value + 0.5 * l2 * coef @ coef),
                np.append(X.T @ residual + l2 * coef, residual.sum()))

    theta = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                     options={"maxiter": 2000, "maxls": 50, "gtol": 1e-4,
                              "ftol": 64 * np.finfo(float).eps}).x
    return {"bias": round(float(theta[-1]), 5),
            "weights": {k: round(float(c), 5) for k, c in zip(names, theta[:-1])}}


def sentence_data(gathered: list[Gathered]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of answerable questions that have at least one answer-bearing candidate, with the
    question's number as group."""
    X, y, g = [], [], []
    for n, (q, cands, *_) in enumerate(gathered):
        if not q.answerable or not cands:
            continue
        labels = [any(a in c.text for a in q.answers) for c in cands]
        if not any(labels) or all(labels):
            continue  # nothing to learn from a question whose candidates all agree
        for c, lab in zip(cands, labels):
            X.append([c.features[f] for f in SENTENCE_FEATURES])
            y.append(int(lab))
            g.append(n)
    return np.array(X), np.array(y), np.array(g)


def fit_listwise(X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: tuple[str, ...],
                 l2: float = 1e-3) -> dict:
    """Weights of a conditional logit: per question, softmax over its candidate sentences,
    maximising the probability of the answer-bearing ones. Only the ranking matters, so the
    bias is 0.

    Returns:
        {"bias": 0.0, "weights": {name: coef}}.
    """
    from scipy.optimize import minimize

    _, g = np.unique(groups, return_inverse=True)
    n = g.max() + 1
    pos = y.astype(bool)

    def loss(w):
        s = X @ w
        m = np.full(n, -np.inf)
        np.maximum.at(m, g, s)
        e = np.exp(s - m[g])
        all_sum = np.bincount(g, e, n)
        pos_sum = np.bincount(g, e * pos, n)
        value = -np.sum(np.log(pos_sum) - np.log(all_sum)) / n + l2 * w @ w
        p_all, p_pos = e / all_sum[g], np.where(pos, e / np.maximum(pos_sum[g], 1e-300), 0)
        grad = X.T @ (p_all - p_pos) / n + 2 * l2 * w
        return value, grad

    w = minimize(loss, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B").x
    return {"bias": 0.0, "weights": {k: round(float(c), 5) for k, c in zip(names, w)}}


def confidence_rows(picker: Picker, gathered: list[Gathered]
                    ) -> list[tuple[dict[str, float], bool]]:
    """(confidence features of the winning sentence, answerable) per question with candidates;
    a question without candidates always abstains and is left out."""
    rows = []
    for q, cands, *_ in gathered:
        if not cands:
            continue
        scored = sorted(((picker.sentence_score(c), c) for c in cands), key=lambda x: -x[0])
        rows.append((picker.confidence_features(scored[0][1], scored), q.answerable))
    return rows


def choose_threshold(conf: np.ndarray, answerable: np.ndarray, max_wrong: float) -> float:
    """The largest threshold with at most `max_wrong` of answerable questions below it."""
    pos = np.sort(conf[answerable])
    if len(pos) == 0:
        return 0.5
    allowed = int(np.floor(max_wrong * len(pos)))
    return float(np.nextafter(pos[allowed], -np.inf)) if allowed < len(pos) else float(pos[-1])


def fit_confidence(rows: list[tuple[dict[str, float], bool]], set_of: list[int],
                   names: tuple[str, ...], max_wrong: float | Sequence[float],
                   log: Callable[[str], object] = print) -> tuple[dict, float]:
    """The abstention model over `names` and its threshold.

    Every (set, class) weighs the same in total, so a small set of hand-written questions counts
    as much as thousands of SQuAD ones, and the few unanswerable ones as much as the rest. The
    threshold keeps wrong abstentions within max_wrong in every set, not only on average;
    max_wrong is one share for every set, or one per set (in set order; a set past the end, such
    as an off-topic one, has no answerable questions to keep).
    """
    X = np.array([[r[f] for f in names] for r, _ in rows])
    y = np.array([int(a) for _, a in rows])
    sets = np.array(set_of)
    w = np.zeros(len(y))
    cells = {(s, c) for s, c in zip(sets.tolist(), y.tolist())}
    for s, c in cells:
        mask = (sets == s) & (y == c)
        w[mask] = len(y) / (len(cells) * mask.sum())
    model = fit_logistic(X, y, names, w)
    conf = 1 / (1 + np.exp(-(model["bias"] + X @ np.array([model["weights"][f] for f in names]))))
    caps = list(max_wrong) if isinstance(max_wrong, Sequence) else [max_wrong]
    threshold = min(choose_threshold(conf[sets == s], y[sets == s] == 1,
                                     caps[s] if len(caps) > 1 else caps[0])
                    for s in sorted(set(sets.tolist())) if y[sets == s].any())
    for s in sorted(set(sets.tolist())):
        ans, abstain = y[sets == s] == 1, conf[sets == s] < threshold
        log(f"  set {s}: {ans.sum()} answerable, {abstain[ans].mean() if ans.any() else 0:.3f} "
            f"wrongly abstain; {(~ans).sum()} unanswerable, "
            f"{abstain[~ans].mean() if (~ans).any() else 0:.3f} abstain")
    return model, threshold


class _Memo:
    """A reader that remembers its scores: calibration reads each candidate once."""

    def __init__(self, reader: Reader, calibration: ReaderCalibration | None = None):
        self.reader, self.calibration = reader, calibration
        self.cache: dict[tuple[str, tuple[str, ...]], float] = {}

    def score(self, question: str, pairs: Sequence[tuple[str, ...]]) -> np.ndarray:
        missing = [p for p in pairs if (question, p) not in self.cache]
        for p, x in zip(missing, self.reader.score(question, missing)):
            self.cache[(question, p)] = float(x)
        return np.array([self.cache[(question, p)] for p in pairs], dtype=np.float32)


def winner(s: np.ndarray, x: np.ndarray, feature: float, reader: float) -> int:
    """The candidate that wins when the reader reads every one: the first of equals, as
    Picker.read sorts them."""
    return int(np.argmax(feature * s + reader * x))


def fit_reach(rows: list[tuple[int, np.ndarray, np.ndarray]], feature: float, reader: float,
              keep: float = KEEP_WINNER) -> float:
    """The fewest logits of reach (ReaderCalibration.reads) with which the reader's winner is
    the one it picks reading every candidate, for `keep` of each set's questions.

    Args:
        rows: per question, its set, its candidates' feature scores (best first) and their
            reader logits.

    >>> rows = [(0, np.array([3.0, 1.0]), np.array([0.0, 3.0])),  # the second wins: 2 logits
    ...         (0, np.array([3.0, 2.0]), np.array([1.0, 0.0]))]  # the first wins: none
    >>> fit_reach(rows, 1.0, 1.0, keep=0.5), fit_reach(rows, 1.0, 1.0, keep=1.0)
    (0.0, 2.0)
    """
    if reader <= 0 or feature <= 0:
        return math.inf  # the feature score does not rank them as the reach assumes: read all
    gaps: dict[int, list[float]] = {}  # the winner's feature score below the best one's
    for n, s, x in rows:
        gaps.setdefault(n, []).append(float(s[0] - s[winner(s, x, feature, reader)]))
    gap = max(float(np.quantile(v, keep, method="inverted_cdf")) for v in gaps.values())
    reach = math.ceil(feature * gap / reader * 100) / 100
    while feature * gap > reader * reach:  # float error: reads' own test must take it in
        reach = round(reach + 0.01, 2)
    return reach


def calibrate_reader(sets, reader, candidates: int, retriever: str = "hybrid",
                     max_wrong: float | Sequence[float] = 0.02, log=print,
                     reach: float | None = None):
    """Fit how the reader's logits join the feature score, how far down it reads, and the
    reader's abstention model.

    Args:
        sets: (engine, questions) pairs, as for `calibrate`; the engines' pickers keep their
            feature calibration.
        reader: a loaded qa.reader.Reader.
        candidates: how many of the feature picker's best sentences the reader reads.
        reach: ReaderCalibration.reach; None fits it (`fit_reach`), math.inf reads every
            candidate.

    Returns:
        the ReaderCalibration.
    """
    from .reader import CONFIDENCE_FEATURES as READER_FEATURES
    from .reader import ReaderCalibration

    memo = _Memo(reader)
    gathered = [gather(qa, qs, retriever) for qa, qs in sets]
    # Per question with candidates: its set, the question, its best candidates by feature score
    # and their reader logits.
    read = []
    for n, ((qa, _), gs) in enumerate(zip(sets, gathered)):
        for q, cands, *_ in gs:
            top = sorted(((qa.picker.sentence_score(c), c) for c in cands),
                         key=lambda x: -x[0])[:candidates]
            if top:
                read.append((n, q, top, memo.score(q.question,
                                                   [qa.picker.reading(c) for _, c in top])))
    X, y, g = [], [], []
    for m, (n, q, top, logits) in enumerate(read):
        labels = [any(a in c.text for a in q.answers) for _, c in top]
        if not q.answerable or not any(labels) or all(labels):
            continue
        for (s, _), x, lab in zip(top, logits, labels):
            X.append([s, float(x)])
            y.append(int(lab))
            g.append(m)
    combine = fit_listwise(np.array(X), np.array(y), np.array(g), ("feature", "reader"))
    log(f"combined sentence score on {len(X)} sentences: {combine}")
    feature, weight = combine["weights"]["feature"], combine["weights"]["reader"]
    scores = [(n, np.array([s for s, _ in top]), logits) for n, _, top, logits in read]
    fitted = reach is None
    if reach is None:
        reach = fit_reach(scores, feature, weight)
    cal = ReaderCalibration(sha256=reader.sha256, candidates=candidates, feature=feature,
                            reader=weight,
                            confidence=Linear(0.0, READER_FEATURES, (0.0,) * len(READER_FEATURES)),
                            threshold=0.5, reach=reach)
    if scores:
        mean = np.mean([cal.reads(list(s)) for _, s, _ in scores])
        kept = np.mean([cal.reads(list(s)) > winner(s, x, feature, weight) for _, s, x in scores])
        log(f"reach {reach} logits{' (fitted)' if fitted else ''}: the reader reads {mean:.2f} "
            f"of at most {candidates} sentences a question on average, and its winner is the "
            f"one of reading them all for {kept:.1%} of the tuning questions")
    memo.calibration = cal
    rows, set_of = [], []
    for n, ((qa, _), gs) in enumerate(zip(sets, gathered)):
        qa.picker.reader = memo
        for q, cands, hits, qvec in gs:
            picked = qa.picker.pick(q.question, qvec, hits) if cands else None
            if picked is not None and picked.answer is not None:  # None: nothing was read
                rows.append((picked.features, q.answerable))
                set_of.append(n)
        qa.picker.reader = None
    confidence, threshold = fit_confidence(rows, set_of, READER_FEATURES, max_wrong, log)
    log(f"reader confidence on {len(rows)} questions ({sum(a for _, a in rows)} answerable): "
        f"{confidence}; threshold {threshold:.4f}")
    return ReaderCalibration(sha256=reader.sha256, candidates=candidates, feature=cal.feature,
                             reader=cal.reader,
                             confidence=Linear.from_json(confidence, READER_FEATURES),
                             threshold=round(threshold, 5), reach=reach)


def calibrate(sets, retriever: str = "hybrid", max_wrong: float | Sequence[float] = 0.02,
              log=print, qvecs=None) -> dict:
    """Fit both models on the engines' own retrieval and return the calibration dict.

    Args:
        sets: (engine, questions) pairs; a question asked of an index that does not answer it
            (unanswerable, or about another corpus) has answerable=False.
        retriever: the retriever whose hits train the models.
        max_wrong: the share of answerable training questions allowed to abstain, for every set
            or one per set.
        qvecs: optional question vectors, one array per set (saves encoding them again).
    """
    base = packaged_calibration()
    gathered = [gather(qa, qs, retriever, None if qvecs is None else qvecs[i])
                for i, (qa, qs) in enumerate(sets)]
    X, y, groups = sentence_data([g for gs in gathered for g in gs])
    sentence = fit_listwise(X, y, groups, SENTENCE_FEATURES)
    log(f"sentence model on {len(X)} sentences: {sentence}")
    cal = Calibration(sentence=Linear.from_json(sentence, SENTENCE_FEATURES),
                      confidence=base.confidence, threshold=base.threshold,
                      passages=base.passages, max_run=base.max_run, run_mass=base.run_mass)
    rows, set_of = [], []
    for n, ((qa, _), gs) in enumerate(zip(sets, gathered)):
        qa.picker.calibration = cal
        got = confidence_rows(qa.picker, gs)
        rows += got
        set_of += [n] * len(got)
    confidence, threshold = fit_confidence(rows, set_of, CONFIDENCE_FEATURES, max_wrong, log)
    log(f"confidence model on {len(rows)} questions ({sum(a for _, a in rows)} answerable): "
        f"{confidence}; threshold {threshold:.4f}")
    for qa, _ in sets:
        qa.picker.calibration = qa.calibration
    return {"passages": base.passages, "max_run": base.max_run, "run_mass": base.run_mass,
            "sentence": sentence, "confidence": confidence, "threshold": round(threshold, 5)}


# ---------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    p.add_argument("--on", nargs="+", action="append", required=True,
                   metavar=("INDEX QUESTIONS", "DOC_PATTERN"),
                   help="an index and questions about it (doc null = unanswerable); an optional "
                        "regex keeps the answerable questions whose doc matches, e.g. "
                        "'^([0-9]|1[0-9]|2[0-3])_' for the SQuAD tuning half. Repeatable")
    p.add_argument("--offtopic", nargs="+", action="append", default=[],
                   metavar=("INDEX QUESTIONS", "DOC_PATTERN"),
                   help="questions asked of an index about something else, as unanswerable; "
                        "the optional regex keeps those whose doc matches. Repeatable")
    p.add_argument("--limit", type=int, default=2000, help="answerable questions sampled per set")
    p.add_argument("--retriever", default="hybrid", choices=("dense", "bm25", "hybrid"))
    p.add_argument("--max-wrong-abstain", type=float, nargs="+", default=[0.02], metavar="SHARE",
                   help="the share of each set's answerable questions allowed to abstain: one "
                        "for every --on set, or one per --on set in their order (default 0.02)")
    p.add_argument("--reader", type=Path, metavar="DIR",
                   help="fit the reader in DIR (e.g. qa/reader) instead of the feature models; "
                        "writes DIR/calibration.json")
    p.add_argument("--candidates", type=int, default=4,
                   help="with --reader: the feature picker's best sentences it reads (default 4: "
                        "a point of snippet over 3 on the seeds and SQuAD 1.1, for about 6%% more "
                        "time an answer)")
    p.add_argument("--reach", default="auto", metavar="LOGITS",
                   help="with --reader: skip a candidate the reader could make the answer only "
                        "by out-reading the best one by more than this many logits; auto (the "
                        "default) fits it so that the answer is the one of reading them all "
                        f"for {KEEP_WINNER * 100:g}%% of each set's questions; all reads every "
                        "one")
    p.add_argument("--exclude-id", metavar="REGEX",
                   help="leave out questions whose id matches (e.g. questions kept for testing)")
    p.add_argument("--out", type=Path, default=PACKAGED_CALIBRATION,
                   help="where to write it (default: the packaged qa/calibration.json, copied "
                        "into every index built afterwards)")


def reach_option(value: str) -> float | None:
    """--reach: None for auto (fitted), math.inf for all, else a number of logits of at least 0.

    >>> reach_option("auto"), reach_option("all"), reach_option("1.5")
    (None, inf, 1.5)
    """
    if value == "auto":
        return None
    if value == "all":
        return math.inf
    try:
        reach = float(value)
    except ValueError:
        reach = -1.0
    if not 0 <= reach < math.inf:
        raise UserError(f"--reach takes auto, all or a number of logits of at least 0, got "
                        f"{value!r}", exit_code=2)
    return reach


def run(args) -> int:
    from .engine import QA
    from .settings import default_settings

    engines: dict[str, object] = {}

    def engine(path: str):
        if path not in engines:
            engines[path] = QA.open(default_settings(index_dir=Path(path), reader="none"))
        return engines[path]

    if args.limit < 4:
        raise UserError(f"--limit must be at least 4, got {args.limit}")
    if len(args.max_wrong_abstain) not in (1, len(args.on)):
        raise UserError(f"--max-wrong-abstain takes one share, or one per --on set "
                        f"({len(args.on)}), got {len(args.max_wrong_abstain)}", exit_code=2)
    if not all(0 <= share < 1 for share in args.max_wrong_abstain):
        raise UserError(f"--max-wrong-abstain shares are from 0 to below 1, got "
                        f"{' '.join(map(str, args.max_wrong_abstain))}", exit_code=2)
    reach = reach_option(args.reach)
    if args.reach != "auto" and not args.reader:
        raise UserError("--reach is for a reader's calibration: add --reader DIR", exit_code=2)
    sets = []
    for values in args.on:
        if len(values) not in (2, 3):
            raise UserError(f"--on takes INDEX QUESTIONS [DOC_PATTERN], got {values}")
        qs = [q for q in load_questions(Path(values[1]))
              if not (args.exclude_id and re.search(args.exclude_id, q.id))]
        answerable = select(qs, values[2] if len(values) == 3 else ".", args.limit)
        sets.append((engine(values[0]), [q for q in qs if not q.answerable] + answerable))
    for values in args.offtopic:
        if len(values) not in (2, 3):
            raise UserError(f"--offtopic takes INDEX QUESTIONS [DOC_PATTERN], got {values}")
        qs = select([q for q in load_questions(Path(values[1]))
                     if not (args.exclude_id and re.search(args.exclude_id, q.id))],
                    values[2] if len(values) == 3 else None, args.limit // 4)
        sets.append((engine(values[0]), [Question(q.id, q.question) for q in qs]))
    def log(m):
        print(m, file=sys.stderr)

    if args.reader:
        from .reader import CALIBRATION, Reader

        if args.candidates < 1:
            raise UserError(f"--candidates must be at least 1, got {args.candidates}")
        reader = Reader(args.reader, calibrated=False)
        fitted = calibrate_reader(sets, reader, args.candidates, args.retriever,
                                  args.max_wrong_abstain, log=log, reach=reach)
        out = args.reader / CALIBRATION
        out.write_text(json.dumps({**fitted.to_dict(), "fitted": " ".join(sys.argv[1:])},
                                  indent=2) + "\n")
        print(f"wrote {out}")
        return 0
    cal = calibrate(sets, args.retriever, args.max_wrong_abstain, log=log)
    args.out.write_text(json.dumps(cal, indent=2) + "\n")
    print(f"wrote {args.out}; rebuild indexes (`qa build`) to copy it into their manifests")
    return 0
