"""One frozen Settings object, built by the CLI and the web app and passed down explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
RETRIEVERS = ("dense", "bm25", "hybrid")
# `qa build --index-type` -> the manifest's index_type; auto is Flat below qa.store.HNSW_FROM
# passages and HNSW above.
INDEX_TYPES = {"auto": None, "flat": "Flat", "hnsw": "HNSW", "ivf": "IVF"}
MAX_QUESTION_CHARS = 10_000
NPROBE_HELP = ("IVF lists to search per question, from 1 to the index's nlist (default: as "
               "built, 16; or QA_NPROBE); only for an index built with --index-type ivf")
# --ingress under --ray: the app's ingress deployment answers, or one in the asking process
# (qa.serve.local_ingress).
INGRESS_CHOICES = ("app", "local")
INGRESS_HELP = ("with --ray, what encodes the question, asks the shards and reads: the app's "
                "ingress deployment (app, the default), or this process (local: it loads the "
                "model and the reader, needs the index folder at the path the app serves, and "
                "saves a Serve call per question)")
ROOT = Path(__file__).resolve().parent.parent
# The bundled articles, indexed when no sources are given; package data (the checkout's seeds/
# links here), so an installed qa finds them too.
SEEDS = Path(__file__).resolve().parent / "seeds"
# The seeds' question set (`qa bench` and `python -m qa.soak` time it); package data too, and
# the checkout's tests/questions.jsonl links here.
QUESTIONS = Path(__file__).resolve().parent / "questions.jsonl"
# In a checkout the default index is the checkout's index/; installed, it is ./index.
DEFAULT_INDEX = ROOT / "index" if (ROOT / "pyproject.toml").is_file() else Path("index")


class UserError(Exception):
    """A mistake the user can fix; the message says what was seen and what to do.

    `exit_code` is what the command line exits with (1; 2 for a usage error).
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UserError):
    """A malformed request: an empty question, a bad date, k or retriever (exit code 2)."""

    exit_code = 2


class Unavailable(UserError):
    """A part of the service is down for now (a shard of the index, the Ray Serve app); the
    message names it. The web API answers 503, the command line exits with 3."""

    exit_code = 3


def check_k(k, limit: int) -> int:
    """k as given when it is a whole number from 1 to limit.

    Raises:
        UsageError: anything else (booleans and floats included).
    """
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= limit:
        raise UsageError(f"k must be a whole number from 1 to {limit}, got {k!r}")
    return k


def check_retriever(method) -> str:
    """method as given when it is one of RETRIEVERS.

    Raises:
        UsageError: an unknown retriever, naming the known ones.
    """
    if method not in RETRIEVERS:
        raise UsageError(f"unknown retriever {method!r}; use one of {', '.join(RETRIEVERS)}")
    return method


@dataclass(frozen=True)
class Settings:
    """Model, chunking, retrieval and path settings.

    Args:
        model: a sentence-transformers name or local path; `QA_MODEL` overrides the default.
        index_dir: where the index lives.
        max_tokens: target passage size in the model's word pieces (the model trained on ~128).
        overlap: sentences shared by consecutive passages of one paragraph.
        title_context: embed "title. passage" instead of the passage alone.
        k: passages returned per question.
        retriever: "dense", "bm25" or "hybrid".
        batch_size: encoding batch size.
        reader: "default" (the packaged reader), "none" (the feature picker alone) or a folder
            made by `qa train-reader`; `QA_READER` overrides the default.
        nprobe: lists an IVF index searches per question, from 1 to its nlist (None: what its
            manifest says, set at build); more finds more of the exact neighbours, more slowly.
            `QA_NPROBE` overrides the default. Only for IVF indexes.
    """

    model: str = DEFAULT_MODEL
    index_dir: Path = Path("index")
    max_tokens: int = 128
    overlap: int = 1
    title_context: bool = True
    k: int = 5
    retriever: str = "hybrid"
    batch_size: int = 64
    reader: str = "default"
    nprobe: int | None = None

    def chunking(self) -> dict:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap,
                "title_context": self.title_context}

    def with_(self, **changes) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def default_settings(**changes) -> Settings:
    """Settings from the environment (`QA_MODEL`, `QA_INDEX`, `QA_READER`, `QA_NPROBE`), then
    explicit changes.

    Raises:
        UsageError: QA_NPROBE is set and not a whole number.
    """
    given, nprobe = os.environ.get("QA_NPROBE") or None, None
    if given is not None:
        try:
            nprobe = int(given)
        except ValueError:
            raise UsageError(f"QA_NPROBE must be a whole number of IVF lists, got {given!r}; "
                             f"set it to a number such as 32, or unset it") from None
    base = Settings(model=os.environ.get("QA_MODEL") or DEFAULT_MODEL,
                    reader=os.environ.get("QA_READER") or "default",
                    index_dir=Path(os.environ.get("QA_INDEX") or DEFAULT_INDEX), nprobe=nprobe)
    return base.with_(**changes)


def check_ingress(args) -> None:
    """--ingress local means something only with --ray.

    Raises:
        UsageError: --ingress local without --ray.
    """
    if args.ingress == "local" and not args.ray:
        raise UsageError("--ingress local needs --ray ADDRESS: it answers from the shards the qa "
                         "app serves on that cluster; without --ray the answer is already made "
                         "in this process")
