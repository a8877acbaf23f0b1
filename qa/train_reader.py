"""Train the reader (`qa train-reader`): SQuAD questions -> a question-sentence cross-encoder.

Data, all from ../shared/qa-train and ../shared/beir (read, never copied):
- SQuAD 1.1 train (442 articles, none of them a dev article): per question, the sentence that
  holds the answer (label 1); the paragraph's other sentence that shares most words with the
  question, and the best-sharing sentence of another paragraph of the article (label 0).
- SQuAD 2.0 dev, unanswerable questions of the training articles only (TRAIN_V2_PARITY of the
  17 articles that are not held out): the two best-sharing sentences of their paragraph (label 0).
  The other non-held-out articles tune the abstention threshold; the held-out articles (SQuAD 1.1
  dev 24-47, and the SQuAD 2.0 articles that are the same) are never read here except by
  `report`, which only scores them.

Training runs on the CPU with checkpoints (resumed when a run is cut short) and a progress bar;
the result is the float16 state of the changed layers and reader.json (see qa.reader). With
`span`, an extractive span head is trained beside the sentence head (answering pairs point at
their answer's word pieces, every other pair at [CLS]); answering reads the sentence head only,
and `report` adds the span head's figures. With `listwise`, each question's pairs are scored in
one softmax with a learned "none of these" logit instead of one by one. With `mined`, a share
of the run's pairs are the feature picker's own candidates for SQuAD 1.1 train questions asked
of an index of their articles (written by scripts/mine_pairs.py), labelled by the gold answer.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .chunk import sentences
from .settings import UserError
from .squad import (
    SQUAD_TRAIN,
    SQUAD_V2_DEV,
    held_out_titles,
    read_squad,
    title_text,
    v1_dev_articles,
    v2_split,
)
from .text import english_stemmer, picker_stopwords, stems

BASE = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Pair:
    question: str
    title: str
    sentence: str
    label: int
    before: str = ""  # the paragraph's sentences around this one (read when context > 0)
    after: str = ""
    answer: tuple[int, int] | None = None  # the gold answer's characters in `sentence` (label 1)

    def reading(self) -> tuple[str, str, str, str]:
        return self.title, self.sentence, self.before, self.after


@dataclass(frozen=True)
class TrainSettings:
    layers: int = 6
    max_length: int = 72
    batch_size: int = 32
    pairs: int = 72_000
    lr: float = 6e-5
    head_lr: float = 5e-4
    warmup: float = 0.05
    v2_repeat: int = 2
    seed: int = 13
    limit_questions: int = 0  # 0 = all
    perturb: float = 0.5  # share of answerable questions that also give a swapped-name negative
    init: str = ""  # a reader folder to start from instead of the base weights
    context: int = 0  # words of each neighbouring sentence the reader reads (qa.reader.pair_text)
    contrast: float = 0.0  # share of answerable questions that also give an antonym/negation one
    reword: float = 0.0  # share that also give one with an ordinary word swapped for another
    freeze: int = 0  # lower transformer layers kept as they start (the embeddings always are)
    adapter: int = 0  # LoRA rank: train low-rank adapters and the head only (0: every layer)
    # 0: SQuAD 2.0's unanswerable pairs (v2_repeat copies) are shuffled into the pool, and a run
    # sees their share of its sample (about 1,160 of 72,000). N: the run sees every one N times,
    # and SQuAD 1.1 pairs fill the rest of its `pairs`.
    v2_in_run: int = 0
    # Weight of an extractive span loss beside the sentence's (0: no span head). The span head
    # points at the gold answer's first and last word pieces in an answering pair and at [CLS]
    # in every other, as SQuAD 2.0 readers do.
    span: float = 0.0
    # Listwise with "no answer": a question's pairs are scored together, with a learned logit for
    # "none of these", in one softmax (SQuAD 2.0's no-answer training), instead of each pair alone.
    listwise: bool = False
    # A file of pairs the way the product meets them (scripts/mine_pairs.py: the feature picker's
    # candidates for SQuAD 1.1 train questions asked of an index of their articles), and the
    # share of the run's pairs drawn from it; the rest come from the pool as before.
    mined: str = ""
    mined_share: float = 0.5
    # Distillation: a trained reader (the teacher) scores every training pair, and the loss is
    # (1 - w) x the labels' + w x the teacher's probabilities' (binary cross-entropy to each).
    distill: str = ""
    distill_weight: float = 0.5
    # The `init` reader's layers the model starts from, one per layer it keeps ("0,2,4": a
    # 3-layer reader from every other layer of a 6-layer one); empty: its lowest `layers`.
    init_layers: str = ""


def split_paragraph(context: str) -> list[tuple[int, int]]:
    return sentences(context, 0, len(context))


def _overlap(q: set[str], s: set[str]) -> int:
    return len(q & s)


# A name (capitalised words, not at a sentence start) or a number.
_NAME_OR_NUMBER = re.compile(r"\b(?:\d[\d,.]*\d|\d|[A-Z][\w-]+(?: [A-Z][\w-]+)*)\b")


def names_and_numbers(text: str) -> tuple[set[str], set[str]]:
    """The names and the numbers of a text, leaving out capitalised sentence starts."""
    names: set[str] = set()
    numbers: set[str] = set()
    for m in _NAME_OR_NUMBER.finditer(text):
        if m.start() == 0 or text[max(0, m.start() - 2):m.start()].rstrip() in (".", "?", "!", ""):
            if not m.group()[0].isdigit():
                continue
        (numbers if m.group()[0].isdigit() else names).add(m.group())
    return names, numbers


def swapped_question(question: str, sentence: str, names: set[str], numbers: set[str],
                     rng: random.Random) -> str | None:
    """The question with one of its names or numbers that `sentence` holds replaced by another
    of the article's that `sentence` does not hold: a near miss the sentence no longer answers
    ("How many ... in 2018?" asked of the 2020 figure). None when there is nothing to swap."""
    q_names, q_numbers = names_and_numbers(question)
    spots = sorted(t for t in q_names | q_numbers if t in sentence)
    if not spots:
        return None
    old = rng.choice(spots)
    pool = sorted(t for t in (numbers if old[0].isdigit() else names)
                  if t not in sentence and t not in question)
    if old[0].isdigit():  # a year for a year, a count for a count where the article has one
        pool = [t for t in pool if len(t) == len(old)] or pool
    if not pool:
        return None
    return re.sub(rf"\b{re.escape(old)}\b", rng.choice(pool), question, count=1)


# Words a question can be turned into its opposite with. SQuAD 2.0's writers made many of its
# unanswerable questions so, from a sentence that answers the question before the change: an
# antonym of a word the sentence holds, or a negation (Rajpurkar et al. 2018 count 20% and 9%).
_OPPOSITES = [("first", "last"), ("largest", "smallest"), ("biggest", "smallest"),
              ("highest", "lowest"), ("most", "least"), ("more", "less"), ("before", "after"),
              ("earliest", "latest"), ("oldest", "youngest"), ("longest", "shortest"),
              ("maximum", "minimum"), ("increase", "decrease"), ("increased", "decreased"),
              ("rose", "fell"), ("north", "south"), ("east", "west"),
              ("northern", "southern"), ("eastern", "western"), ("upper", "lower"),
              ("above", "below"), ("won", "lost"), ("win", "lose"), ("major", "minor"),
              ("majority", "minority"), ("public", "private"), ("positive", "negative"),
              ("internal", "external"), ("male", "female"), ("best", "worst"), ("early", "late"),
              ("began", "ended"), ("legal", "illegal"), ("strong", "weak"), ("high", "low"),
              ("large", "small"), ("inside", "outside"), ("modern", "ancient"),
              ("success", "failure"), ("successful", "unsuccessful"), ("allowed", "banned"),
              ("accepted", "rejected"), ("support", "oppose"), ("supported", "opposed")]
OPPOSITE = {a: b for a, b in _OPPOSITES} | {b: a for a, b in _OPPOSITES}
_COPULA = re.compile(r"\b(is|was|are|were)\b")
_NEGATION = re.compile(r"\b(not|no|never|none|nor|cannot)\b|n't\b", re.IGNORECASE)


def contrast_question(question: str, sentence: str, rng: random.Random) -> str | None:
    """The question turned into its opposite, so that `sentence`, which answered it, no longer
    does: a word the sentence holds swapped for its antonym ("What is the largest ...?" ->
    "smallest"), or else "not" after its first "is", "was", "are" or "were" ("What was built"
    -> "What was not built"). None when neither applies, or when the sentence itself negates (its answer could
    then fit the negated question).

    >>> rng = random.Random(0)
    >>> contrast_question("Which city is the largest?", "Lagos is the largest city.", rng)
    'Which city is the smallest?'
    >>> contrast_question("What was built in 1901?", "A mill was built in 1901.", rng)
    'What was not built in 1901?'
    >>> contrast_question("What was built in 1901?", "No mill was built then.", rng) is None
    True
    """
    if _NEGATION.search(question) or _NEGATION.search(sentence):
        return None
    held = {w.lower() for w in re.findall(r"[A-Za-z]+", sentence)}
    spots = [m for m in re.finditer(r"[A-Za-z]+", question)
             if m.group().lower() in OPPOSITE and m.group().lower() in held
             and OPPOSITE[m.group().lower()] not in held]
    if spots:
        m = rng.choice(spots)
        new = OPPOSITE[m.group().lower()]
        new = new.capitalize() if m.group()[0].isupper() else new
        return question[:m.start()] + new + question[m.end():]
    aux = _COPULA.search(question)
    if aux is None:
        return None
    return question[:aux.end()] + " not" + question[aux.end():]


_WORD = re.compile(r"\b[a-z]{4,}\b")  # lower-case words only: names are swapped_question's


def _ending(word: str) -> str:
    """The ending that makes a word swappable, and that its replacement must share: "s" (mostly
    plural nouns) or "ed" (past verbs and participles). Other words ("") are not swapped: without
    a part-of-speech tagger, a word with no such ending is as often a preposition or an adverb as a
    noun, and swapping it gives a question no one would ask ("What is the Dalit movement
    sometimes greed?"), which teaches the reader to spot bad grammar, not a near miss."""
    if word.endswith("ed"):
        return "ed"
    return "s" if word.endswith("s") and not word.endswith(("ss", "us", "is")) else ""


def article_words(article: dict) -> dict[str, list[tuple[str, str]]]:
    """The ordinary words of an article (lower-case, 4 letters or more, no stop word), with
    their stems, by ending (reworded_question's replacements)."""
    stop = picker_stopwords()
    stem = english_stemmer().stemWord
    found: dict[str, set[str]] = {}
    for p in article["paragraphs"]:
        for w in _WORD.findall(p["context"]):
            if w not in stop:
                found.setdefault(_ending(w), set()).add(w)
    return {e: [(w, stem(w)) for w in sorted(ws)] for e, ws in found.items()}


def reworded_question(question: str, sentence: str, words: dict[str, list[tuple[str, str]]],
                      rng: random.Random) -> str | None:
    """The question with one of its ordinary words that `sentence` holds (a plural noun or a
    past verb) replaced by another word of the article with the same ending, whose stem
    neither the sentence nor the question holds: asked of the sentence, a near miss of a kind
    that 8 of 30 SQuAD 2.0 unanswerable questions read by hand are ("How many full time
    janitors does Victoria have?" of "Victoria has about 63,519 full-time teachers."). None
    when nothing fits.

    >>> words = article_words({"paragraphs": [{"context": "Victoria has teachers and janitors."}]})
    >>> reworded_question("How many teachers does Victoria have?", "Victoria has 63,519 teachers.",
    ...                   words, random.Random(0))
    'How many janitors does Victoria have?'
    """
    stop = picker_stopwords()
    stem = english_stemmer().stemWord
    held = set(stems(sentence))
    spots = [m for m in _WORD.finditer(question)
             if _ending(m.group()) and m.group() not in stop and stem(m.group()) in held]
    if not spots:
        return None
    m = rng.choice(spots)
    asked = set(stems(question))
    pool = [w for w, st in words.get(_ending(m.group()), []) if st not in held and st not in asked]
    if not pool:
        return None
    return question[:m.start()] + rng.choice(pool) + question[m.end():]


def _pair(question: str, title: str, ctx: str, spans: list[tuple[int, int]], j: int,
          label: int, answer: dict | None = None) -> Pair:
    """Sentence j of a paragraph, with its neighbours, as a labelled pair; `answer` (a SQuAD
    answer inside that sentence) gives the pair its answer's offsets in the sentence."""
    text = [ctx[a:b] for a, b in spans]
    where = None
    if answer is not None:
        a = answer["answer_start"] - spans[j][0]
        b = a + len(answer["text"])
        if 0 <= a and b <= len(text[j]) and text[j][a:b] == answer["text"]:
            where = (a, b)
    return Pair(question, title, text[j], label, text[j - 1] if j > 0 else "",
                text[j + 1] if j + 1 < len(spans) else "", where)


def article_pairs(article: dict, rng: random.Random, *, unanswerable_only: bool = False,
                  repeat: int = 1, perturb: float = 0.0, adjacent: bool = False,
                  contrast: float = 0.0, reword: float = 0.0) -> list[Pair]:
    """Labelled pairs of one SQuAD article (see the module docstring). With `adjacent`, the
    sentences just before and after the answer are negatives too: a reader that reads
    neighbours as context sees the answer in theirs, and must learn that it is not theirs.
    `contrast` of the answerable questions also give their answer sentence as a negative of the
    question turned into its opposite (contrast_question), and `reword` of them as a negative
    of the question with one of its words swapped for another (reworded_question)."""
    title = title_text(article["title"])
    names: set[str] = set()
    numbers: set[str] = set()
    if perturb:
        for p in article["paragraphs"]:
            n, m = names_and_numbers(p["context"])
            names |= n
            numbers |= m
    vocab = article_words(article) if reword else {}
    paras = []
    for p in article["paragraphs"]:
        ctx = p["context"]
        spans = split_paragraph(ctx)
        paras.append((ctx, spans, [set(stems(ctx[a:b])) for a, b in spans]))
    out: list[Pair] = []
    for pi, (p, (ctx, spans, words)) in enumerate(zip(article["paragraphs"], paras)):
        for qa in p["qas"]:
            q = qa["question"].strip()
            qs = set(stems(q))
            ranked = sorted(range(len(spans)), key=lambda j: (-_overlap(qs, words[j]), rng.random()))
            if qa.get("is_impossible"):
                if unanswerable_only:
                    for _ in range(repeat):
                        out += [_pair(q, title, ctx, spans, j, 0) for j in ranked[:2]]
                continue
            if unanswerable_only or not qa["answers"]:
                continue
            start = qa["answers"][0]["answer_start"]
            gold = [j for j, (a, b) in enumerate(spans) if a <= start < b]
            if not gold:
                continue
            g = gold[0]
            out.append(_pair(q, title, ctx, spans, g, 1, qa["answers"][0]))
            if perturb and rng.random() < perturb:
                swapped = swapped_question(q, ctx[spans[g][0]:spans[g][1]], names, numbers, rng)
                if swapped:
                    out.append(_pair(swapped, title, ctx, spans, g, 0))
            if contrast and rng.random() < contrast:
                flipped = contrast_question(q, ctx[spans[g][0]:spans[g][1]], rng)
                if flipped:
                    out.append(_pair(flipped, title, ctx, spans, g, 0))
            if reword and rng.random() < reword:
                other = reworded_question(q, ctx[spans[g][0]:spans[g][1]], vocab, rng)
                if other:
                    out.append(_pair(other, title, ctx, spans, g, 0))
            same = [j for j in ranked if j != g]
            if same:
                out.append(_pair(q, title, ctx, spans, same[0], 0))
            if adjacent:
                out += [_pair(q, title, ctx, spans, j, 0) for j in (g - 1, g + 1)
                        if 0 <= j < len(spans) and (not same or j != same[0])]
            best, best_ov = None, -1
            for pj, (octx, ospans, owords) in enumerate(paras):
                if pj == pi:
                    continue
                for j, w in enumerate(owords):
                    ov = _overlap(qs, w)
                    if ov > best_ov:
                        best, best_ov = (octx, ospans, j), ov
            if best is not None:
                out.append(_pair(q, title, *best, 0))
    return out


def training_pairs(ts: TrainSettings, log=print) -> list[Pair]:
    """Every training pair, shuffled; refuses to read a held-out article."""
    rng = random.Random(ts.seed)
    held_out = held_out_titles()
    train = read_squad(SQUAD_TRAIN)
    clash = held_out & {a["title"] for a in train}
    if clash:
        raise UserError(f"SQuAD train shares held-out articles {sorted(clash)[:3]}; check "
                        f"../shared/qa-train/SOURCES.md")
    pairs: list[Pair] = []
    from tqdm import tqdm

    for article in tqdm(train, desc="SQuAD 1.1 train articles", file=sys.stderr):
        pairs += article_pairs(article, rng, perturb=ts.perturb, adjacent=ts.context > 0,
                               contrast=ts.contrast, reword=ts.reword)
    v2_train, _ = v2_split(read_squad(SQUAD_V2_DEV), held_out)
    v2: list[Pair] = []
    for article in v2_train:
        assert article["title"] not in held_out
        v2 += article_pairs(article, rng, unanswerable_only=True,
                            repeat=ts.v2_in_run or ts.v2_repeat)
    log(f"pairs: {len(pairs):,} from SQuAD 1.1 train, {len(v2):,} from the unanswerable "
        f"questions of {len(v2_train)} SQuAD 2.0 dev training articles")
    if ts.v2_in_run:  # all of SQuAD 2.0's, and a sample of SQuAD 1.1's for the rest of the run
        if len(v2) > ts.pairs:
            raise UserError(f"--v2-in-run {ts.v2_in_run} gives {len(v2):,} SQuAD 2.0 pairs, more "
                            f"than the run's --pairs {ts.pairs:,}; lower N or raise --pairs",
                            exit_code=2)
        rng.shuffle(pairs)
        pairs = v2 + pairs[:ts.pairs - len(v2)]
        log(f"this run: every SQuAD 2.0 pair, {len(v2):,} of {len(pairs):,}")
    else:
        pairs += v2
    if ts.mined:
        mined = read_mined(Path(ts.mined))
        rng.shuffle(mined)
        rng.shuffle(pairs)
        take = min(len(mined), int(ts.pairs * ts.mined_share))
        pairs = mined[:take] + pairs[:ts.pairs - take]
        log(f"this run: {take:,} of {len(mined):,} mined pairs "
            f"({sum(p.label for p in mined[:take]):,} answering)")
    # Shuffle by question so a question's pairs stay in one batch or nearby.
    rng.shuffle(pairs)
    return pairs


def read_mined(path: Path) -> list[Pair]:
    """The pairs scripts/mine_pairs.py wrote: one JSON object a line."""
    if not path.is_file():
        raise UserError(f"--mined {path} does not exist; write it with scripts/mine_pairs.py",
                        exit_code=2)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            out.append(Pair(row["question"], row["title"], row["sentence"], int(row["label"]),
                            row.get("before", ""), row.get("after", "")))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"--mined {path}:{number} is not a mined pair ({e}); write the file "
                            f"again with scripts/mine_pairs.py", exit_code=2) from None
    return out


def _batches(pairs: list[Pair], size: int, bucket: int = 50) -> list[list[Pair]]:
    """Batches of similar length (less padding), in an order that stays shuffled."""
    out = []
    for i in range(0, len(pairs), size * bucket):
        chunk = sorted(pairs[i:i + size * bucket], key=lambda p: len(p.question) + len(p.sentence))
        group = [chunk[j:j + size] for j in range(0, len(chunk), size)]
        random.Random(i).shuffle(group)
        out += group
    return out


def _question_batches(pairs: list[Pair], size: int) -> list[list[Pair]]:
    """Batches of whole questions, in the pairs' (shuffled) order of first appearance: each batch
    holds every pair of its questions (a reworded or swapped question is a question of its own),
    and at least `size` pairs but for the last."""
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.question, []).append(p)
    out: list[list[Pair]] = [[]]
    for group in groups.values():
        if len(out[-1]) >= size:
            out.append([])
        out[-1] += group
    return [b for b in out if b]


def listwise_loss(logits, batch: list[Pair], null):
    """Mean over the batch's questions of the cross-entropy of one softmax over the question's
    pairs and `null` ("none of these answers"), the target being its answering pair, or `null`
    when none answers."""
    import torch

    losses, i = [], 0
    while i < len(batch):
        j = i
        while j < len(batch) and batch[j].question == batch[i].question:
            j += 1
        scores = torch.cat([logits[i:j], null.reshape(1)])
        target = next((k for k in range(j - i) if batch[i + k].label), j - i)
        losses.append(torch.nn.functional.cross_entropy(scores[None], torch.tensor([target])))
        i = j
    return torch.stack(losses).mean()


def answer_tokens(pair: Pair, offsets, sequence: list[int | None]) -> tuple[int, int]:
    """The first and last word piece of a pair's answer in its tokenized input; (0, 0), [CLS],
    for a pair that does not answer, and (-100, -100), not scored, for an answering pair whose
    answer is unknown or was cut off by truncation.

    `offsets` are the tokenizer's character offsets, each within its own segment, and `sequence`
    which segment each word piece is in (None for special tokens).
    """
    if not pair.label:
        return 0, 0
    if pair.answer is None:
        return -100, -100
    from .reader import pair_text

    shift = len(pair_text(pair.title, ""))  # "title. " comes before the sentence
    a, b = pair.answer[0] + shift, pair.answer[1] + shift
    inside = [t for t, seq in enumerate(sequence) if seq == 1 and offsets[t][1] > a
              and offsets[t][0] < b]
    if not inside or offsets[inside[0]][0] > a or offsets[inside[-1]][1] < b:
        return -100, -100
    return inside[0], inside[-1]


def span_mask(input_ids, token_type_ids, attention_mask, sep_id: int):
    """Where a span may start or end: the second segment's word pieces, and [CLS] (no answer)."""
    valid = (token_type_ids == 1) & (attention_mask == 1) & (input_ids != sep_id)
    valid[:, 0] = True
    return valid


def train(out: Path, ts: TrainSettings, *, pairs: list[Pair] | None = None, log=print) -> Path:
    """Train, checkpointing to out/checkpoint.pt; write out/reader.safetensors and reader.json.

    Args:
        out: folder for the checkpoint and the model.
        ts: training settings.
        pairs: the training pairs (default: `training_pairs(ts)`, from ../shared).
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from .embed import resolve_model
    from .reader import pair_text
    from .reader_model import build_model

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(ts.seed)
    base = resolve_model(BASE)
    tok = AutoTokenizer.from_pretrained(base)
    model = build_model(base, ts.layers, span=ts.span > 0)
    ckpt = out / "checkpoint.pt"
    if ts.init and not ckpt.exists():
        from safetensors.torch import load_file

        from .reader import WEIGHTS

        start = {k: v.float() for k, v in load_file(str(Path(ts.init) / WEIGHTS)).items()}
        model.load_state_dict(picked_layers(start, ts.init_layers), strict=False)
        log(f"starting from {ts.init}" + (f", its layers {ts.init_layers}" if ts.init_layers
                                           else ""))
    peft = trainable(model, ts)
    heads = ("head.", "span.")
    head = [p for n, p in model.named_parameters() if n.startswith(heads)]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(heads)]
    log(f"training {sum(p.numel() for p in body):,} parameters and the head's "
        f"{sum(p.numel() for p in head):,}")
    null = torch.nn.Parameter(torch.zeros(()))  # the listwise "no answer" logit
    opt = torch.optim.AdamW([{"params": body, "lr": ts.lr},
                             {"params": head + ([null] if ts.listwise else []), "lr": ts.head_lr}],
                            weight_decay=0.01)
    pairs = training_pairs(ts, log) if pairs is None else pairs
    if ts.limit_questions:
        pairs = pairs[:ts.limit_questions * 3]
    total = max(1, min(ts.pairs, len(pairs)) // ts.batch_size)
    warm = max(1, int(total * ts.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    step, seconds = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, seconds = state["step"], state["seconds"]
        if "null" in state:
            null.data.fill_(state["null"])
        log(f"resumed at step {step} of {total}")
    teacher = open_teacher(ts, log)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    span_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    model.train()
    bar = tqdm(total=total, initial=step, desc="training reader", file=sys.stderr)
    t0, running = time.time(), []
    batches = (_question_batches(pairs, ts.batch_size) if ts.listwise
               else _batches(pairs, ts.batch_size))[:total]
    for batch in batches[step:]:
        enc = tok([p.question for p in batch],
                  [pair_text(*p.reading(), context=ts.context) for p in batch],
                  truncation="longest_first", max_length=ts.max_length, padding=True,
                  return_tensors="pt", return_offsets_mapping=bool(ts.span))
        y = torch.tensor([float(p.label) for p in batch])
        inputs = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        got = model(*inputs, spans=bool(ts.span))
        logits = got[0] if ts.span else got
        loss = listwise_loss(logits, batch, null) if ts.listwise else loss_fn(logits, y)
        if teacher is not None:
            feed = {k: enc[k].numpy().astype(np.int64)
                    for k in ("input_ids", "attention_mask", "token_type_ids")}
            taught = torch.sigmoid(torch.from_numpy(np.asarray(teacher.logits(feed), np.float32)))
            loss = (1 - ts.distill_weight) * loss + ts.distill_weight * loss_fn(logits, taught)
        if ts.span:
            _, start, end = got
            valid = span_mask(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"],
                              tok.sep_token_id)
            where = torch.tensor([answer_tokens(p, enc["offset_mapping"][i].tolist(),
                                                enc.sequence_ids(i)) for i, p in enumerate(batch)])
            if (where[:, 0] >= 0).any():
                loss = loss + ts.span * 0.5 * (
                    span_fn(start.masked_fill(~valid, -1e4), where[:, 0])
                    + span_fn(end.masked_fill(~valid, -1e4), where[:, 1]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        step += 1
        running.append(loss.item())
        bar.update(1)
        if step % 25 == 0:
            rate = 25 * ts.batch_size / max(time.time() - t0, 1e-9)
            seconds += time.time() - t0
            t0 = time.time()
            log(f"step {step}/{total} loss {np.mean(running[-25:]):.4f} {rate:.1f} pairs/s")
        if step % 150 == 0 or step == total:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.trained_state(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step, "null": null.item(),
                        "seconds": seconds + time.time() - t0}, tmp)
            os.replace(tmp, ckpt)
    bar.close()
    seconds += time.time() - t0
    seen = sum(map(len, batches[:step]))  # listwise batches hold whole questions: not step x size
    return export(merged(model, peft, log), out, ts, step, seconds, log, seen=seen)


_LAYER = re.compile(r"bert\.encoder\.layer\.(\d+)\.(.*)")  # a layer's weight: its number, the rest


def picked_layers(state: dict, layers: str) -> dict:
    """A reader's weights with the encoder layers named in `layers` ("0,2,4") renumbered 0, 1,
    2, ... and the others dropped; `state` itself when `layers` is empty.

    Raises:
        UserError: a layer named is not in `state` (a reader with fewer layers).
    """
    if not layers:
        return state
    new = {int(old): n for n, old in enumerate(layers.split(","))}
    held = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    if not set(new) <= held:
        raise UserError(f"--init-layers {layers}: the reader started from has layers "
                        f"{', '.join(map(str, sorted(held)))} only", exit_code=2)
    out = {}
    for key, value in state.items():
        m = _LAYER.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(1)) in new:
            out[f"bert.encoder.layer.{new[int(m.group(1))]}.{m.group(2)}"] = value
    return out


def open_teacher(ts: TrainSettings, log=print):
    """The reader whose scores a distilled run learns from (int8 through ONNX Runtime where
    installed, as the product reads), or None without `ts.distill`.

    Raises:
        UserError: the teacher reads other inputs than this run (max_length, context).
    """
    if not ts.distill:
        return None
    from .reader import Reader

    teacher = Reader(ts.distill, calibrated=False)
    if (teacher.config.max_length, teacher.config.context) != (ts.max_length, ts.context):
        raise UserError(f"--distill {ts.distill} reads {teacher.config.max_length} word pieces "
                        f"with context {teacher.config.context}, and this run "
                        f"{ts.max_length} with context {ts.context}; give the teacher's "
                        f"--max-length and --context", exit_code=2)
    log(f"distilling from {ts.distill} ({teacher.config.layers} layers, sha256 "
        f"{teacher.sha256[:12]}..., read with {teacher.backend}), weight {ts.distill_weight}")
    return teacher


def write_reader(out: Path, state: dict, fields: dict, trained: dict) -> Path:
    """Write float16 weights and their reader.json (`fields`, their sha256 and the training
    record) into out; the weights' path."""
    from safetensors.torch import save_file

    from .reader import CONFIG, WEIGHTS, file_sha256

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS
    save_file(state, str(weights))
    config = {**fields, "sha256": file_sha256(weights), "trained": trained}
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return weights


def export(model, out: Path, ts: TrainSettings, step: int, seconds: float, log=print,
           seen: int | None = None) -> Path:
    """Write the float16 weights that training changed and reader.json (with their sha256);
    `seen` is the pairs the run read (default: steps x batch size)."""
    import torch

    from .reader import CONFIG

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.trained_state().items()}
    data = ("SQuAD 1.1 train + SQuAD 2.0 dev unanswerable questions of the even non-held-out "
            "articles" + (" + swapped-name negatives" if ts.perturb else "")
            + (" + antonym and negation negatives" if ts.contrast else "")
            + (" + reworded negatives" if ts.reword else "")
            + (" + the answer's adjacent sentences as negatives" if ts.context else "")
            + (f" (every SQuAD 2.0 pair in the run, {ts.v2_in_run} times)" if ts.v2_in_run
               else "")
            + (f"; a span head beside the sentence head (loss weight {ts.span})" if ts.span
               else "")
            + ("; listwise per question with a no-answer logit" if ts.listwise else "")
            + (f"; distilled from {ts.distill} (weight {ts.distill_weight})" if ts.distill
               else ""))
    trained = {**asdict(ts), "steps": step,
               "pairs_seen": seen if seen is not None else step * ts.batch_size,
               "train_seconds": round(seconds), "data": data}
    if ts.init:  # the run this one went on from
        trained["from"] = json.loads((Path(ts.init) / CONFIG).read_text()).get("trained")
    if ts.distill:  # the reader it learnt from
        teacher = json.loads((Path(ts.distill) / CONFIG).read_text())
        trained["teacher"] = {"sha256": teacher.get("sha256"), "layers": teacher.get("layers")}
    weights = write_reader(out, state, {"base": BASE, "layers": ts.layers,
                                        "max_length": ts.max_length, "context": ts.context,
                                        "span": ts.span > 0}, trained)
    log(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) after {step} steps, "
        f"{seconds / 60:.1f} min")
    return out


def average(folders: list[Path], out: Path, log=print) -> Path:
    """Write into `out` the element-wise mean of readers' weights (float16, as trained): runs
    of one recipe gone on from each other average into one reader ("model soup"). Its
    reader.json keeps every run's training record under `trained.average_of`.

    Raises:
        UserError: a folder holds no reader, or the readers differ in shape.
    """
    import torch
    from safetensors.torch import load_file

    from .reader import CONFIG, WEIGHTS

    configs, states = [], []
    for folder in folders:
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise UserError(f"--average {folder} holds no {WEIGHTS} and {CONFIG}; give folders "
                            f"that qa train-reader wrote", exit_code=2)
        configs.append(json.loads((folder / CONFIG).read_text()))
        states.append(load_file(str(folder / WEIGHTS)))
    shapes = [{k: tuple(v.shape) for k, v in st.items()} for st in states]
    same = ("base", "layers", "max_length", "context", "span")
    if any(sh != shapes[0] for sh in shapes) or \
            any({k: c.get(k, False) for k in same} != {k: configs[0].get(k, False) for k in same}
                for c in configs):
        raise UserError(f"--average: the readers in {', '.join(map(str, folders))} differ in "
                        f"their weights' shapes or in {', '.join(same)}; average runs of one "
                        f"recipe only", exit_code=2)
    mean = {k: torch.stack([st[k].float() for st in states]).mean(0).to(torch.float16).contiguous()
            for k in states[0]}
    weights = write_reader(out, mean, {k: configs[0].get(k, False) for k in same},
                           {"average_of": [c.get("trained") for c in configs]})
    log(f"wrote {weights}: the mean of {len(folders)} readers")
    return out


def export_checkpoint(out: Path, ts: TrainSettings, log=print) -> Path:
    """Export out/checkpoint.pt as it is (a run cut short, or one still going)."""
    import torch

    from .embed import resolve_model
    from .reader_model import build_model

    ckpt = out / "checkpoint.pt"
    if not ckpt.exists():
        raise UserError(f"no checkpoint at {ckpt}; train first")
    state = torch.load(ckpt, weights_only=False)
    model = build_model(resolve_model(BASE), ts.layers, span=ts.span > 0)
    peft = trainable(model, ts)
    model.load_state_dict(state["model"], strict=False)
    return export(merged(model, peft, log), out, ts, state["step"], state["seconds"], log)


def trainable(model, ts: TrainSettings):
    """Choose what training changes, in place: never the word embeddings; with `ts.freeze`, not
    the lower layers either; with `ts.adapter`, only low-rank adapters (LoRA, rank
    `ts.adapter`) on every linear layer of the body, and the head. The peft model that holds
    the adapters, or None."""
    for p in model.bert.embeddings.parameters():
        p.requires_grad = False
    for layer in model.bert.encoder.layer[:ts.freeze]:
        for p in layer.parameters():
            p.requires_grad = False
    if not ts.adapter:
        return None
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("--adapter needs peft; install it with: pip install -e '.[train]'",
                        exit_code=2) from None
    config = LoraConfig(r=ts.adapter, lora_alpha=2 * ts.adapter, lora_dropout=0.0,
                        target_modules=["query", "key", "value", "dense"])
    peft = get_peft_model(model, config)  # injects the adapters into `model` in place
    for p in model.head.parameters():
        p.requires_grad = True
    return peft


def merged(model, peft, log=print):
    """The model to export: with adapters, their product folded into the layers' weights, so
    the reader loads as any other (the adapters alone would be the size logged here)."""
    if peft is None:
        return model
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    log(f"adapters: {lora:,} parameters ({lora * 2 / 1e6:.1f} MB in float16), merged into the "
        f"layers")
    return peft.merge_and_unload()


# ---------------------------------------------------------------- scoring without retrieval

def paragraph_questions(articles: list[dict], limit: int, seed: int = 0
                        ) -> list[tuple[str, list[str], dict, list[str]]]:
    """A fixed sample of `limit` questions, each with its article title, its paragraph's
    sentences and its gold answers ([] when it has none), for the figures below."""
    items = [(title_text(a["title"]), p["context"], qa) for a in articles
             for p in a["paragraphs"] for qa in p["qas"]]
    random.Random(seed).shuffle(items)
    return [(title, [ctx[a:b] for a, b in split_paragraph(ctx)], qa,
             [] if qa.get("is_impossible") else [x["text"] for x in qa["answers"]])
            for title, ctx, qa in items[:limit]]


def paragraph_figures(reader, articles: list[dict], limit: int = 1000, seed: int = 0) -> dict:
    """With the gold paragraph given: how often the reader's best sentence holds a gold answer
    (answerable questions), and the AUC of its best logit for answerable vs not."""
    items = paragraph_questions(articles, limit, seed)
    hits, best_logits, answerable = [], [], []
    for title, sents, qa, golds in items:
        logits = reader.score(qa["question"], [(title, s, sents[j - 1] if j else "",
                                                sents[j + 1] if j + 1 < len(sents) else "")
                                               for j, s in enumerate(sents)])
        best = int(np.argmax(logits))
        is_ans = bool(golds)
        answerable.append(is_ans)
        best_logits.append(float(logits[best]))
        if is_ans:
            hits.append(any(g in sents[best] for g in golds))
    out = {"questions": len(items), "best_sentence_holds_answer": float(np.mean(hits)) if hits else None}
    y = np.array(answerable)
    if y.any() and (~y).any():
        out["auc_answerable"] = auc(np.array(best_logits), y)
    return out


def best_spans(start: np.ndarray, end: np.ndarray, valid: np.ndarray, longest: int = 30
               ) -> tuple[float, int, int]:
    """An extractive reader's answer in one pair: its best span's start + end logit less
    [CLS]'s (above 0: a span beats "no answer"), and the span's first and last word piece.

    >>> best_spans(np.array([1., 0., 3., 0.]), np.array([1., 0., 0., 2.]),
    ...            np.array([True, False, True, True]))
    (3.0, 2, 3)
    """
    pos = np.flatnonzero(valid[1:]) + 1
    if not len(pos):
        return -np.inf, 0, 0
    grid = start[pos][:, None] + end[pos][None, :]
    i, j = np.indices(grid.shape)
    grid[(j < i) | (pos[j] - pos[i] >= longest)] = -np.inf
    a, b = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return float(grid[a, b] - start[0] - end[0]), int(pos[a]), int(pos[b])


def span_figures(reader, articles: list[dict], limit: int = 1000, seed: int = 0) -> dict:
    """paragraph_figures' questions read by a reader with a span head, loaded with torch in
    float32 (`Reader(folder, backend="torch", quantize=False)`): the AUC of its no-answer
    margin (the best span of the paragraph against [CLS]) and of that margin plus the best
    sentence logit, answerable vs not; and, where the best sentence holds the answer, how often
    its best span is exactly a gold answer, and the mean SQuAD F1."""
    import torch

    from . import onnxrt
    from .reader import pair_text

    assert reader.model is not None, "span_figures reads with torch"
    sep = reader.tokenizer.token_to_id("[SEP]")
    margins, both, answerable, exact, f1 = [], [], [], [], []
    for title, sents, qa, golds in paragraph_questions(articles, limit, seed):
        texts = [pair_text(title, s) for s in sents]
        encodings = reader.tokenizer.encode_batch([(qa["question"], t) for t in texts])
        feed = onnxrt.feed(encodings)
        ids, mask, types = (torch.from_numpy(feed[k])
                            for k in ("input_ids", "attention_mask", "token_type_ids"))
        with torch.inference_mode():
            logit, start, end = reader.model(ids, mask, types, spans=True)
        valid = span_mask(ids, types, mask, sep).numpy()
        found = [best_spans(start[i].numpy(), end[i].numpy(), valid[i]) for i in range(len(sents))]
        best = int(np.argmax(logit.numpy()))
        margin = max(m for m, _, _ in found)
        margins.append(margin)
        both.append(margin + float(logit[best]))
        answerable.append(bool(golds))
        if golds and any(g in sents[best] for g in golds):
            offsets = encodings[best].offsets
            _, a, b = found[best]
            got = texts[best][int(offsets[a][0]):int(offsets[b][1])]
            exact.append(any(_norm(got) == _norm(g) for g in golds))
            f1.append(max(_f1(got, g) for g in golds))
    y = np.array(answerable)
    out: dict = {"questions": len(answerable)}
    if y.any() and (~y).any():
        out["auc_span_margin"] = auc(np.array(margins), y)
        out["auc_span_margin_plus_logit"] = auc(np.array(both), y)
    if exact:
        out["span_exact"] = float(np.mean(exact))
        out["span_f1"] = float(np.mean(f1))
    return out


def _norm(text: str) -> list[str]:
    """SQuAD's answer normalization: lower case, no punctuation, no articles."""
    text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", text.lower()))
    return text.split()


def _f1(got: str, gold: str) -> float:
    """SQuAD's word-overlap F1 of a predicted answer against a gold one.

    >>> _f1("the Denver Broncos", "Denver Broncos"), _f1("Broncos", "Denver Broncos")
    (1.0, 0.6666666666666666)
    """
    from collections import Counter

    a, b = _norm(got), _norm(gold)
    same = sum((Counter(a) & Counter(b)).values())
    if not same:
        return 0.0
    precision, recall = same / len(a), same / len(b)
    return 2 * precision * recall / (precision + recall)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def report(folder: Path, limit: int, log=print) -> dict:
    """Paragraph-given figures on the tuning and held-out halves (nothing is fitted here)."""
    from .reader import Reader

    reader = Reader(folder)
    held_out = held_out_titles()
    v2 = read_squad(SQUAD_V2_DEV)
    _, v2_tune = v2_split(v2, held_out)
    v2_held = [a for a in v2 if a["title"] in held_out]
    sets = {
        "squad1.1 dev tuning (articles 0-23)": v1_dev_articles(False),
        "squad1.1 dev held out (articles 24-47)": v1_dev_articles(True),
        "squad2.0 dev tuning articles": v2_tune,
        "squad2.0 dev held-out articles": v2_held,
    }
    figures = {name: paragraph_figures(reader, articles, limit) for name, articles in sets.items()}
    if reader.config.span:  # the span head is read with torch: one float32 model for every set
        spans = Reader(folder, backend="torch", quantize=False, calibrated=False)
        for name, articles in sets.items():
            figures[name] |= span_figures(spans, articles, limit)
    for name, f in figures.items():
        log(f"{name}: {json.dumps(f)}")
    return figures


# ---------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("build/reader"),
                   help="folder for checkpoints and the trained model (default build/reader); "
                        "copy its reader.json and reader.safetensors into qa/reader/ to ship it")
    p.add_argument("--pairs", type=int, default=TrainSettings.pairs,
                   help="training pairs to see (default %(default)s: about 40 minutes here, 6 layers)")
    p.add_argument("--layers", type=int, default=TrainSettings.layers,
                   help="how many of the base model's 6 layers the reader keeps (default "
                        "%(default)s)")
    p.add_argument("--limit-questions", type=int, default=0,
                   help="train on the first N shuffled questions only (for a quick check)")
    p.add_argument("--init", type=Path, default=None,
                   help="a reader folder (reader.safetensors) to go on training from, instead "
                        "of the base weights")
    p.add_argument("--perturb", type=float, default=TrainSettings.perturb,
                   help="share of answerable questions that also give a negative: the question "
                        "with a name or number of its answer sentence swapped for another "
                        "(default %(default)s)")
    p.add_argument("--contrast", type=float, default=TrainSettings.contrast,
                   help="share of answerable questions that also give a negative: the question "
                        "turned into its opposite (an antonym of its answer sentence's word, or "
                        "a negation) with that sentence (default %(default)s)")
    p.add_argument("--reword", type=float, default=TrainSettings.reword,
                   help="share of answerable questions that also give a negative: the question "
                        "with an ordinary word its answer sentence holds swapped for another "
                        "word of the article (\"teachers\" -> \"janitors\"), with that "
                        "sentence (default %(default)s)")
    p.add_argument("--v2-in-run", type=int, default=0, metavar="N",
                   help="put every SQuAD 2.0 unanswerable pair into the run, N times each, and "
                        "fill the rest of --pairs with SQuAD 1.1 pairs (default 0: they are "
                        "sampled with the rest, about 1,160 of 72,000)")
    p.add_argument("--context", type=int, default=0,
                   help="words of each neighbouring sentence to read with a sentence (default "
                        "0: the sentence alone); give --max-length room for them")
    p.add_argument("--max-length", type=int, default=TrainSettings.max_length,
                   help="word pieces per (question, sentence) input (default %(default)s)")
    p.add_argument("--freeze", type=int, default=TrainSettings.freeze, metavar="N",
                   help="keep the lower N layers as they start, and train the rest (default 0)")
    p.add_argument("--adapter", type=int, default=TrainSettings.adapter, metavar="RANK",
                   help="train low-rank adapters (LoRA) of this rank and the head, not the "
                        "layers, then fold them into the layers (default 0: train the layers; "
                        "needs peft, and a higher --lr, such as 5e-4)")
    p.add_argument("--span", type=float, default=TrainSettings.span, metavar="W",
                   help="train an extractive span head beside the sentence head, its loss "
                        "weighted W (default 0: none); the closing figures then add how well "
                        "its spans and its no-answer score do")
    p.add_argument("--listwise", action="store_true",
                   help="score each question's pairs in one softmax with a learned \"none of "
                        "these\" logit, instead of each pair alone (measured, not used)")
    p.add_argument("--mined", type=Path, default=None, metavar="FILE",
                   help="pairs of the feature picker's candidates (scripts/mine_pairs.py); "
                        "--mined-share of the run's pairs come from it")
    p.add_argument("--mined-share", type=float, default=TrainSettings.mined_share)
    p.add_argument("--distill", type=Path, default=None, metavar="READER",
                   help="learn from this trained reader's scores of every pair as well as from "
                        "the labels (e.g. a 3-layer reader from the 6-layer qa/reader)")
    p.add_argument("--distill-weight", type=float, default=TrainSettings.distill_weight,
                   metavar="W", help="the teacher's share of the loss (default %(default)s)")
    p.add_argument("--init-layers", default="", metavar="I,J,...",
                   help="which of --init's layers to start from, one per layer kept (e.g. "
                        "0,2,4 with --layers 3; default: its lowest --layers)")
    p.add_argument("--lr", type=float, default=TrainSettings.lr)
    p.add_argument("--seed", type=int, default=TrainSettings.seed)
    p.add_argument("--export-only", action="store_true",
                   help="write the model from the last checkpoint in --out without training")
    p.add_argument("--average", type=Path, nargs="+", metavar="READER",
                   help="write into --out the mean of these readers' weights, without training "
                        "(runs of one recipe, each gone on from the last)")
    p.add_argument("--report-limit", type=int, default=1000,
                   help="questions per set in the closing figures (0: skip them)")


def run(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.pairs < 1 or args.layers < 1 or args.layers > 6:
        raise UserError("--pairs must be positive and --layers from 1 to 6", exit_code=2)
    if args.v2_in_run < 0:
        raise UserError(f"--v2-in-run must be 0 or more, not {args.v2_in_run}", exit_code=2)
    if args.context < 0 or args.max_length < 16:
        raise UserError(f"--context must be 0 or more and --max-length at least 16, not "
                        f"{args.context} and {args.max_length}", exit_code=2)
    if not 0 <= args.freeze <= args.layers or args.adapter < 0 or (args.freeze and args.adapter):
        raise UserError(f"--freeze must be from 0 to --layers ({args.layers}) and --adapter 0 or "
                        f"more, not both (--freeze {args.freeze}, --adapter {args.adapter})",
                        exit_code=2)
    if args.span < 0:
        raise UserError(f"--span must be 0 or more, not {args.span}", exit_code=2)
    for name in ("perturb", "contrast", "reword", "mined_share", "distill_weight"):
        if not 0 <= getattr(args, name) <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be from 0 to 1, not "
                            f"{getattr(args, name)}",
                            exit_code=2)
    for name in ("init", "distill"):
        folder = getattr(args, name)
        if folder and not (folder / "reader.safetensors").is_file():
            raise UserError(f"--{name} {folder} holds no reader.safetensors; give a folder that "
                            f"qa train-reader wrote, such as qa/reader", exit_code=2)
    if args.init_layers:
        picked = args.init_layers.split(",")
        if not args.init or len(picked) != args.layers or not all(
                x.isdigit() and int(x) < 6 for x in picked) or len(set(picked)) != len(picked):
            raise UserError(f"--init-layers takes --layers ({args.layers}) distinct layer "
                            f"numbers from 0 to 5, comma-separated, with --init; not "
                            f"{args.init_layers!r}", exit_code=2)
    ts = TrainSettings(layers=args.layers, pairs=args.pairs, limit_questions=args.limit_questions,
                       perturb=args.perturb, contrast=args.contrast, reword=args.reword,
                       init=str(args.init or ""), lr=args.lr, seed=args.seed,
                       context=args.context, max_length=args.max_length,
                       v2_in_run=args.v2_in_run, freeze=args.freeze, adapter=args.adapter,
                       span=args.span, listwise=args.listwise, mined=str(args.mined or ""),
                       mined_share=args.mined_share, distill=str(args.distill or ""),
                       distill_weight=args.distill_weight, init_layers=args.init_layers)
    def log(m):
        print(m, file=sys.stderr, flush=True)

    if args.average:
        if len(args.average) < 2:
            raise UserError("--average needs two or more reader folders", exit_code=2)
        average(args.average, args.out, log=log)
    elif args.export_only:
        export_checkpoint(args.out, ts, log=log)
    else:
        train(args.out, ts, log=log)
    if args.report_limit:
        report(args.out, args.report_limit, log=log)
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qa.train_reader")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
