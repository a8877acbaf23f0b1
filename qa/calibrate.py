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
import sys
from pathlib import Path

import numpy as np

from .answer import (CONFIDENCE_FEATURES, PACKAGED_CALIBRATION, SENTENCE_FEATURES, Calibration,
                     Picker, packaged_calibration)
from .evaluation.data import Question, load_questions, select
from .settings import UserError


def gather(qa, questions: list[Question], retriever: str, qvecs: np.ndarray | None = None):
    """Per question: (question, candidate feature dicts) from the engine's own retrieval."""
    if qvecs is None:
        qvecs = qa.encoder.encode([q.question for q in questions])
    out = []
    for q, qvec in zip(questions, qvecs):
        hits = qa.retriever.search(q.question, k=qa.calibration.passages, method=retriever,
                                   qvec=qvec)
        out.append((q, qa.picker.candidates(q.question, qvec, hits)))
    return out


def fit_logistic(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], weight=None,
                 C: float = 1.0) -> dict:
    """{"bias", "weights": {name: coef}} of an L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        raise UserError("calibration needs both positive and negative examples; add answerable "
                        "and unanswerable questions")
    m = LogisticRegression(C=C, max_iter=2000).fit(X, y, sample_weight=weight)
    return {"bias": round(float(m.intercept_[0]), 5),
            "weights": {n: round(float(c), 5) for n, c in zip(names, m.coef_[0])}}


def sentence_data(gathered) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of answerable questions that have at least one answer-bearing candidate, with the
    question's number as group."""
    X, y, g = [], [], []
    for n, (q, cands) in enumerate(gathered):
        if not q.answerable or not cands:
            continue
        labels = [any(a in c["text"] for a in q.answers) for c in cands]
        if not any(labels) or all(labels):
            continue  # nothing to learn from a question whose candidates all agree
        for c, lab in zip(cands, labels):
            X.append([c[f] for f in SENTENCE_FEATURES])
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


def confidence_rows(picker: Picker, gathered) -> list[tuple[dict, bool]]:
    """(confidence features of the winning sentence, answerable) per question with candidates;
    a question without candidates always abstains and is left out."""
    rows = []
    for q, cands in gathered:
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


def calibrate(sets, retriever: str = "hybrid", max_wrong: float = 0.02, log=print,
              qvecs=None) -> dict:
    """Fit both models on the engines' own retrieval and return the calibration dict.

    Args:
        sets: (engine, questions) pairs; a question asked of an index that does not answer it
            (unanswerable, or about another corpus) has answerable=False.
        retriever: the retriever whose hits train the models.
        max_wrong: the share of answerable training questions allowed to abstain.
        qvecs: optional question vectors, one array per set (saves encoding them again).
    """
    base = Calibration.from_dict(packaged_calibration())
    gathered = [gather(qa, qs, retriever, None if qvecs is None else qvecs[i])
                for i, (qa, qs) in enumerate(sets)]
    X, y, groups = sentence_data([g for gs in gathered for g in gs])
    sentence = fit_listwise(X, y, groups, SENTENCE_FEATURES)
    log(f"sentence model on {len(X)} sentences: {sentence}")
    cal = Calibration(sentence=sentence, confidence=base.confidence, threshold=base.threshold,
                      passages=base.passages, max_run=base.max_run, run_mass=base.run_mass)
    rows, set_of = [], []
    for n, ((qa, _), gs) in enumerate(zip(sets, gathered)):
        qa.picker.calibration = cal
        got = confidence_rows(qa.picker, gs)
        rows += got
        set_of += [n] * len(got)
    Xc = np.array([[r[f] for f in CONFIDENCE_FEATURES] for r, _ in rows])
    yc = np.array([int(a) for _, a in rows])
    set_of = np.array(set_of)
    # Every (set, class) weighs the same in total, so a small set of hand-written questions
    # counts as much as thousands of SQuAD ones, and the few unanswerable ones as much as the rest.
    wc = np.zeros(len(yc))
    cells = {(s, y) for s, y in zip(set_of.tolist(), yc.tolist())}
    for s, y in cells:
        mask = (set_of == s) & (yc == y)
        wc[mask] = len(yc) / (len(cells) * mask.sum())
    confidence = fit_logistic(Xc, yc, CONFIDENCE_FEATURES, wc)
    z = confidence["bias"] + Xc @ np.array([confidence["weights"][f] for f in CONFIDENCE_FEATURES])
    conf = 1 / (1 + np.exp(-z))
    # The threshold keeps wrong abstentions within max_wrong in every set, not only on average.
    threshold = min(choose_threshold(conf[set_of == s], yc[set_of == s] == 1, max_wrong)
                    for s in sorted(set(set_of.tolist())) if yc[set_of == s].any())
    log(f"confidence model on {len(yc)} questions ({int(yc.sum())} answerable): {confidence}; "
        f"threshold {threshold:.4f}")
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
    p.add_argument("--max-wrong-abstain", type=float, default=0.02)
    p.add_argument("--out", type=Path, default=PACKAGED_CALIBRATION,
                   help="where to write it (default: the packaged qa/calibration.json, copied "
                        "into every index built afterwards)")


def run(args) -> int:
    from .engine import QA
    from .settings import default_settings

    engines: dict[str, object] = {}

    def engine(path: str):
        if path not in engines:
            engines[path] = QA.open(default_settings(index_dir=Path(path)))
        return engines[path]

    if args.limit < 4:
        raise UserError(f"--limit must be at least 4, got {args.limit}")
    sets = []
    for values in args.on:
        if len(values) not in (2, 3):
            raise UserError(f"--on takes INDEX QUESTIONS [DOC_PATTERN], got {values}")
        qs = load_questions(Path(values[1]))
        answerable = select(qs, values[2] if len(values) == 3 else ".", args.limit)
        sets.append((engine(values[0]), [q for q in qs if not q.answerable] + answerable))
    for values in args.offtopic:
        if len(values) not in (2, 3):
            raise UserError(f"--offtopic takes INDEX QUESTIONS [DOC_PATTERN], got {values}")
        qs = select(load_questions(Path(values[1])), values[2] if len(values) == 3 else None,
                    args.limit // 4)
        sets.append((engine(values[0]), [Question(q.id, q.question) for q in qs]))
    cal = calibrate(sets, args.retriever, args.max_wrong_abstain,
                    log=lambda m: print(m, file=sys.stderr))
    args.out.write_text(json.dumps(cal, indent=2) + "\n")
    print(f"wrote {args.out}; rebuild indexes (`qa build`) to copy it into their manifests")
    return 0
