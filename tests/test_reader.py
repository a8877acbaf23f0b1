"""The reader: training data, a few real training steps, the shipped weights and their checks,
and how the picker uses it."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from qa import onnxrt
from qa.reader import (CALIBRATION, CONFIDENCE_FEATURES, CONFIG, PACKAGED_READER, WEIGHTS, Reader,
                       ReaderCalibration, file_sha256, open_reader, pair_text)
from qa.settings import UserError
from qa.types import Linear

from conftest import ROOT
from qa.train_reader import TrainSettings, article_pairs, swapped_question, train

ARTICLE = {
    "title": "Super_Bowl_50",
    "paragraphs": [
        {"context": "Super Bowl 50 was an American football game. The Denver Broncos defeated the "
                    "Carolina Panthers 24-10. The game was played on February 7, 2016, at Levi's "
                    "Stadium in Santa Clara.",
         "qas": [{"question": "Which team won Super Bowl 50?", "id": "a",
                  "answers": [{"text": "Denver Broncos", "answer_start": 49}]},
                 {"question": "Who sang the anthem at Super Bowl 50?", "id": "b",
                  "is_impossible": True, "answers": []}]},
        {"context": "The Panthers finished the regular season with a 15-1 record. Cam Newton was "
                    "named the league MVP.",
         "qas": [{"question": "Who was named MVP?", "id": "c",
                  "answers": [{"text": "Cam Newton", "answer_start": 61}]}]},
    ],
}


def test_article_pairs_label_the_answer_sentence_and_near_misses():
    pairs = article_pairs(ARTICLE, random.Random(0))
    won = [p for p in pairs if p.question == "Which team won Super Bowl 50?"]
    assert [p.label for p in won] == [1, 0, 0]
    assert "Denver Broncos" in won[0].sentence
    assert all("Denver Broncos" not in p.sentence for p in won[1:])
    assert won[2].sentence.startswith(("The Panthers", "Cam Newton"))  # another paragraph
    assert {p.title for p in pairs} == {"Super Bowl 50"}
    # SQuAD 1.1 training ignores unanswerable questions; the 2.0 pass takes only them.
    assert not [p for p in pairs if "anthem" in p.question]
    v2 = article_pairs(ARTICLE, random.Random(0), unanswerable_only=True)
    assert v2 and all(p.label == 0 and "anthem" in p.question for p in v2)


def test_article_pairs_carry_the_sentences_around_them():
    won = [p for p in article_pairs(ARTICLE, random.Random(0))
           if p.question == "Which team won Super Bowl 50?"]
    assert won[0].before == "Super Bowl 50 was an American football game."
    assert won[0].after.startswith("The game was played on February 7, 2016")
    # A paragraph's first and last sentences have nothing on that side.
    mvp = [p for p in article_pairs(ARTICLE, random.Random(0)) if p.question == "Who was named MVP?"]
    assert (mvp[0].before, mvp[0].after) == ("The Panthers finished the regular season with a 15-1 "
                                             "record.", "")


def test_with_adjacent_the_answers_neighbours_are_negatives_once_each():
    pairs = [p for p in article_pairs(ARTICLE, random.Random(0), adjacent=True)
             if p.question == "Which team won Super Bowl 50?"]
    negatives = [p.sentence for p in pairs if p.label == 0]
    assert [p.label for p in pairs][0] == 1
    # Both of the answer's neighbours, each once, and the other paragraph's best sentence.
    assert sorted(negatives[:2]) == ["Super Bowl 50 was an American football game.",
                                     "The game was played on February 7, 2016, at Levi's Stadium "
                                     "in Santa Clara."]
    assert len(negatives) == 3 and len(set(negatives)) == 3


def test_a_swapped_name_or_number_makes_a_near_miss_the_sentence_no_longer_answers():
    rng = random.Random(0)
    sentence = "Foshan had 5,718 high-tech enterprises in 2020, up from 1,323 in 2015."
    names, numbers = {"Foshan", "Dongguan", "Guangzhou"}, {"2020", "2018", "1,323", "7,387"}
    for _ in range(20):
        q = swapped_question("How many high-tech enterprises did Foshan have in 2020?", sentence,
                             names, numbers, rng)
        assert q is not None and q != "How many high-tech enterprises did Foshan have in 2020?"
        # One name or number swapped for one the sentence does not hold; a year for a year.
        assert q in {"How many high-tech enterprises did Dongguan have in 2020?",
                     "How many high-tech enterprises did Guangzhou have in 2020?",
                     "How many high-tech enterprises did Foshan have in 2018?"}
    # Nothing of the question's names or numbers in the sentence: nothing to swap.
    assert swapped_question("Who won in 1999?", sentence, names, numbers, rng) is None
    # The question's first word is not a name.
    assert swapped_question("What happened?", "What happened here.", {"Here"}, set(), rng) is None


def test_article_pairs_with_perturb_add_swapped_negatives_of_the_answer_sentence():
    pairs = article_pairs(ARTICLE, random.Random(0), perturb=1.0)
    plain = article_pairs(ARTICLE, random.Random(0))
    swapped = [p for p in pairs if p.label == 0 and p.question not in {q.question for q in plain}]
    assert swapped, "no swapped negative"
    gold = {p.sentence for p in plain if p.label == 1}
    assert all(p.sentence in gold for p in swapped)


def test_article_pairs_with_contrast_add_the_answer_sentence_against_the_opposite_question():
    pairs = article_pairs(ARTICLE, random.Random(0), contrast=1.0)
    plain = article_pairs(ARTICLE, random.Random(0))
    assert pairs[:len(plain)] != plain or len(pairs) > len(plain)
    flipped = {(p.question, p.sentence) for p in pairs if p.label == 0} - \
        {(p.question, p.sentence) for p in plain}
    # "Which team won Super Bowl 50?" against "The Denver Broncos defeated ...": no antonym of
    # the sentence's words and no "is/was" in the question, so nothing; "Who was named MVP?"
    # gets its negation, against the sentence that answered it.
    assert flipped == {("Who was not named MVP?", "Cam Newton was named the league MVP.")}
    assert article_pairs(ARTICLE, random.Random(0), contrast=0.0) == plain


def test_article_pairs_with_reword_add_the_answer_sentence_against_a_reworded_question():
    pairs = article_pairs(ARTICLE, random.Random(0), reword=1.0)
    plain = article_pairs(ARTICLE, random.Random(0))
    new = {(p.question, p.sentence) for p in pairs if p.label == 0} - \
        {(p.question, p.sentence) for p in plain}
    # Only "named" (of "Who was named MVP?") ends as a swappable word does and is held by its
    # answer sentence; it becomes another past verb of the article, against that sentence.
    assert len(new) == 1
    (question, sentence), = new
    assert sentence == "Cam Newton was named the league MVP."
    assert question in {f"Who was {w} MVP?" for w in ("defeated", "finished", "played")}
    assert article_pairs(ARTICLE, random.Random(0), reword=0.0) == plain


WORDS = "Victoria has teachers, janitors and nurses; schools opened and closed. It is often quiet."


@pytest.mark.parametrize("question, sentence, expected", [
    ("How many teachers work there?", "There are 6,000 teachers.",
     {"How many janitors work there?", "How many nurses work there?", "How many schools work there?"}),
    ("When was it opened?", "It opened in 1901.", {"When was it closed?"}),
    ("How many teachers work there?", "There are 6,000 nurses.", {None}),  # not the sentence's word
    ("How many teachers do schools have?", "Schools have 6,000 teachers.",  # nor its stems
     {"How many janitors do schools have?", "How many nurses do schools have?",
      "How many teachers do janitors have?", "How many teachers do nurses have?"}),
    ("Is it often quiet?", "It is often quiet.", {None}),  # no plural noun or past verb to swap
])
def test_reworded_question_swaps_a_word_of_the_answer_sentence(question, sentence, expected):
    from qa.train_reader import article_words, reworded_question

    words = article_words({"paragraphs": [{"context": WORDS}]})
    got = {reworded_question(question, sentence, words, random.Random(seed)) for seed in range(20)}
    assert got == expected


@pytest.mark.parametrize("question, sentence, expected", [
    ("Who won the first title?", "Ajax won the first title in 1900.", "Who won the last title?"),
    ("First, who came?", "First, Ajax came.", "Last, who came?"),  # the capital kept
    ("Who came first?", "Ajax came first and Bo came last.", None),  # it holds both
    ("Who got the largest prize?", "Ajax got a prize.", None),  # the sentence lacks the word
    ("Which is the city?", "It is not a city.", None),  # the sentence negates
    ("Who isn't there?", "Ajax is there.", None),  # the question already negates
])
def test_contrast_question_turns_a_question_into_its_opposite(question, sentence, expected):
    from qa.train_reader import contrast_question

    assert contrast_question(question, sentence, random.Random(0)) == expected


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory) -> Path:
    """A reader trained for a few real steps on a handful of pairs."""
    out = tmp_path_factory.mktemp("reader")
    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    train(out, TrainSettings(layers=1, batch_size=4, pairs=12, max_length=48), pairs=pairs,
          log=lambda m: None)
    return out


def test_training_writes_a_reader_that_loads_and_scores(tiny_reader):
    config = json.loads((tiny_reader / CONFIG).read_text())
    assert config["layers"] == 1 and config["trained"]["steps"] == 3
    assert config["sha256"] == file_sha256(tiny_reader / WEIGHTS)
    assert (tiny_reader / "checkpoint.pt").exists()
    reader = Reader(tiny_reader)
    scores = reader.score("Which team won?", [("Super Bowl 50", "The Broncos won."),
                                              ("Super Bowl 50", "It rained.")])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert reader.score("Which team won?", []).shape == (0,)
    assert reader.calibration is None


def test_a_reader_trained_with_context_reads_the_neighbouring_sentences(tmp_path):
    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    out = train(tmp_path / "ctx", TrainSettings(layers=1, batch_size=4, pairs=8, max_length=64,
                                                context=6), pairs=pairs, log=lambda m: None)
    config = json.loads((out / CONFIG).read_text())
    assert config["context"] == 6 and config["trained"]["context"] == 6
    reader = Reader(out)
    assert reader.config.context == 6
    # The neighbours are in the input, after [SEP]s, cut to 6 words each...
    reading = ("Super Bowl 50", "The Broncos won.", "one two three four five six seven eight",
               "nine ten eleven twelve thirteen fourteen fifteen")
    ids = reader._encode("Which team won?", [reading])["input_ids"][0]
    words = reader.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
    assert "[SEP] three four five six seven eight [SEP] nine ten eleven twelve thirteen fourteen" \
        in words and "fifteen" not in words
    # ...and they change the score.
    a, b = reader.score("Which team won?", [reading, reading[:2] + ("It rained.", "")])
    assert a != b


def test_training_resumes_from_its_checkpoint(tiny_reader, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(tiny_reader, out)
    messages = []
    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    train(out, TrainSettings(layers=1, batch_size=4, pairs=16, max_length=48), pairs=pairs,
          log=messages.append)
    assert any("resumed at step 3" in m for m in messages)
    assert json.loads((out / CONFIG).read_text())["trained"]["steps"] == 4


def test_training_can_go_on_from_a_trained_reader(tiny_reader, tmp_path):
    messages = []
    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    out = train(tmp_path / "next", TrainSettings(layers=1, batch_size=4, pairs=8, max_length=48,
                                                 init=str(tiny_reader)),
                pairs=pairs, log=messages.append)
    assert any(f"starting from {tiny_reader}" in m for m in messages)
    trained = json.loads((out / CONFIG).read_text())["trained"]
    assert trained["steps"] == 2 and trained["from"]["steps"] == 3


def test_answering_pairs_carry_their_answers_offsets_in_the_sentence():
    pairs = article_pairs(ARTICLE, random.Random(0))
    answers = {p.question: p.sentence[slice(*p.answer)] for p in pairs if p.label}
    assert answers == {"Which team won Super Bowl 50?": "Denver Broncos",
                       "Who was named MVP?": "Cam Newton"}
    assert all(p.answer is None for p in pairs if not p.label)
    # An answer whose recorded start does not point at its text is dropped, not guessed at.
    moved = json.loads(json.dumps(ARTICLE))
    moved["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = 62
    mvp = [p for p in article_pairs(moved, random.Random(0)) if p.label and "MVP" in p.question]
    assert mvp[0].answer is None


def _span_targets(pair, max_length=64):
    from transformers import AutoTokenizer

    from qa.embed import resolve_model
    from qa.train_reader import BASE, answer_tokens

    tok = AutoTokenizer.from_pretrained(resolve_model(BASE))
    enc = tok([pair.question], [pair_text(*pair.reading())], truncation="longest_first",
              max_length=max_length, return_offsets_mapping=True)
    a, b = answer_tokens(pair, enc["offset_mapping"][0], enc.sequence_ids(0))
    return a, b, (tok.decode(enc["input_ids"][0][a:b + 1]) if a > 0 else None)


def test_the_span_targets_are_the_answers_word_pieces_or_cls():
    pairs = article_pairs(ARTICLE, random.Random(0))
    won = next(p for p in pairs if p.label and "Super Bowl" in p.question)
    a, b, text = _span_targets(won)
    assert text == "denver broncos" and 0 < a < b
    assert _span_targets(next(p for p in pairs if not p.label))[:2] == (0, 0)  # [CLS]
    # Cut off by truncation, or unknown: not scored.
    assert _span_targets(won, max_length=12)[:2] == (-100, -100)
    assert _span_targets(dataclasses.replace(won, answer=None))[:2] == (-100, -100)


def test_a_span_run_learns_the_answer_and_still_reads_as_a_sentence_reader(tmp_path):
    import torch
    from transformers import AutoTokenizer

    from qa.embed import resolve_model
    from qa.train_reader import BASE, best_spans, span_figures, span_mask

    pairs = article_pairs(ARTICLE, random.Random(0)) * 8
    out = train(tmp_path / "span", TrainSettings(layers=1, batch_size=4, pairs=48, max_length=64,
                                                 span=1.0, lr=1e-3),
                pairs=pairs, log=lambda m: None)
    config = json.loads((out / CONFIG).read_text())
    assert config["span"] is True and "span head" in config["trained"]["data"]
    # Answering reads the sentence head only, through ONNX Runtime as any reader...
    reader = Reader(out)
    assert reader.score("Which team won?", [("Super Bowl 50", "The Broncos won.")]).shape == (1,)
    # ...and the span head, read with torch, has learnt where the answer is.
    model = Reader(out, backend="torch", quantize=False, calibrated=False).model
    tok = AutoTokenizer.from_pretrained(resolve_model(BASE))
    texts = [pair_text("Super Bowl 50", s) for s in (
        "The Denver Broncos defeated the Carolina Panthers 24-10.",
        "The game was played on February 7, 2016, at Levi's Stadium in Santa Clara.")]
    enc = tok(["Which team won Super Bowl 50?"] * 2, texts, return_tensors="pt", padding=True,
              return_offsets_mapping=True)
    with torch.inference_mode():
        _, start, end = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                              spans=True)
    valid = span_mask(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"],
                      tok.sep_token_id).numpy()
    (answers, a, b), (other, _, _) = (best_spans(start[i].numpy(), end[i].numpy(), valid[i])
                                      for i in range(2))
    offsets = enc["offset_mapping"][0]
    assert texts[0][int(offsets[a][0]):int(offsets[b][1])] == "Denver Broncos"
    assert answers > other  # the answering sentence's best span is further above [CLS]
    figures = span_figures(Reader(out, backend="torch", quantize=False, calibrated=False),
                           [ARTICLE], limit=10)
    # The two answerable questions' no-answer margins are above the unanswerable one's.
    assert figures["questions"] == 3 and figures["auc_span_margin"] == 1.0


def test_listwise_batches_keep_questions_whole_and_score_them_against_no_answer(tmp_path):
    import torch

    from qa.train_reader import Pair, _question_batches, listwise_loss

    pairs = article_pairs(ARTICLE, random.Random(0), perturb=1.0)
    random.Random(1).shuffle(pairs)
    batches = _question_batches(pairs, 2)
    assert sum(map(len, batches)) == len(pairs) and all(len(b) >= 2 for b in batches[:-1])
    for b in batches:  # every question's pairs are in one batch, side by side
        qs = [p.question for p in b]
        assert all(qs.count(q) == len([p for p in pairs if p.question == q]) for q in qs)
        assert [q for i, q in enumerate(qs) if i == 0 or q != qs[i - 1]] == list(dict.fromkeys(qs))
    # One softmax per question over its pairs and "none of these": the target is the answering
    # pair, or "none" for a question no pair answers.
    batch = [Pair("q1", "", "a", 0), Pair("q1", "", "b", 1), Pair("q2", "", "c", 0)]
    logits, null = torch.tensor([1.0, 2.0, 0.5]), torch.tensor(0.25)
    want = (-torch.log_softmax(torch.tensor([1.0, 2.0, 0.25]), 0)[1]
            - torch.log_softmax(torch.tensor([0.5, 0.25]), 0)[1]) / 2
    assert torch.isclose(listwise_loss(logits, batch, null), want)
    out = train(tmp_path / "lw", TrainSettings(layers=1, batch_size=4, pairs=8, max_length=48,
                                               listwise=True), pairs=pairs * 2, log=lambda m: None)
    trained = json.loads((out / CONFIG).read_text())["trained"]
    assert trained["listwise"] is True and trained["steps"] == 2
    assert trained["pairs_seen"] == sum(map(len, _question_batches(pairs * 2, 4)[:2])) > 8
    assert Reader(out).score("Which team won?", [("Super Bowl 50", "The Broncos won.")]).shape == (1,)


def _base_layers(layers: int) -> dict:
    """The base model's weights as a reader of `layers` layers starts from them."""
    from qa.embed import resolve_model
    from qa.reader_model import build_model
    from qa.train_reader import BASE

    return build_model(resolve_model(BASE), layers).state_dict()


def test_freeze_keeps_the_lower_layers_and_trains_the_rest(tmp_path):
    from safetensors.torch import load_file

    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    out = train(tmp_path / "frozen", TrainSettings(layers=2, batch_size=4, pairs=12, max_length=48,
                                                   freeze=1, lr=1e-3),
                pairs=pairs, log=lambda m: None)
    got, base = load_file(str(out / WEIGHTS)), _base_layers(2)
    for name in ("attention.self.query.weight", "output.dense.weight"):
        lower, upper = f"bert.encoder.layer.0.{name}", f"bert.encoder.layer.1.{name}"
        assert np.array_equal(got[lower].numpy(), base[lower].half().numpy())
        assert not np.allclose(got[upper].float().numpy(), base[upper].numpy(), atol=1e-3)
    assert json.loads((out / CONFIG).read_text())["trained"]["freeze"] == 1


def test_an_adapter_run_folds_its_adapters_into_a_reader_that_loads(tiny_reader, tmp_path):
    from safetensors.torch import load_file

    from qa.train_reader import export_checkpoint

    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    ts = TrainSettings(layers=1, batch_size=4, pairs=12, max_length=48, adapter=4, lr=1e-2)
    messages: list[str] = []
    out = train(tmp_path / "lora", ts, pairs=pairs, log=messages.append)
    assert any(m.startswith("adapters: ") and "merged into the layers" in m for m in messages)
    got, base = load_file(str(out / WEIGHTS)), _base_layers(1)
    # The same tensors as a run that trains the layers, so it loads as any reader; the adapters'
    # product is in them, so every layer that held one has changed.
    assert sorted(got) == sorted(load_file(str(tiny_reader / WEIGHTS)))
    for name in ("attention.self.value.weight", "intermediate.dense.weight"):
        key = f"bert.encoder.layer.0.{name}"
        assert not np.allclose(got[key].float().numpy(), base[key].numpy(), atol=1e-4)
    key = "bert.encoder.layer.0.attention.output.LayerNorm.weight"  # holds no adapter
    assert np.array_equal(got[key].numpy(), base[key].half().numpy())
    assert json.loads((out / CONFIG).read_text())["trained"]["adapter"] == 4
    assert Reader(out).score("Which team won?", [("Super Bowl 50", "The Broncos won.")]).shape == (1,)
    # Exported again from the checkpoint, the adapters fold in the same way.
    again = load_file(str(export_checkpoint(out, ts, log=lambda m: None) / WEIGHTS))
    assert all(np.array_equal(again[k].numpy(), got[k].numpy()) for k in got)


def test_an_adapter_without_peft_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    with pytest.raises(UserError, match=r"--adapter needs peft.*pip install -e '\.\[train\]'"):
        train(tmp_path / "lora", TrainSettings(layers=1, batch_size=4, pairs=4, adapter=4),
              pairs=pairs, log=lambda m: None)


def test_average_writes_the_mean_of_two_readers_that_loads(tiny_reader, tmp_path, capsys):
    from safetensors.torch import load_file

    from qa.cli import main

    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    other = train(tmp_path / "other", TrainSettings(layers=1, batch_size=4, pairs=8, max_length=48,
                                                    init=str(tiny_reader)),
                  pairs=pairs, log=lambda m: None)
    out = tmp_path / "mean"
    assert main(["train-reader", "--average", str(tiny_reader), str(other), "--out", str(out),
                 "--report-limit", "0"]) == 0
    a, b, mean = (load_file(str(f / WEIGHTS)) for f in (tiny_reader, other, out))
    name = next(k for k in a if k.startswith("head.") and a[k].numel() > 1)
    assert not np.allclose(a[name].float().numpy(), b[name].float().numpy())
    np.testing.assert_allclose(mean[name].float().numpy(),
                               ((a[name].float() + b[name].float()) / 2).numpy(), atol=1e-3)
    config = json.loads((out / CONFIG).read_text())
    assert config["sha256"] == file_sha256(out / WEIGHTS) and config["layers"] == 1
    assert [t["steps"] for t in config["trained"]["average_of"]] == [3, 2]
    assert Reader(out).score("Which team won?", [("Super Bowl 50", "The Broncos won.")]).shape == (1,)
    # One folder, or one that is no reader, is a usage error that names it.
    assert main(["train-reader", "--average", str(tiny_reader), "--out", str(out)]) == 2
    assert "--average needs two or more reader folders" in capsys.readouterr().err
    assert main(["train-reader", "--average", str(tiny_reader), str(tmp_path),
                 "--out", str(out)]) == 2
    assert f"--average {tmp_path} holds no reader.safetensors" in capsys.readouterr().err


def test_a_distilled_run_starts_from_the_teachers_chosen_layers_and_learns_its_scores(tmp_path):
    """A 2-layer student of a 3-layer teacher, from the teacher's layers 0 and 2: before any step
    its weights are those layers; a run with the teacher's whole weight moves its scores toward
    the teacher's, unlike a run of the labels alone."""
    import torch
    from safetensors.torch import load_file

    from qa.train_reader import picked_layers

    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    teacher = train(tmp_path / "teacher", TrainSettings(layers=3, batch_size=4, pairs=8,
                                                        max_length=48, lr=1e-3),
                    pairs=pairs, log=lambda m: None)
    state = load_file(str(teacher / WEIGHTS))
    picked = picked_layers(state, "0,2")
    assert sorted({k.split(".")[3] for k in picked if k.startswith("bert.encoder.layer.")}) \
        == ["0", "1"]
    assert torch.equal(picked["bert.encoder.layer.1.output.dense.weight"],
                       state["bert.encoder.layer.2.output.dense.weight"])
    assert torch.equal(picked["head.weight"], state["head.weight"])
    assert picked_layers(state, "") is state
    with pytest.raises(UserError, match="--init-layers 0,3: the reader started from has "
                                        "layers 0, 1, 2 only"):
        picked_layers(state, "0,3")

    messages = []
    questions = [(p.question, p.reading()) for p in pairs[:6]]
    want = np.array([Reader(teacher).score(q, [r])[0] for q, r in questions])

    def student(name: str, weight: float) -> np.ndarray:
        out = train(tmp_path / name, TrainSettings(layers=2, batch_size=4, pairs=48,
                                                   max_length=48, lr=2e-3, init=str(teacher),
                                                   init_layers="0,2", distill=str(teacher),
                                                   distill_weight=weight),
                    pairs=pairs * 3, log=messages.append)
        reader = Reader(out)
        assert reader.config.layers == 2
        return np.array([reader.score(q, [r])[0] for q, r in questions])

    taught, labels = student("taught", 1.0), student("labels", 0.0)
    assert any("distilling from" in m and "weight 1.0" in m for m in messages)
    assert any("its layers 0,2" in m for m in messages)
    # Learning the teacher's probabilities keeps the student near them; the labels alone
    # (0 or 1) push the logits apart, far from a teacher trained for 2 steps.
    gap = np.abs(1 / (1 + np.exp(-taught)) - 1 / (1 + np.exp(-want))).mean()
    apart = np.abs(1 / (1 + np.exp(-labels)) - 1 / (1 + np.exp(-want))).mean()
    assert gap < apart, (gap, apart)
    trained = json.loads((tmp_path / "taught" / CONFIG).read_text())["trained"]
    assert trained["teacher"]["sha256"] == file_sha256(teacher / WEIGHTS)
    assert trained["init_layers"] == "0,2" and "distilled from" in trained["data"]


def test_a_teacher_that_reads_other_inputs_is_refused(tiny_reader, tmp_path):
    pairs = article_pairs(ARTICLE, random.Random(0))
    with pytest.raises(UserError, match="reads 48 word pieces with context 0, and this run 64"):
        train(tmp_path / "s", TrainSettings(layers=1, batch_size=4, pairs=4, max_length=64,
                                            distill=str(tiny_reader)),
              pairs=pairs, log=lambda m: None)


def test_train_reader_refuses_a_bad_init_or_perturb(tmp_path, capsys):
    from qa.cli import main

    assert main(["train-reader", "--init", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "holds no reader.safetensors" in capsys.readouterr().err
    assert main(["train-reader", "--perturb", "1.5", "--out", str(tmp_path / "o")]) == 2
    assert "--perturb must be from 0 to 1" in capsys.readouterr().err
    assert main(["train-reader", "--contrast", "-0.1", "--out", str(tmp_path / "o")]) == 2
    assert "--contrast must be from 0 to 1" in capsys.readouterr().err
    assert main(["train-reader", "--reword", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--reword must be from 0 to 1" in capsys.readouterr().err
    assert main(["train-reader", "--mined-share", "1.5", "--out", str(tmp_path / "o")]) == 2
    assert "--mined-share must be from 0 to 1" in capsys.readouterr().err
    assert main(["train-reader", "--context", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--context must be 0 or more" in capsys.readouterr().err
    assert main(["train-reader", "--v2-in-run", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--v2-in-run must be 0 or more" in capsys.readouterr().err
    assert main(["train-reader", "--freeze", "7", "--out", str(tmp_path / "o")]) == 2
    assert "--freeze must be from 0 to --layers (6)" in capsys.readouterr().err
    assert main(["train-reader", "--freeze", "2", "--adapter", "8", "--out",
                 str(tmp_path / "o")]) == 2
    assert "not both (--freeze 2, --adapter 8)" in capsys.readouterr().err
    assert main(["train-reader", "--span", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--span must be 0 or more, not -1.0" in capsys.readouterr().err
    assert main(["train-reader", "--distill", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"--distill {tmp_path} holds no reader.safetensors" in capsys.readouterr().err
    assert main(["train-reader", "--distill-weight", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--distill-weight must be from 0 to 1, not 2.0" in capsys.readouterr().err
    for layers in ("0,2", "0,2,2", "0,2,9", "a,b,c"):
        assert main(["train-reader", "--layers", "3", "--init", str(PACKAGED_READER),
                     "--init-layers", layers, "--out", str(tmp_path / "o")]) == 2
        assert "--init-layers takes --layers (3) distinct layer numbers" in capsys.readouterr().err
    assert main(["train-reader", "--layers", "3", "--init-layers", "0,2,4",
                 "--out", str(tmp_path / "o")]) == 2
    assert "with --init; not '0,2,4'" in capsys.readouterr().err


def test_altered_or_missing_weights_are_refused_with_the_fix(tiny_reader, tmp_path):
    altered = tmp_path / "altered"
    shutil.copytree(tiny_reader, altered)
    data = bytearray((altered / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (altered / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256.*altered.*qa train-reader"):
        Reader(altered)
    (altered / WEIGHTS).unlink()
    with pytest.raises(UserError, match="missing.*--reader none"):
        Reader(altered)
    with pytest.raises(UserError, match="reader.json is missing"):
        Reader(tmp_path / "nowhere")


def test_a_calibration_fitted_for_other_weights_is_refused(tiny_reader, tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(tiny_reader, folder)
    cal = ReaderCalibration("0" * 64, 4, 1.0, 1.0,
                            Linear(0.0, CONFIDENCE_FEATURES, (0.0,) * len(CONFIDENCE_FEATURES)), 0.5)
    (folder / CALIBRATION).write_text(json.dumps(cal.to_dict()))
    with pytest.raises(UserError, match="another reader.*qa calibrate"):
        Reader(folder)
    with pytest.raises(UserError, match="no calibration.json"):
        open_reader(str(tiny_reader))
    assert open_reader("none") is None


def test_the_packaged_reader_calibration_loads_and_round_trips():
    raw = json.loads((PACKAGED_READER / CALIBRATION).read_text())
    cal = ReaderCalibration.from_dict(raw)
    assert cal.confidence.features == CONFIDENCE_FEATURES
    assert cal.to_dict() == {k: v for k, v in raw.items() if k != "fitted"}


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("reader"), "lacks reader"),
    (lambda c: c.update(candidates="6"), "'candidates' must be a whole number"),
    (lambda c: c["confidence"]["weights"].pop("feature_z"), "confidence: 'weights' lacks feature_z"),
    (lambda c: c.update(threshold=-1), "'threshold' must be in"),
    (lambda c: c.update(reach=-0.5), "'reach' must be a number of logits of at least 0"),
    (lambda c: c.update(reach="2"), "'reach' must be a number of logits"),
])
def test_a_malformed_reader_calibration_is_named(change, message):
    raw = json.loads((PACKAGED_READER / CALIBRATION).read_text())
    change(raw)
    with pytest.raises(ValueError, match=message):
        ReaderCalibration.from_dict(raw)


def test_the_packaged_reader_is_small_and_matches_its_record():
    weights = PACKAGED_READER / WEIGHTS
    assert weights.stat().st_size < 25_000_000
    config = json.loads((PACKAGED_READER / CONFIG).read_text())
    assert config["sha256"] == file_sha256(weights)
    runs = config["trained"].get("average_of", [config["trained"]])  # a mean of runs, or one run
    assert runs and all(run["steps"] > 0 for run in runs)
    cal = json.loads((PACKAGED_READER / CALIBRATION).read_text())
    assert cal["sha256"] == config["sha256"]


# Real pair lists the engine handed the reader: 12 seeds questions over the seeds index, 12 SQuAD
# 1.1 dev questions over its 2,067 paragraphs (scripts/reader_speed.py records them).
REAL_PAIRS = [json.loads(line) for line in
              (ROOT / "tests" / "fixtures" / "reader_pairs.jsonl").read_text().splitlines()]


def test_the_reader_tokenizes_pairs_as_training_did(model_tokenizer):
    """Inference reads through `tokenizers` alone (no transformers import); training tokenized
    with transformers' AutoTokenizer. Same word pieces, truncation and padding on real pairs."""
    reader = Reader(backend="onnx")
    for x in REAL_PAIRS + [{"question": "why " * 80, "pairs": [["T", "long " * 90], ["", "x"]]}]:
        pairs = [tuple(p) for p in x["pairs"]]
        context = reader.config.context
        want = model_tokenizer([x["question"]] * len(pairs),
                               [pair_text(*p, context=context) for p in pairs],
                               truncation="longest_first", max_length=reader.config.max_length,
                               padding=True, return_tensors="np")
        got = reader._encode(x["question"], pairs)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert np.array_equal(got[name], want[name]), (name, x["question"])


@pytest.fixture(scope="module")
def packaged_torch_fp32() -> Reader:
    return Reader(backend="torch", quantize=False)


@pytest.mark.parametrize("quantize, tolerance", [(False, 1e-3), (True, 1.0)])
def test_the_onnx_reader_scores_real_pairs_as_torch_does(packaged_torch_fp32, quantize, tolerance,
                                                         tmp_path):
    onnx = Reader(backend="onnx", quantize=quantize, cache_dir=tmp_path)
    assert onnx.onnx_path.name.endswith("-int8.onnx" if quantize else "-fp32.onnx")
    assert onnx.backend == "onnx" and onnx.model is None
    same_best = 0
    for x in REAL_PAIRS:
        pairs = [tuple(p) for p in x["pairs"]]
        want = packaged_torch_fp32.score(x["question"], pairs)
        got = onnx.score(x["question"], pairs)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < tolerance, x["question"]
        same_best += int(got.argmax() == want.argmax())
    # int8 may swap near-tied sentences (about 4% of lists in scripts/reader_speed.py); float32
    # never does.
    assert same_best >= len(REAL_PAIRS) - (2 if quantize else 0)
    assert onnx.score("Which team won?", []).shape == (0,)


def test_the_onnx_export_is_cached_by_the_weights_sha256_and_reused(tiny_reader, tmp_path,
                                                                    monkeypatch):
    first = Reader(tiny_reader, cache_dir=tmp_path)  # the default: ONNX Runtime, int8
    assert first.backend == "onnx"
    path = first.onnx_path
    assert path is not None and path.parent == tmp_path
    assert path.name.startswith(f"reader-{file_sha256(tiny_reader / WEIGHTS)[:12]}-")
    # The model and the record of its probe scores; no temporary file left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".check.json"]
    before = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnxrt, "export", no_export)
    again = Reader(tiny_reader, backend="onnx", cache_dir=tmp_path)
    assert again.backend == "onnx" and again.onnx_path == path
    assert path.stat().st_mtime_ns == before
    pairs = [tuple(p) for p in REAL_PAIRS[0]["pairs"]]
    assert np.array_equal(first.score(REAL_PAIRS[0]["question"], pairs),
                          again.score(REAL_PAIRS[0]["question"], pairs))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_cached_export_is_rebuilt(tiny_reader, tmp_path, damage):
    good = Reader(tiny_reader, backend="onnx", cache_dir=tmp_path)
    path, data = good.onnx_path, good.onnx_path.read_bytes()
    path.write_bytes({"garbage": b"not an onnx model" * 100, "truncated": data[:len(data) // 2],
                      "empty": b""}[damage])
    rebuilt = Reader(tiny_reader, backend="onnx", cache_dir=tmp_path)
    assert rebuilt.backend == "onnx" and rebuilt.onnx_path == path
    assert path.stat().st_size > len(data) // 2
    pairs = [tuple(p) for p in REAL_PAIRS[0]["pairs"]]
    np.testing.assert_allclose(rebuilt.score(REAL_PAIRS[0]["question"], pairs),
                               good.score(REAL_PAIRS[0]["question"], pairs), atol=1e-5)


def test_without_onnxruntime_the_reader_reads_with_torch(tiny_reader, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    reader = Reader(tiny_reader, cache_dir=tmp_path)
    assert reader.backend == "torch" and reader.onnx is None and not list(tmp_path.iterdir())
    assert reader.score("Which team won?", [("Super Bowl 50", "The Broncos won.")]).shape == (1,)
    with pytest.raises(UserError, match="pip install onnxruntime"):
        Reader(tiny_reader, backend="onnx", cache_dir=tmp_path)


class FakeReader:
    """Scores one chosen sentence high and every other low."""

    def __init__(self, favourite: str, calibration: ReaderCalibration):
        self.favourite, self.calibration, self.calls = favourite, calibration, []
        self.read: list[tuple[str, ...]] = []

    def score(self, question, pairs):
        self.calls.append(len(pairs))
        self.read += pairs
        return np.array([8.0 if self.favourite in p[1] else -8.0 for p in pairs], dtype=np.float32)


def _calibration(candidates: int = 8, threshold: float = 0.5, reach: float = math.inf
                 ) -> ReaderCalibration:
    return ReaderCalibration("x", candidates, 0.1, 1.0,
                             Linear(0.0, CONFIDENCE_FEATURES,
                                    (1.0,) + (0.0,) * (len(CONFIDENCE_FEATURES) - 1)), threshold,
                             reach)


def test_the_reader_picks_among_the_feature_pickers_best_candidates(engine):
    from qa.answer import Picker

    question = "How many high-tech enterprises did Foshan have in 2020?"
    qvec = engine.encoder.encode([question])[0]
    hits = engine.retriever.search(question, k=8, qvec=qvec)
    plain = Picker(engine.index, engine.calibration).pick(question, qvec, hits)
    cands = Picker(engine.index, engine.calibration).candidates(question, qvec, hits)
    scores = sorted(((engine.picker.sentence_score(c), c) for c in cands), key=lambda x: -x[0])
    # A sentence the features rank third: the reader makes it the answer.
    third = scores[2][1].text
    assert third != plain.answer.text
    reader = FakeReader(third, _calibration(candidates=3))
    picked = Picker(engine.index, engine.calibration, reader).pick(question, qvec, hits)
    assert reader.calls == [3]
    assert third in picked.answer.text
    assert picked.confidence > 0.99
    assert picked.hits[0].passage.pid == scores[2][1].hit.passage.pid
    # One the reader never reads (ranked below its candidates) cannot win.
    tenth = scores[9][1].text
    picked = Picker(engine.index, engine.calibration, FakeReader(tenth, _calibration(3))).pick(
        question, qvec, hits)
    assert tenth not in picked.answer.text and picked.confidence < 0.01


def test_the_reader_reads_no_further_than_its_reach(engine):
    from qa.answer import Picker

    question = "How many high-tech enterprises did Foshan have in 2020?"
    qvec = engine.encoder.encode([question])[0]
    hits = engine.retriever.search(question, k=8, qvec=qvec)
    cands = Picker(engine.index, engine.calibration).candidates(question, qvec, hits)
    ranked = sorted(((engine.picker.sentence_score(c), c) for c in cands), key=lambda x: -x[0])
    scores, third = [s for s, _ in ranked], ranked[2][1].text
    # The reach that just takes in the third candidate (feature weight 0.1, reader 1.0): the
    # reader reads three, and the third wins.
    need = 0.1 * (scores[0] - scores[2])
    assert 0 < need < 0.1 * (scores[0] - scores[3])
    reader = FakeReader(third, _calibration(candidates=8, reach=need + 1e-9))
    picked = Picker(engine.index, engine.calibration, reader).pick(question, qvec, hits)
    assert reader.calls == [3] and third in picked.answer.text
    # A reach short of it: the reader reads two, and the third cannot win.
    reader = FakeReader(third, _calibration(candidates=8, reach=need * 0.99))
    picked = Picker(engine.index, engine.calibration, reader).pick(question, qvec, hits)
    assert reader.calls == [2] and third not in picked.answer.text
    # No reach: the best alone.
    reader = FakeReader(third, _calibration(candidates=8, reach=0.0))
    Picker(engine.index, engine.calibration, reader).pick(question, qvec, hits)
    assert reader.calls == [1]


def test_fit_reach_keeps_each_sets_winners():
    from qa.calibrate import fit_reach

    # Set 0: 99 questions won by the best candidate, one by a candidate 1.5 logits behind; set 1:
    # 9 won by the best, one by a candidate 3 logits behind (feature weight 0.5, reader 1).
    best = (np.array([4.0, 1.0]), np.array([1.0, 0.0]))
    rows = [(0, *best)] * 99 + [(0, np.array([4.0, 1.0]), np.array([0.0, 1.6]))]
    rows += [(1, *best)] * 9 + [(1, np.array([6.0, 0.0]), np.array([0.0, 3.1]))]
    assert fit_reach(rows, 0.5, 1.0, keep=0.995) == 3.0  # set 1's one of ten counts
    assert fit_reach(rows[:100], 0.5, 1.0, keep=0.995) == 1.5
    assert fit_reach(rows[:100], 0.5, 1.0, keep=0.98) == 0.0  # one of 100 may change
    assert fit_reach(rows, 0.5, -1.0) == math.inf  # a reader weighed against: read them all
    assert fit_reach(rows, -0.5, 1.0) == math.inf  # and a feature score weighed against
    # Rounded up past float error: the fitted reach still reads the one winner from behind.
    s, x = np.array([8.64, 1.0]), np.array([0.0, 7.65])
    reach = fit_reach([(0, s, x)], 1.0, 1.0, keep=1.0)
    assert reach >= 7.64 and _calibration(2, reach=reach).reads(list(s)) == 2


def test_reads_counts_the_candidates_within_reach():
    none = _calibration(4)
    assert none.reads([9.0, 1.0, 0.0, -5.0, -9.0]) == 4 and none.reads([3.0, 2.0]) == 2
    assert dataclasses.replace(none, reader=-1.0).reads([9.0, 1.0, 0.0]) == 3  # inf: all
    within = _calibration(4, reach=0.5)  # feature weight 0.1: a gap of 5 needs 0.5 logits
    assert within.reads([9.0, 4.0, 3.9, 3.0]) == 2 and within.reads([9.0]) == 1
    assert _calibration(4, reach=0.0).reads([9.0, 9.0, 8.0]) == 2  # a tie needs no lead


def test_the_reader_is_handed_each_candidate_with_the_sentences_around_it(engine):
    import re

    from qa.answer import Picker

    question = "How many high-tech enterprises did Foshan have in 2020?"
    qvec = engine.encoder.encode([question])[0]
    hits = engine.retriever.search(question, k=8, qvec=qvec)
    reader = FakeReader("no such sentence", _calibration(candidates=8))
    Picker(engine.index, engine.calibration, reader).pick(question, qvec, hits)
    assert len(reader.read) == 8
    titles = {a.title: a.text for a in engine.index.articles.values()}
    for title, sentence, before, after in reader.read:
        text = titles[title]
        # Verbatim neighbours: the sentence before, then this one, then the one after.
        got = re.search(re.escape(before) + r"\s*" + re.escape(sentence) + r"\s*" + re.escape(after),
                        text)
        assert got, (sentence, before, after)
    # The seeds' paragraphs are often one sentence long: the neighbours cross paragraphs.
    assert sum(bool(before and after) for _, _, before, after in reader.read) >= 6


def test_a_low_reader_confidence_abstains(engine):
    from qa.answer import Picker

    engine_picker = engine.picker
    try:
        engine.picker = Picker(engine.index, engine.calibration,
                               FakeReader("no such sentence", _calibration()))
        result = engine.ask("How many high-tech enterprises did Foshan have in 2020?")
        assert result.abstained and result.answer is None and result.confidence < 0.01
    finally:
        engine.picker = engine_picker


def test_the_engine_reads_with_the_packaged_reader_by_default(engine, seeds_index):
    from qa.engine import QA
    from qa.settings import Settings

    assert isinstance(engine.picker.reader, Reader)
    assert QA.open(Settings(index_dir=seeds_index, reader="none")).picker.reader is None
    result = engine.ask("When was Dongguan's application approved?")
    assert not result.abstained and result.answer.doc_id == "003_fa579be8430ff762"


def test_training_refuses_data_that_holds_a_held_out_article(monkeypatch):
    from qa import train_reader

    monkeypatch.setattr(train_reader, "held_out_titles", lambda: {"Super_Bowl_50"})
    monkeypatch.setattr(train_reader, "read_squad", lambda path: [ARTICLE])
    with pytest.raises(UserError, match="held-out"):
        train_reader.training_pairs(TrainSettings())


def test_v2_in_run_puts_every_unanswerable_pair_into_the_run(monkeypatch):
    from qa import squad, train_reader

    v2_dev = [dict(ARTICLE, title="Train_side"), dict(ARTICLE, title="Tune_side")]
    monkeypatch.setattr(train_reader, "held_out_titles", lambda: set())
    monkeypatch.setattr(train_reader, "read_squad",
                        lambda path: v2_dev if path == squad.SQUAD_V2_DEV else [ARTICLE])

    def anthem(pairs):
        return [p for p in pairs if "anthem" in p.question]

    mixed = train_reader.training_pairs(TrainSettings(perturb=0))
    answerable = len(article_pairs(ARTICLE, random.Random(0)))
    # By default SQuAD 2.0's pairs (2 sentences, v2_repeat 2 times) join the pool.
    assert len(mixed) == answerable + 4 and len(anthem(mixed)) == 4
    run = train_reader.training_pairs(TrainSettings(perturb=0, v2_in_run=3, pairs=8))
    # Every one of them, 3 times, and SQuAD 1.1 pairs for the rest of the run's 8.
    assert len(run) == 8 and len(anthem(run)) == 6
    assert all(p.label == 0 and p.title == "Train side" for p in anthem(run))  # never tuning
    with pytest.raises(UserError, match="more than the run's --pairs 5"):  # not all would be seen
        train_reader.training_pairs(TrainSettings(perturb=0, v2_in_run=3, pairs=5))


def test_mined_pairs_fill_their_share_of_the_run(monkeypatch, tmp_path):
    from qa import squad, train_reader

    monkeypatch.setattr(train_reader, "held_out_titles", lambda: set())
    monkeypatch.setattr(train_reader, "read_squad",
                        lambda path: [] if path == squad.SQUAD_V2_DEV else [ARTICLE])
    mined = tmp_path / "mined.jsonl"
    rows = [{"question": f"mined question {i}?", "title": "T", "sentence": f"Sentence {i}.",
             "before": "", "after": "Next.", "label": i % 2} for i in range(10)]
    mined.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = len(article_pairs(ARTICLE, random.Random(0)))
    run = train_reader.training_pairs(TrainSettings(perturb=0, pairs=8, mined=str(mined),
                                                    mined_share=0.5))
    got = [p for p in run if p.question.startswith("mined")]
    assert len(run) == 8 and len(got) == 4 and pool >= 4
    assert {(p.sentence, p.label, p.after) for p in got} <= \
        {(r["sentence"], r["label"], r["after"]) for r in rows}
    # A share larger than the file takes every mined pair once.
    run = train_reader.training_pairs(TrainSettings(perturb=0, pairs=40, mined=str(mined),
                                                    mined_share=1.0))
    assert len([p for p in run if p.question.startswith("mined")]) == 10
    mined.write_text(json.dumps(rows[0]) + "\n" + '{"question": "no label"}\n')
    with pytest.raises(UserError, match=r"mined.jsonl:2 is not a mined pair"):
        train_reader.training_pairs(TrainSettings(perturb=0, mined=str(mined)))
    with pytest.raises(UserError, match="does not exist; write it with scripts/mine_pairs.py"):
        train_reader.training_pairs(TrainSettings(perturb=0, mined=str(tmp_path / "none")))


@pytest.mark.slow
def test_calibrate_fits_a_reader_that_then_answers(tiny_reader, seeds_index, tmp_path, capsys):
    from qa.cli import main
    from qa.engine import QA
    from qa.settings import Settings

    folder = tmp_path / "reader"
    shutil.copytree(tiny_reader, folder)
    # A calibration of an older qa (three confidence features): refused when answering, refitted
    # here.
    (folder / CALIBRATION).write_text(json.dumps({
        "sha256": file_sha256(folder / WEIGHTS), "candidates": 6, "feature": 1.0, "reader": 1.0,
        "confidence": {"bias": 0.0, "weights": {"read_best": 1.0, "read_second": 0.0,
                                                "feature_z": 0.0}}, "threshold": 0.5}))
    with pytest.raises(UserError, match="not a reader calibration.*lacks best.*qa calibrate"):
        Reader(folder)
    questions = tmp_path / "questions.jsonl"  # the seeds' and one with no content word
    questions.write_text((ROOT / "tests" / "questions.jsonl").read_text()
                         + json.dumps({"id": "none", "question": "What was it?", "doc": None,
                                       "answers": []})
                         + "\n")
    code = main(["calibrate", "--on", str(seeds_index), str(questions),
                 "--reader", str(folder), "--candidates", "3", "--exclude-id", "^nm"])
    assert code == 0, capsys.readouterr().err
    cal = json.loads((folder / CALIBRATION).read_text())
    assert cal["candidates"] == 3 and cal["sha256"] == file_sha256(folder / WEIGHTS)
    assert set(cal["confidence"]["weights"]) == set(CONFIDENCE_FEATURES) >= {"read_best", "cover"}
    err = capsys.readouterr().err
    assert 0 <= cal["reach"] < 50 and f"reach {cal['reach']} logits (fitted)" in err
    assert "winner is the one of reading them all for" in err
    engine = QA.open(Settings(index_dir=seeds_index, reader=str(folder)))
    assert engine.picker.threshold == cal["threshold"]
    assert engine.picker.reader.calibration.reach == cal["reach"]
    result = engine.ask("When was Dongguan's application approved?")
    assert result.hits and 0.0 <= result.confidence <= 1.0
    # --reach all: every candidate is read, and the file says nothing of a reach.
    assert main(["calibrate", "--on", str(seeds_index), str(questions), "--reader", str(folder),
                 "--candidates", "3", "--exclude-id", "^nm", "--reach", "all"]) == 0
    assert "reach" not in json.loads((folder / CALIBRATION).read_text())
    assert "reach inf logits: the reader reads 3.00 of at most 3" in capsys.readouterr().err
