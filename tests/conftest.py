"""Shared fixtures: the real model and a real index of the seeds, built once per session."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUESTIONS = ROOT / "tests" / "questions.jsonl"
ARTIFACTS = ROOT / "artifacts"
# Set by .ci/run: tests whose data or tools are absent (../shared, chromium) fail instead of
# skipping, so CI cannot pass without running them.
REQUIRE_ALL = os.environ.get("QA_REQUIRE_ALL") == "1"


def require_shared_data(reason: str) -> None:
    """Skip with the reason on a plain clone; fail with it under QA_REQUIRE_ALL=1 (CI)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason}; QA_REQUIRE_ALL=1 requires it (see /work/shared/beir/SOURCES.md)")
    pytest.skip(f"{reason}; set it up to run this test (CI requires it)")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory) -> Path:
    """The encoder's and the readers' ONNX exports go to a folder of this session, not ~/.cache
    (CI may point QA_ONNX_CACHE at one folder for all its tiers: each exports once)."""
    path = Path(os.environ.get("QA_ONNX_CACHE") or tmp_path_factory.mktemp("onnx-cache"))
    os.environ["QA_ONNX_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def encoder(onnx_cache):
    """The encoder the product uses: all-MiniLM-L6-v2 through ONNX Runtime."""
    from qa.embed import load_encoder

    return load_encoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def torch_encoder():
    """The same model through sentence-transformers on torch: the reference for the ONNX path."""
    from qa.embed import SentenceEncoder

    return SentenceEncoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def model_tokenizer():
    """The model's tokenizer as transformers loads it: the reference for word-piece counts."""
    from transformers import AutoTokenizer

    from qa.embed import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def seeds_index(tmp_path_factory, encoder) -> Path:
    """A real index of seeds/, built once; tests must not modify it (copy it first)."""
    from qa.settings import Settings
    from qa.build import build

    path = tmp_path_factory.mktemp("seeds-index")
    build([SEEDS], Settings(index_dir=path), encoder=encoder, progress=False)
    return path


@pytest.fixture(scope="session")
def engine(seeds_index):
    from qa.engine import QA
    from qa.settings import Settings

    return QA.open(Settings(index_dir=seeds_index))


@pytest.fixture(scope="session")
def questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class FakeEncoder:
    """A tiny deterministic encoder for unit tests: hashed bag of words, unit length; a
    qa.embed.Encoder like the real one (test_embed.py checks)."""

    name: str = "fake"
    dim: int = 64
    max_seq_length: int = 64

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()
