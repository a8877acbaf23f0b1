"""Articles -> index: ingest the sources, chunk, embed, and write a build (`qa build`).

The stages are qa.ingest, qa.chunk and qa.embed; the files written and their checks are qa.store.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from . import __version__
from .chunk import chunk
from .ingest import ingest
from .settings import INDEX_TYPES, Settings, UserError
from .store import (FORMAT_VERSION, embed_text, fingerprint, index_fields, lock, publish, writable,
                    write_build)
from .types import Article, Passage

if TYPE_CHECKING:
    from .embed import Encoder

DEFAULT_CALIBRATION = Path(__file__).with_name("calibration.json")


@dataclass
class BuildSummary:
    """What one build did, for the summary line of `qa build`."""

    documents: int
    passages: int
    skipped: list[tuple[str, str]]
    duplicates: list[tuple[str, str]]
    seconds: float
    path: Path
    index_type: str


def build(sources: Iterable[Path | str], settings: Settings, *, encoder: Encoder | None = None,
          progress: bool = True, shards: int | None = None,
          index_type: str = "auto") -> BuildSummary:
    """Ingest, chunk, embed and index the sources into settings.index_dir, atomically.

    Args:
        shards: split the index into this many shards (qa.shards), built in this process;
            None for one index. `qa build --ray` builds shards on a Ray cluster (qa.cluster).
        index_type: a key of qa.store.INDEX_TYPES, for the index or each shard.

    Raises:
        UserError: no articles, an unwritable index folder, or another build holding the lock.
    """
    started = time.perf_counter()
    folders = [Path(s) for s in sources]
    report = ingest(folders)  # raises before anything is written when there is nothing to index
    if encoder is None:
        from .embed import load_encoder

        encoder = load_encoder(settings.model)  # a model that does not load writes nothing either
    root = writable(Path(settings.index_dir))
    with lock(root):
        passages = _chunk_all(report.articles, encoder, settings)
        articles = {a.doc_id: a for a in report.articles}
        texts = [embed_text(articles[p.doc_id], p, settings.title_context) for p in passages]
        vectors = encoder.encode(texts, batch_size=settings.batch_size, progress=progress)
        manifest = build_record(settings, encoder, folders)
        if shards is None:
            manifest |= index_fields(len(passages), index_type)
            manifest |= {"documents": len(report.articles), "passages": len(passages)}
            target = write_build(root, report.articles, passages, texts, vectors, manifest)
            kind = manifest["index_type"]
        else:
            from .shards import write_sharded_in_process

            kind = f"{shards} shards" + (f", {INDEX_TYPES[index_type]}" if index_type != "auto" else "")
            target = publish(root, lambda tmp: write_sharded_in_process(
                tmp, manifest, report.articles, passages, texts, vectors, shards, index_type))
    return BuildSummary(len(report.articles), len(passages), report.skipped, report.duplicates,
                        time.perf_counter() - started, target, kind)


def build_record(settings: Settings, encoder: Encoder, folders: list[Path]) -> dict:
    """The manifest fields every build shares: format, model, chunking, sources, calibration.
    The counts and index type are the caller's (one index, or each shard)."""
    from .reader import reader_record

    return {
        "format_version": FORMAT_VERSION,
        "model": settings.model,
        "dimension": int(encoder.dim),
        "metric": "inner_product",
        "normalized": True,
        "index_type": "Flat",
        "hnsw": None,
        "ivf": None,
        "chunking": settings.chunking() | {"max_seq_length": encoder.max_seq_length},
        "sources": [str(s.resolve()) for s in folders],
        "source_fingerprint": fingerprint(folders),
        "package_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "answer": json.loads(DEFAULT_CALIBRATION.read_text()) if DEFAULT_CALIBRATION.exists() else {},
        "reader": reader_record(settings.reader),
    }


def _chunk_all(articles: list[Article], encoder: Encoder, settings: Settings) -> list[Passage]:
    passages: list[Passage] = []
    for article in articles:
        title_cost = (encoder.count_tokens([article.title + ". "])[0]
                      if settings.title_context and article.title else 0)
        hard = encoder.max_seq_length - 2 - title_cost  # [CLS] and [SEP]
        if hard < 16:
            raise UserError(f"the title of {article.doc_id} is longer than the model reads; "
                            f"shorten it or build with --no-title-context")
        passages += chunk(article, encoder.count_tokens, max_tokens=min(settings.max_tokens, hard),
                          hard_limit=hard, overlap=settings.overlap, first_pid=len(passages))
    return passages

