"""The embedding model: offline default, unit vectors, word-piece counts, clear load errors, and
the ONNX Runtime path against sentence-transformers on torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qa.embed import (Encoder, OnnxEncoder, SentenceEncoder, _plain_model, load_encoder,
                      onnx_encoder, resolve_model)
from qa.engine import QA
from qa.settings import Settings, UserError
from qa.store import load


def test_default_model_comes_from_the_pypi_package_not_the_hub():
    path = Path(resolve_model("all-MiniLM-L6-v2"))
    assert path.is_dir() and (path / "config.json").exists()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)
    assert resolve_model("/some/local/folder") == "/some/local/folder"


def test_the_real_and_the_fake_encoder_are_encoders(encoder, fake_encoder):
    """Both satisfy the qa.embed.Encoder protocol that build, retrieve and engine are typed with
    (mypy checks the annotated assignment; isinstance checks the members at run time)."""
    for e in (encoder, fake_encoder):
        assert isinstance(e, Encoder), type(e)
        typed: Encoder = e
        assert typed.encode(["a b"]).shape == (1, typed.dim)
        assert typed.count_tokens(["a b"])[0] >= 2
    assert not isinstance(object(), Encoder)


def test_encoder_shape_and_limits(encoder):
    assert encoder.dim == 384
    assert encoder.max_seq_length == 256
    assert load_encoder("all-MiniLM-L6-v2") is encoder  # one model per process


@pytest.mark.parametrize("texts", [[], ["one"], ["a", "b c d", "Foshan", "\u00e9t\u00e9 \u201cok\u201d"]])
def test_encode_gives_unit_float32_rows(encoder, texts):
    v = encoder.encode(texts)
    assert v.dtype == np.float32 and v.shape == (len(texts), 384) and v.flags["C_CONTIGUOUS"]
    if texts:
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_encode_is_deterministic_and_batch_independent(encoder):
    texts = [f"Sentence number {i} about the harbour." for i in range(10)]
    np.testing.assert_allclose(encoder.encode(texts, batch_size=3), encoder.encode(texts),
                               atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_text(encoder):
    a, b, c = encoder.encode(["The tunnel opened to traffic on Wednesday.",
                              "Cars began using the new tunnel midweek.",
                              "The central bank raised interest rates."])
    assert a @ b > a @ c + 0.2


@pytest.mark.parametrize("which", ["onnx", "torch"])
def test_count_tokens_matches_the_model_tokenizer(which, encoder, torch_encoder, model_tokenizer):
    encoder = {"onnx": encoder, "torch": torch_encoder}[which]
    texts = ["Foshan's R&D reached 10.2%.", "", "unbelievably long-winded words",
             "佛山 café naïve " + "word " * 400]  # not truncated: counted in full
    expected = [len(model_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert encoder.count_tokens(texts) == expected
    assert encoder.count_tokens([]) == []
    # Word pieces add up over whitespace, which chunking relies on.
    assert sum(encoder.count_tokens(["Foshan's", "R&D", "reached"])) == \
        encoder.count_tokens(["Foshan's R&D reached"])[0]


@pytest.mark.parametrize("name", ["no-such-model-xyz", "/nonexistent/model/folder"])
def test_a_model_that_does_not_load_is_a_clear_error(name):
    with pytest.raises(UserError) as e:
        SentenceEncoder(name)
    msg = str(e.value)
    assert name in msg and "--model" in msg and "Traceback" not in msg
    assert "\n" not in msg


# ---------------------------------------------------------------- ONNX Runtime and torch

def test_the_default_encoder_reads_through_onnx_runtime(encoder, onnx_cache):
    assert isinstance(encoder, OnnxEncoder)
    assert encoder.session.path.parent == onnx_cache
    assert encoder.session.path.name.startswith("encoder-all-MiniLM-L6-v2-")


@pytest.mark.slow
def test_onnx_gives_torchs_vectors_and_top_k_on_every_seeds_question(encoder, torch_encoder,
                                                                     seeds_index, questions):
    """The ONNX path answers as sentence-transformers on torch does: the same vectors within
    float32 rounding, and the same top-10 passages, scores and answer for all 110 questions."""
    texts = [q["question"] for q in questions]
    vectors = encoder.encode(texts), torch_encoder.encode(texts)
    np.testing.assert_allclose(*vectors, atol=1e-5)
    index = load(seeds_index)
    passages = [index.embed_text(p) for p in index.passages]
    np.testing.assert_allclose(encoder.encode(passages), torch_encoder.encode(passages), atol=1e-5)
    onnx_qa = QA(index, encoder, Settings(index_dir=seeds_index))
    torch_qa = QA(index, torch_encoder, Settings(index_dir=seeds_index))
    for text, u, v in zip(texts, *vectors):
        for method in ("dense", "hybrid"):
            a = onnx_qa.retriever.search(text, k=10, method=method, qvec=u)
            b = torch_qa.retriever.search(text, k=10, method=method, qvec=v)
            assert [h.passage.pid for h in a] == [h.passage.pid for h in b], (method, text)
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        x, y = onnx_qa.ask(text), torch_qa.ask(text)
        # The confidence is rounded to 4 places, so vectors within 1e-5 may round it either way.
        assert (x.abstained, _unrated(x.answer)) == (y.abstained, _unrated(y.answer)), text
        assert x.confidence == pytest.approx(y.confidence, abs=1e-3), text


def _unrated(answer):
    return None if answer is None else replace(answer, confidence=0.0)


def test_a_cold_qa_ask_never_imports_torch(seeds_index, onnx_cache):
    """What makes a cold `qa ask` take about 2 s instead of 10: once the encoder and the reader
    are exported, a new process reads both with ONNX Runtime alone."""
    code = ("import sys; from qa.cli import main; rc = main(['ask', 'When was Dongguan approved?', "
            f"'--index', {str(seeds_index)!r}, '--json']); "
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'sentence_transformers') "
            "if m in sys.modules)); sys.exit(rc)")
    env = {**os.environ, "QA_ONNX_CACHE": str(onnx_cache)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           timeout=300) for _ in range(2)]  # the first may export the reader
    assert runs[1].returncode == 0, runs[1].stderr
    assert "HEAVY []" in runs[1].stdout
    assert json.loads(runs[1].stdout.split("\nHEAVY")[0])["answer"] is not None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "record"])
def test_a_damaged_encoder_export_is_exported_again(encoder, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("QA_ONNX_CACHE", str(tmp_path))
    first = onnx_encoder("all-MiniLM-L6-v2")
    assert first is not None
    path = first.session.path
    data = path.read_bytes()
    if damage == "record":  # the file is fine, its record of the torch outputs is not
        path.with_name(path.name + ".check.json").write_text('{"outputs": [[0.5]]}')
    else:
        path.write_bytes(b"not a model" * 10 if damage == "garbage" else data[:len(data) // 2])
    again = onnx_encoder("all-MiniLM-L6-v2")
    assert again is not None and path.read_bytes() == data
    np.testing.assert_allclose(again.encode(["Foshan"]), encoder.encode(["Foshan"]), atol=1e-6)


def test_qa_backend_chooses_the_encoder(encoder, monkeypatch):
    monkeypatch.setenv("QA_BACKEND", "torch")
    assert isinstance(load_encoder("all-MiniLM-L6-v2"), SentenceEncoder)
    monkeypatch.setenv("QA_BACKEND", "onnx")
    assert load_encoder("all-MiniLM-L6-v2") is encoder
    monkeypatch.setenv("QA_BACKEND", "fast")
    with pytest.raises(UserError, match="QA_BACKEND='fast' is not one of auto, onnx, torch"):
        load_encoder("all-MiniLM-L6-v2")


def test_only_plain_sentence_transformers_folders_are_exported(tmp_path):
    model = Path(resolve_model("all-MiniLM-L6-v2"))
    assert _plain_model(model) == ("mean", 256)
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    modules = json.loads((copy / "modules.json").read_text())
    (copy / "modules.json").write_text(json.dumps(modules + [
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]))
    assert _plain_model(copy) is None  # a Dense layer: stays on sentence-transformers
    (copy / "modules.json").write_text(json.dumps(modules))
    (copy / "tokenizer.json").unlink()
    assert _plain_model(copy) is None
