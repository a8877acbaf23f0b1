"""The embedding model: offline default, unit vectors, word-piece counts, clear load errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qa.embed import Encoder, SentenceEncoder, load_encoder, resolve_model
from qa.settings import UserError


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


def test_count_tokens_matches_the_model_tokenizer(encoder):
    texts = ["Foshan's R&D reached 10.2%.", "", "unbelievably long-winded words"]
    expected = [len(encoder.model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
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
