"""The reader: training data, a few real training steps, the shipped weights and their checks,
and how the picker uses it."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.reader import (CALIBRATION, CONFIDENCE_FEATURES, CONFIG, PACKAGED_READER, WEIGHTS, Reader,
                       ReaderCalibration, file_sha256, open_reader)
from qa.settings import UserError
from qa.types import Linear

from conftest import ROOT
from qa.train_reader import TrainSettings, article_pairs, train

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
                  "answers": [{"text": "Cam Newton", "answer_start": 62}]}]},
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


def test_training_resumes_from_its_checkpoint(tiny_reader, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(tiny_reader, out)
    messages = []
    pairs = article_pairs(ARTICLE, random.Random(0)) * 4
    train(out, TrainSettings(layers=1, batch_size=4, pairs=16, max_length=48), pairs=pairs,
          log=messages.append)
    assert any("resumed at step 3" in m for m in messages)
    assert json.loads((out / CONFIG).read_text())["trained"]["steps"] == 4


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
    cal = ReaderCalibration("0" * 64, 4, 1.0, 1.0, Linear(0.0, CONFIDENCE_FEATURES, (0.0, 0.0, 0.0)),
                            0.5)
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
    assert config["trained"]["steps"] > 0
    cal = json.loads((PACKAGED_READER / CALIBRATION).read_text())
    assert cal["sha256"] == config["sha256"]


class FakeReader:
    """Scores one chosen sentence high and every other low."""

    def __init__(self, favourite: str, calibration: ReaderCalibration):
        self.favourite, self.calibration, self.calls = favourite, calibration, []

    def score(self, question, pairs):
        self.calls.append(len(pairs))
        return np.array([8.0 if self.favourite in s else -8.0 for _, s in pairs], dtype=np.float32)


def _calibration(candidates: int = 8, threshold: float = 0.5) -> ReaderCalibration:
    return ReaderCalibration("x", candidates, 0.1, 1.0,
                             Linear(0.0, CONFIDENCE_FEATURES, (1.0, 0.0, 0.0)), threshold)


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



@pytest.mark.slow
def test_calibrate_fits_a_reader_that_then_answers(tiny_reader, seeds_index, tmp_path, capsys):
    from qa.cli import main
    from qa.engine import QA
    from qa.settings import Settings

    folder = tmp_path / "reader"
    shutil.copytree(tiny_reader, folder)
    code = main(["calibrate", "--on", str(seeds_index), str(ROOT / "tests" / "questions.jsonl"),
                 "--reader", str(folder), "--candidates", "3", "--exclude-id", "^nm"])
    assert code == 0, capsys.readouterr().err
    cal = json.loads((folder / CALIBRATION).read_text())
    assert cal["candidates"] == 3 and cal["sha256"] == file_sha256(folder / WEIGHTS)
    assert set(cal["confidence"]["weights"]) == {"read_best", "read_second", "feature_z"}
    engine = QA.open(Settings(index_dir=seeds_index, reader=str(folder)))
    assert engine.picker.threshold == cal["threshold"]
    result = engine.ask("When was Dongguan's application approved?")
    assert result.hits and 0.0 <= result.confidence <= 1.0
