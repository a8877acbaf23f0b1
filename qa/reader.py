"""Candidate sentences -> reader scores: a small cross-encoder that reads question and sentence
together, trained here from the MiniLM weights (`qa train-reader`).

The reader is the lower `layers` layers of all-MiniLM-L6-v2 with a one-unit head on [CLS]. Its
input is the question, then "title. sentence". Only what training changed ships in the package:
the transformer layers and the head, in float16 (`qa/reader/reader.safetensors`); the word
embeddings are the base model's, which the package already has. `reader.json` holds the
settings, the training record and the sha256 of the weights, which is checked on load.

It reads with ONNX Runtime when that is installed: on first load the model is exported to ONNX
(float32), once per weights, into a cache folder keyed by the weights' sha256 (`QA_READER_CACHE`,
default ~/.cache/qa); without onnxruntime it reads with torch, dynamic int8.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .settings import UserError
from .types import Linear

PACKAGED_READER = Path(__file__).with_name("reader")
WEIGHTS = "reader.safetensors"
CONFIG = "reader.json"
CALIBRATION = "calibration.json"
# Bump when the exported graph or its quantization changes, so old cache files are not reused.
ONNX_FORMAT = 1
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# How far the ONNX path's logits may be from the torch float32 model's on the probe pairs before
# it is refused. A float32 export matches to about 1e-6; int8 rounding moves a logit by up to about
# 0.6 on real pairs (torch's own int8 by up to 2; README, "The reader"), so the int8 bound only
# catches a broken or corrupt file.
ONNX_TOLERANCE = {"fp32": 1e-3, "int8": 1.5}
# The confidence with the reader: its logit for the winner and for the runner-up, and the
# feature model's logit for the winner.
CONFIDENCE_FEATURES = ("read_best", "read_second", "feature_z")


@dataclass(frozen=True)
class ReaderConfig:
    """How the reader was made and how it reads; stored as reader.json beside the weights."""

    base: str
    layers: int
    max_length: int
    sha256: str
    trained: dict

    @classmethod
    def read(cls, folder: Path) -> ReaderConfig:
        path = folder / CONFIG
        try:
            raw = json.loads(path.read_text())
            return cls(base=str(raw["base"]), layers=int(raw["layers"]),
                       max_length=int(raw["max_length"]), sha256=str(raw["sha256"]),
                       trained=dict(raw.get("trained", {})))
        except FileNotFoundError:
            raise UserError(f"no reader model at {folder} ({CONFIG} is missing); reinstall qa, "
                            f"run `qa train-reader`, or answer with --reader none") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a reader config ({e}); reinstall qa or run "
                            f"`qa train-reader`") from None


@dataclass(frozen=True)
class ReaderCalibration:
    """How the reader's scores are used: fitted by `qa calibrate` for one reader (its sha256).

    The reader reads the `candidates` best sentences by the feature score; their score becomes
    feature * (feature score) + reader * (reader logit). The confidence is a logistic model over
    CONFIDENCE_FEATURES; abstain below `threshold`.
    """

    sha256: str
    candidates: int
    feature: float
    reader: float
    confidence: Linear
    threshold: float

    def __post_init__(self) -> None:
        assert self.confidence.features == CONFIDENCE_FEATURES, self.confidence.features

    @classmethod
    def from_dict(cls, c: object) -> ReaderCalibration:
        """The calibration of a parsed calibration.json.

        Raises:
            ValueError: a missing field or one of the wrong type, named.
        """
        if not isinstance(c, dict):
            raise ValueError(f"expected an object, got {type(c).__name__}")
        missing = [k for k in ("sha256", "candidates", "feature", "reader", "confidence",
                               "threshold") if k not in c]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        if not isinstance(c["sha256"], str):
            raise ValueError(f"'sha256' must be a string, got {c['sha256']!r}")
        candidates = c["candidates"]
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise ValueError(f"'candidates' must be a whole number of at least 1, got {candidates!r}")
        for name in ("feature", "reader", "threshold"):
            if not isinstance(c[name], (int, float)) or isinstance(c[name], bool):
                raise ValueError(f"{name!r} must be a number, got {c[name]!r}")
        if not 0 <= c["threshold"] <= 1:
            raise ValueError(f"'threshold' must be in [0, 1], got {c['threshold']!r}")
        try:
            confidence = Linear.from_json(c["confidence"], CONFIDENCE_FEATURES)
        except ValueError as e:
            raise ValueError(f"confidence: {e}") from None
        return cls(sha256=c["sha256"], candidates=candidates, feature=float(c["feature"]),
                   reader=float(c["reader"]), confidence=confidence,
                   threshold=float(c["threshold"]))

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "candidates": self.candidates, "feature": self.feature,
                "reader": self.reader, "confidence": self.confidence.to_json(),
                "threshold": self.threshold}

    def probability(self, features: dict[str, float]) -> float:
        z = self.confidence.score(features)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def pair_text(title: str, sentence: str) -> str:
    """The second segment the reader reads: the article title, then the sentence."""
    title = " ".join(title.split())
    return f"{title}. {sentence}" if title else sentence


def build_model(base_path: str, layers: int) -> CrossEncoder:
    """The base BERT cut to its lower `layers` layers, with a fresh one-unit head."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(base_path, add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    return CrossEncoder(bert, torch.nn.Linear(bert.config.hidden_size, 1))


class CrossEncoder(torch.nn.Module):
    """BERT layers and a linear head on the [CLS] state: one logit per pair."""

    def __init__(self, bert, head):
        super().__init__()
        self.bert = bert
        self.head = head

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1)

    def trained_state(self) -> dict:
        """The parameters training changes (everything but the frozen embeddings)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("bert.embeddings.")}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reader_cache_dir() -> Path:
    """Where exported ONNX readers are kept: `QA_READER_CACHE`, else ~/.cache/qa."""
    return Path(os.environ.get("QA_READER_CACHE") or Path.home() / ".cache" / "qa")


# Pairs the ONNX path is checked on against the torch model each time it is loaded.
PROBE = ("Which team won Super Bowl 50?",
         [("Super Bowl 50", "The Denver Broncos defeated the Carolina Panthers 24-10 to earn their "
                            "third Super Bowl title."),
          ("Super Bowl 50", "The game was played on February 7, 2016."),
          ("", "It rained.")])


def export_onnx(model: CrossEncoder, tokenizer, path: Path, *, int8: bool = True) -> None:
    """Write a float32 CrossEncoder to `path` as ONNX, dynamic int8 on its MatMuls when `int8`.

    Batch and sequence length are dynamic. The file appears whole or not at all (written beside
    it, then renamed), so a process killed midway or another one exporting too leaves no half file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = [Path(tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")[1])
           for _ in range(2)]
    try:
        enc = tokenizer(["a question"] * 2, ["a title. a sentence", "another"], padding=True,
                        return_tensors="pt")
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's and the tracer's notices
            torch.onnx.export(model, tuple(enc[n] for n in INPUTS), str(tmp[0]), dynamo=False,
                              opset_version=17, input_names=list(INPUTS), output_names=["logits"],
                              dynamic_axes=axes | {"logits": {0: "batch"}})
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per-channel 7-bit weights: plain per-tensor int8 moved logits twice as far on
            # real pairs (8-bit products saturate in the AVX2 kernels).
            quantize_dynamic(str(tmp[0]), str(tmp[1]), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True)
        done = tmp[1] if int8 else tmp[0]
        done.chmod(0o644)  # mkstemp makes it private; the cache is as readable as the weights
        os.replace(done, path)
    finally:
        for t in tmp:
            t.unlink(missing_ok=True)


class OnnxModel:
    """An exported reader in an ONNX Runtime session: encoded pairs -> logits."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Waiting threads sleep instead of spinning: on a machine shared with other jobs the
        # spinning costs more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, enc) -> np.ndarray:
        feed = {name: np.asarray(enc[name], dtype=np.int64) for name in INPUTS}
        return self.session.run(None, feed)[0].astype(np.float32)


class Reader:
    """A loaded reader: scores (question, sentence) pairs, higher = more likely the answer.

    Args:
        folder: holds reader.json, reader.safetensors and (once fitted) calibration.json.
        quantize: dynamic int8 on the linear layers; None (the default) reads float32 with ONNX
            Runtime and int8 with torch (README, "The reader": why).
        backend: "auto" (ONNX Runtime when installed, else torch), "onnx" or "torch".
        cache_dir: where the exported ONNX model is kept; `reader_cache_dir()` when None.
    """

    def __init__(self, folder: Path | str = PACKAGED_READER, *, quantize: bool | None = None,
                 backend: str = "auto", cache_dir: Path | str | None = None):
        from safetensors.torch import load_file

        from .embed import resolve_model

        folder = Path(folder)
        self.config = ReaderConfig.read(folder)
        weights = folder / WEIGHTS
        if not weights.is_file():
            raise UserError(f"the reader's weights {weights} are missing; reinstall qa, run "
                            f"`qa train-reader`, or answer with --reader none")
        self.sha256 = file_sha256(weights)
        if self.sha256 != self.config.sha256:
            raise UserError(f"the reader's weights {weights} have sha256 {self.sha256[:12]}..., "
                            f"but {CONFIG} expects {self.config.sha256[:12]}...: the file was "
                            f"altered or is incomplete; reinstall qa or run `qa train-reader`")
        from transformers import AutoTokenizer

        base = resolve_model(self.config.base)
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        model = build_model(base, self.config.layers)
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("bert.embeddings.") for k in missing):
            raise UserError(f"{weights} does not fit a {self.config.layers}-layer reader "
                            f"(unexpected {unexpected[:3]}, missing {missing[:3]}); run "
                            f"`qa train-reader`")
        model.eval()
        self.model: torch.nn.Module | None = None
        self.onnx: OnnxModel | None = None
        self.onnx_path: Path | None = None
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend {backend!r} is not auto, onnx or torch")
        if backend != "torch":
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                if backend == "onnx":
                    raise UserError("the reader's onnx backend needs onnxruntime; "
                                    "`pip install onnxruntime`") from None
            else:
                cache = Path(cache_dir) if cache_dir is not None else reader_cache_dir()
                self._open_onnx(model, cache, bool(quantize))
        if self.onnx is None:
            if quantize is None or quantize:
                # Dynamic int8 on the linear layers (README, "The reader": same choices, faster).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.ao's notice that it moves to torchao
                    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                                   dtype=torch.qint8)
            self.model = model
        self.backend = "onnx" if self.onnx is not None else "torch"
        self.calibration = self._calibration(folder)

    def _open_onnx(self, model: CrossEncoder, cache: Path, int8: bool) -> None:
        """Read with ONNX Runtime from the cached export of these weights, exporting it first when
        it is missing, unreadable or scores unlike the torch model; stay on torch when even a
        fresh export does not hold (a warning says why)."""
        kind = "int8" if int8 else "fp32"
        path = cache / f"reader-{self.sha256[:12]}-{self.config.base}-{self.config.layers}" \
                       f"-v{ONNX_FORMAT}-{kind}.onnx"
        enc = self._encode(*PROBE, "pt")
        with torch.inference_mode():
            want = model(*(enc[n] for n in INPUTS)).numpy()
        problem = ""
        for fresh in (False, True):
            try:
                if fresh or not path.is_file():
                    export_onnx(model, self.tokenizer, path, int8=int8)
                onnx = OnnxModel(path)
                gap = float(np.abs(onnx(enc) - want).max())
            except Exception as e:  # a corrupt or truncated file, or an export ONNX cannot take
                problem = f"{type(e).__name__}: {str(e)[:200]}"
                continue
            if gap <= ONNX_TOLERANCE[kind]:
                self.onnx, self.onnx_path = onnx, path
                return
            problem = f"its logits are {gap:.3f} from the torch model's"
        warnings.warn(f"the reader's ONNX export at {path} does not hold ({problem}); reading "
                      f"with torch instead", RuntimeWarning, stacklevel=3)

    def _encode(self, question: str, pairs: Sequence[tuple[str, str]], tensors: str):
        return self.tokenizer([question] * len(pairs), [pair_text(t, s) for t, s in pairs],
                              truncation="longest_first", max_length=self.config.max_length,
                              padding=True, return_tensors=tensors)

    def _calibration(self, folder: Path) -> ReaderCalibration | None:
        """The calibration fitted for these weights, or None when there is none yet."""
        path = folder / CALIBRATION
        if not path.is_file():
            return None
        try:
            cal = ReaderCalibration.from_dict(json.loads(path.read_text()))
        except ValueError as e:
            raise UserError(f"{path} is not a reader calibration ({e}); run `qa calibrate` "
                            f"or reinstall qa") from None
        if cal.sha256 != self.sha256:
            raise UserError(f"{path} was fitted for another reader (sha256 {cal.sha256[:12]}..., "
                            f"these weights are {self.sha256[:12]}...); run `qa calibrate`")
        return cal

    def score(self, question: str, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Logits for (title, sentence) pairs against one question, in the given order."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self.onnx is not None:
            return self.onnx(self._encode(question, pairs, "np"))
        assert self.model is not None
        enc = self._encode(question, pairs, "pt")
        with torch.inference_mode():
            out = self.model(*(enc[n] for n in INPUTS))
        return out.float().numpy()


@lru_cache(maxsize=2)
def load_reader(folder: str = str(PACKAGED_READER)) -> Reader:
    """One Reader per folder per process."""
    return Reader(folder)


def reader_record(choice: str) -> dict | None:
    """What an index manifest records of the reader Settings.reader names: its settings, training
    record, sha256 and calibration (read from JSON; the weights are not loaded)."""
    if choice == "none":
        return None
    folder = PACKAGED_READER if choice == "default" else Path(choice)
    config = ReaderConfig.read(folder)
    record = {"folder": "packaged" if choice == "default" else str(folder.resolve()),
              "sha256": config.sha256, "layers": config.layers, "max_length": config.max_length,
              "trained": config.trained}
    if (folder / CALIBRATION).is_file():
        record["calibration"] = json.loads((folder / CALIBRATION).read_text())
    return record


def open_reader(choice: str) -> Reader | None:
    """The reader that Settings.reader names: "default" (the packaged one), "none", or a folder.

    Raises:
        UserError: the reader is missing, altered, or has no calibration yet.
    """
    if choice == "none":
        return None
    reader = load_reader(str(PACKAGED_READER if choice == "default" else Path(choice).resolve()))
    if reader.calibration is None:
        raise UserError(f"the reader in {choice} has no {CALIBRATION}; run `qa calibrate "
                        f"--reader {choice}` or answer with --reader none")
    return reader
