"""One frozen Settings object, built by the CLI and the web app and passed down explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
RETRIEVERS = ("dense", "bm25", "hybrid")
MAX_QUESTION_CHARS = 10_000
ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"  # the bundled articles, indexed when no sources are given


class UserError(Exception):
    """A mistake the user can fix; the message says what was seen and what to do."""


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
    """

    model: str = DEFAULT_MODEL
    index_dir: Path = Path("index")
    max_tokens: int = 128
    overlap: int = 1
    title_context: bool = True
    k: int = 5
    retriever: str = "hybrid"
    batch_size: int = 64

    def chunking(self) -> dict:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap,
                "title_context": self.title_context}

    def with_(self, **changes) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def default_settings(**changes) -> Settings:
    """Settings from the environment (`QA_MODEL`, `QA_INDEX`), then explicit changes."""
    base = Settings(model=os.environ.get("QA_MODEL") or DEFAULT_MODEL,
                    index_dir=Path(os.environ.get("QA_INDEX") or ROOT / "index"))
    return base.with_(**changes)
