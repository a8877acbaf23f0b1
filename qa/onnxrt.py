"""Torch models -> ONNX Runtime sessions: exported once per weights, checked, cached.

The encoder and the reader read through ONNX Runtime when it is installed. A model is exported
from torch the first time it is needed, into a cache folder (`QA_ONNX_CACHE`, default
~/.cache/qa), and beside the file goes a record of the torch model's outputs on a few probe
inputs. A later process opens the file without importing torch at all (that import is most of a
cold `qa ask`): it runs the probe through ONNX Runtime and compares with the record, so a corrupt,
truncated or foreign file is found, and exported again by the caller.

`QA_BACKEND=torch` keeps both models on torch; `onnx` insists on ONNX Runtime; `auto` (the
default) uses it when it is installed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .settings import UserError

BACKENDS = ("auto", "onnx", "torch")
Feed = Mapping[str, np.ndarray]


def cache_dir() -> Path:
    """Where exported models are kept: `QA_ONNX_CACHE` (or the older `QA_READER_CACHE`), else
    ~/.cache/qa."""
    chosen = os.environ.get("QA_ONNX_CACHE") or os.environ.get("QA_READER_CACHE")
    return Path(chosen) if chosen else Path.home() / ".cache" / "qa"


def backend(choice: str | None = None) -> str:
    """The backend to read with: `choice`, else `QA_BACKEND`, else auto; "onnx" or "torch".

    Raises:
        UserError: an unknown choice, or "onnx" without onnxruntime installed.
    """
    choice = choice or os.environ.get("QA_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise UserError(f"QA_BACKEND={choice!r} is not one of {', '.join(BACKENDS)}; unset it "
                        f"or pick one")
    if choice == "torch":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if choice == "onnx":
            raise UserError("the onnx backend needs onnxruntime; `pip install onnxruntime`, or "
                            "read with torch (QA_BACKEND=torch)") from None
        return "torch"
    return "onnx"


class Session:
    """An exported model in an ONNX Runtime session: integer inputs -> its first output."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Waiting threads sleep instead of spinning: on a machine shared with other jobs the
        # spinning costs more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, feed: Feed) -> np.ndarray:
        ins = {name: np.asarray(feed[name], dtype=np.int64) for name in self.inputs}
        return np.asarray(self.session.run(None, ins)[0], dtype=np.float32)


# How far a cached file's outputs on the probe may be from those it gave when it was exported.
# The same file on the same machine gives the same numbers; this only lets a different CPU's
# kernels round differently. An int8 file is off the torch model by up to about 0.75 (its export
# gate is looser), so its own outputs, not torch's, are what a later load is held to.
RECORD_TOLERANCE = 1e-4


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def open_checked(path: Path, probe: Feed, tolerance: float = RECORD_TOLERANCE) -> Session | None:
    """The session at `path` when its outputs on `probe` are within `tolerance` of those it gave
    at export (recorded beside it); None when the file or its record is missing, unreadable or
    off."""
    try:
        want = np.asarray(json.loads(_record(path).read_text())["outputs"], dtype=np.float32)
        session = Session(path)
        got = session(probe)
    except Exception:  # a missing, corrupt or truncated file, or one from another qa version
        return None
    if got.shape != want.shape or float(np.abs(got - want).max()) > tolerance:
        return None
    return session


def export(module: Any, probe: Feed, path: Path, *, expected: np.ndarray, tolerance: float,
           int8: bool = False) -> Session:
    """Export a torch `module` (called with the probe's inputs, in order) to `path` as ONNX, with
    the record `open_checked` compares against (the export's own outputs on the probe), and
    return its checked session.

    Batch and sequence length are dynamic; `int8` quantizes the MatMuls dynamically. The file
    appears whole or not at all (written beside it, then renamed), so a process killed midway or
    another one exporting too leaves no half file.

    Raises:
        RuntimeError: the exported model's outputs on the probe are further than `tolerance` from
            `expected` (the torch model's).
    """
    import torch

    names = list(probe)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = [Path(tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")[1])
           for _ in range(2)]
    try:
        args = tuple(torch.from_numpy(np.asarray(probe[n], dtype=np.int64)) for n in names)
        axes = {name: {0: "batch", 1: "sequence"} for name in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's and the tracer's notices
            torch.onnx.export(module, args, str(tmp[0]), dynamo=False, opset_version=17,
                              input_names=names, output_names=["output"],
                              dynamic_axes=axes | {"output": {0: "batch"}})
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per-channel 7-bit weights: plain per-tensor int8 moved logits twice as far on
            # real pairs (8-bit products saturate in the AVX2 kernels).
            logging.disable(logging.WARNING)  # its advice to pre-process, on the root logger
            try:
                quantize_dynamic(str(tmp[0]), str(tmp[1]), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"], per_channel=True,
                                 reduce_range=True)
            finally:
                logging.disable(logging.NOTSET)
        done = tmp[1] if int8 else tmp[0]
        got = Session(done)(probe)
        gap = float(np.abs(got - expected).max())
        if gap > tolerance:
            raise RuntimeError(f"the export's outputs are {gap:.3g} from the torch model's")
        done.chmod(0o644)  # mkstemp makes it private; the cache is as readable as the weights
        os.replace(done, path)
        record = tmp[1 - int(int8)]
        record.write_text(json.dumps({"outputs": got.tolist()}))
        record.chmod(0o644)
        os.replace(record, _record(path))
    finally:
        for t in tmp:
            t.unlink(missing_ok=True)
    return Session(path)


def open_or_export(path: Path, probe: Feed, tolerance: float,
                   torch_model: Callable[[], tuple[Any, np.ndarray]], *,
                   int8: bool = False) -> Session | None:
    """The checked session at `path`, exporting it first (from what `torch_model()` returns: the
    module and its outputs on the probe) when it is missing or does not hold. None, with a warning
    saying why, when a fresh export is further than `tolerance` from torch's outputs."""
    session = open_checked(path, probe)
    if session is not None:
        return session
    module, expected = torch_model()
    try:
        return export(module, probe, path, expected=expected, tolerance=tolerance, int8=int8)
    except Exception as e:  # an export ONNX cannot take, or one that scores unlike torch
        warnings.warn(f"the ONNX export at {path} does not hold ({type(e).__name__}: "
                      f"{str(e)[:200]}); reading with torch instead", RuntimeWarning, stacklevel=3)
        return None


def batch_tokenizer(path: Path, max_length: int):
    """A model's tokenizer.json through `tokenizers` (no transformers import), as transformers
    tokenizes for a model: longest-first truncation to `max_length`, padding to the batch's
    longest with the file's own pad token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    pad = tokenizer.padding or {}
    tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_type_id=pad.get("pad_type_id", 0),
                             pad_token=pad.get("pad_token", "[PAD]"))
    return tokenizer


def feed(encodings) -> dict[str, np.ndarray]:
    """A padded batch of `tokenizers` encodings -> the int64 inputs a BERT session reads."""
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
