"""The index on disk: FAISS vectors, BM25, passages, articles and a manifest; write, load, check.

The build pipeline (ingest, chunk, embed) that fills it is qa.build.

An index folder holds `CURRENT`, naming the live build under `builds/`. A build is written to a
new folder and switched in by replacing `CURRENT` atomically, so a build that fails or is killed
leaves the previous index usable, and a reader never sees a mix of two builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from . import __version__
from .ingest import source_files
from .settings import INDEX_TYPES, UsageError, UserError
from .text import bm25s as _bm25s
from .text import tokenize
from .types import Article, Passage

if TYPE_CHECKING:
    import bm25s
    import faiss

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILES = ("articles.jsonl", "passages.jsonl", "index.faiss", "bm25")
# Exact search up to this many passages, HNSW above: see `qa bench` and the README.
HNSW_FROM = 200_000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
# Lists an IVF index probes per question (README, "Past one machine": its recall on real vectors).
IVF_NPROBE = 16


def ivf_lists(passages: int) -> int:
    """About 4 sqrt(n) lists, at most one per 39 vectors (what FAISS's k-means wants to train a
    list), at least one.

    >>> ivf_lists(4_033), ivf_lists(1_000_000), ivf_lists(30)
    (103, 4000, 1)
    """
    return max(1, min(round(4 * passages ** 0.5), passages // 39))


def index_fields(passages: int, wanted: str = "auto") -> dict:
    """The manifest's index_type, hnsw and ivf fields for an index of `passages` vectors.

    Args:
        wanted: a key of INDEX_TYPES; "auto" is Flat below HNSW_FROM passages and HNSW above.
            An IVF index of no vectors cannot be trained, so it is Flat.
    """
    kind = INDEX_TYPES[wanted] or ("HNSW" if passages >= HNSW_FROM else "Flat")
    if kind == "IVF" and passages == 0:
        kind = "Flat"
    nlist = ivf_lists(passages)
    return {"index_type": kind,
            "hnsw": ({"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION,
                      "ef_search": HNSW_EF_SEARCH} if kind == "HNSW" else None),
            "ivf": {"nlist": nlist, "nprobe": min(IVF_NPROBE, nlist)} if kind == "IVF" else None}


class IndexLoadError(UserError):
    """The index on disk is missing, corrupt, or does not fit these settings."""


@dataclass(frozen=True)
class Manifest:
    """A build's manifest.json, checked on load (`Manifest.from_json`): what the index was built
    with and from, and the size and sha256 of each file."""

    format_version: int
    model: str
    dimension: int
    passages: int
    files: dict[str, str]
    documents: int = 0
    metric: str = "inner_product"
    normalized: bool = True
    index_type: str = "Flat"
    hnsw: dict | None = None
    ivf: dict | None = None
    chunking: dict = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    source_fingerprint: str = ""
    package_version: str = ""
    built_at: str = ""
    answer: dict = field(default_factory=dict)  # the answer picker's calibration (qa.answer)
    reader: dict | None = None  # the reader answering by default when built (qa.reader_record)

    @property
    def title_context(self) -> bool:
        return self.chunking["title_context"]

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """The record of a parsed manifest.json.

        Raises:
            ValueError: a field that is missing or of the wrong type, named.
        """
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.name in MANIFEST_KEYS:
                    raise ValueError(f"it lacks {f.name!r}")
                continue
            value, kinds = data[f.name], _MANIFEST_TYPES[f.name]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in
                                                 (kinds if isinstance(kinds, tuple) else (kinds,))):
                raise ValueError(f"{f.name!r} is {type(value).__name__}, not {_names(kinds)}")
            out[f.name] = tuple(value) if f.name == "sources" and isinstance(value, list) else value
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in out["files"].items()):
            raise ValueError("'files' must map file names to sha256 strings")
        if not all(isinstance(s, str) for s in out.get("sources", ())):
            raise ValueError("'sources' must be a list of paths")
        if not isinstance(out.get("chunking", {}).get("title_context", True), bool):
            raise ValueError("'chunking' lacks a true/false 'title_context'")
        if out.get("index_type") == "HNSW" and not isinstance((out.get("hnsw") or {}).get("ef_search"), int):
            raise ValueError("an HNSW index needs 'hnsw': {'ef_search': int}")
        ivf = out.get("ivf") or {}
        if out.get("index_type") == "IVF" and not all(isinstance(ivf.get(key), int)
                                                       for key in ("nlist", "nprobe")):
            raise ValueError("an IVF index needs 'ivf': {'nlist': int, 'nprobe': int}")
        out.setdefault("chunking", {"title_context": True})
        out["chunking"].setdefault("title_context", True)
        return cls(**out)


_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int, "model": str, "dimension": int, "passages": int, "files": dict,
    "documents": int, "metric": str, "normalized": bool, "index_type": str,
    "hnsw": (dict, type(None)), "ivf": (dict, type(None)), "chunking": dict, "sources": list, "source_fingerprint": str,
    "package_version": str, "built_at": str, "answer": dict, "reader": (dict, type(None))}


def _names(kinds) -> str:
    return " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))


@dataclass
class Index:
    """A loaded index: everything a question needs, read once."""

    path: Path
    manifest: Manifest
    articles: dict[str, Article]
    passages: list[Passage]
    faiss_index: faiss.Index
    vectors: np.ndarray
    bm25: bm25s.BM25
    stale: bool = False

    @property
    def model(self) -> str:
        return self.manifest.model

    def embed_text(self, passage: Passage) -> str:
        return embed_text(self.articles[passage.doc_id], passage, self.manifest.title_context)


def embed_text(article: Article, passage: Passage, title_context: bool) -> str:
    """What the model and BM25 read for a passage: the title as context, then the verbatim text."""
    return f"{article.title}. {passage.text}" if title_context and article.title else passage.text


# ---------------------------------------------------------------- write

def write_build(root: Path, articles: list[Article], passages: list[Passage], texts: list[str],
                vectors: np.ndarray, manifest: dict, bm25_corpus: dict | None = None) -> Path:
    """Write one build beside the live one and switch CURRENT to it atomically.

    Args:
        root: the index folder (writable, locked by the caller).
        articles, passages: what the build holds.
        texts: what BM25 indexes for each passage (`embed_text`), in passage order.
        vectors: one unit vector per passage.
        manifest: everything but "files", which is added here (sizes and sha256 of each file).
        bm25_corpus: for one shard of a larger collection, the collection's BM25 statistics
            (`qa.shards.corpus_bm25_stats`), so this build scores BM25 as the whole collection
            would; None scores with this build's own passages.

    Returns:
        The new build's folder.
    """
    def fill(tmp: Path) -> None:
        write_build_files(tmp, articles, passages, texts, vectors, manifest, bm25_corpus)

    return publish(root, fill)


def write_build_files(folder: Path, articles: list[Article], passages: list[Passage],
                      texts: list[str], vectors: np.ndarray, manifest: dict,
                      bm25_corpus: dict | None = None) -> None:
    """The files of one build (see `write_build`) into an empty folder."""
    _write_jsonl(folder / "articles.jsonl", (_article_row(a) for a in articles))
    _write_jsonl(folder / "passages.jsonl", (_passage_row(p) for p in passages))
    faiss_index = make_faiss_index(vectors, manifest["index_type"], manifest.get("ivf"))
    import faiss

    faiss.write_index(faiss_index, str(folder / "index.faiss"))
    make_bm25(texts, bm25_corpus).save(str(folder / "bm25"))
    manifest["files"] = {f: _digest(folder / f) for f in FILES}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def reindexed(index: Index, root: Path, index_type: str) -> Path:
    """A copy of a loaded index (one index, not a shard) into the index folder `root`, with
    another vector index (a key of INDEX_TYPES) over the same vectors: how an index changes type
    without encoding its passages again.

    Returns:
        The new build's folder.
    """
    _, raw = _read_manifest(index.path, "")
    if "shard" in raw or raw.get("kind") == "sharded":
        raise UserError(f"{index.path} is a shard or sharded; build it again with --index-type")
    manifest = {k: v for k, v in raw.items() if k != "files"}
    manifest |= index_fields(len(index.passages), index_type)
    texts = [index.embed_text(p) for p in index.passages]
    with lock(writable(Path(root))):
        return write_build(Path(root), list(index.articles.values()), index.passages, texts,
                           index.vectors, manifest)


def make_bm25(texts: list[str], corpus: dict | None = None):
    """A bm25s index of the texts; with `corpus` (num_docs, avg_doc_len, df), scored with those
    collection-wide statistics instead of the texts' own (see qa.shards)."""
    bm25s = _bm25s()
    retriever = bm25s.BM25()
    tokens = tokenize(texts)
    if corpus is not None:
        from .bm25corpus import corpus_scores

        def with_corpus_stats(unique_token_ids, corpus_token_ids, **_):
            return corpus_scores(retriever, tokens.vocab, corpus_token_ids, corpus)

        retriever.build_index_from_ids = with_corpus_stats  # one instance, for index() below
    retriever.index(tokens, show_progress=False)
    return retriever


def publish(root: Path, fill) -> Path:
    """Make a new build folder under root/builds with `fill(folder)`, then switch CURRENT to it
    atomically and remove the older builds. A fill that fails leaves the live build as it was.

    Returns:
        The new build's folder.
    """
    builds = root / "builds"
    builds.mkdir(exist_ok=True)
    # Unique even for two builds by one process within a second (the app rebuilding, tests).
    name = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{os.urandom(3).hex()}"
    tmp = builds / f".{name}.tmp"
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        final = builds / name
        os.rename(tmp, final)
        _replace(root / "CURRENT", f"builds/{name}\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in builds.iterdir():  # older builds and leftovers of killed builds
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def check_nprobe(manifest: Manifest, nprobe: object, where: Path | str) -> int:
    """nprobe as given when `where` is an IVF index with at least that many lists.

    Raises:
        UsageError: not an IVF index, or not a whole number from 1 to its nlist.
    """
    if manifest.index_type != "IVF" or not manifest.ivf:
        raise UsageError(f"--nprobe (or QA_NPROBE) sets how many lists an IVF index searches, "
                         f"and {where} is a {manifest.index_type} index; leave it out, or build "
                         f"with `--index-type ivf`")
    nlist = manifest.ivf["nlist"]
    if not isinstance(nprobe, int) or isinstance(nprobe, bool) or not 1 <= nprobe <= nlist:
        raise UsageError(f"--nprobe must be a whole number from 1 to {nlist} (the lists of "
                         f"{where}; it was built with {manifest.ivf['nprobe']}), got {nprobe!r}")
    return nprobe


def set_nprobe(index: Index, nprobe: int) -> None:
    """Search `nprobe` of the index's IVF lists per question from now on (check_nprobe's rules)."""
    import faiss

    faiss.extract_index_ivf(index.faiss_index).nprobe = check_nprobe(index.manifest, nprobe,
                                                                     index.path)


def make_faiss_index(vectors: np.ndarray, index_type: str, ivf: dict | None = None):
    """Inner product over unit vectors: exact (Flat) or approximate (HNSW, or IVF with `ivf`'s
    nlist and nprobe, its lists trained on the vectors themselves)."""
    import faiss

    dim = vectors.shape[1]
    index: faiss.Index
    if index_type == "IVF":
        assert ivf is not None and len(vectors), "an IVF index needs its nlist and vectors"
        index = faiss.index_factory(dim, f"IVF{ivf['nlist']},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        faiss.extract_index_ivf(index).nprobe = ivf["nprobe"]
    elif index_type == "HNSW":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        index = hnsw
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    return index


# ---------------------------------------------------------------- load

def load(index_dir: Path | str, model: str | None = None) -> Index:
    """Read the live build of index_dir, checking its manifest and files.

    Args:
        index_dir: the index folder.
        model: the model the caller will encode questions with; None accepts the index's own.

    Raises:
        IndexLoadError: no index, a format or model mismatch, or a corrupt file; the message names
            the file and the fix.
    """
    # A build that finishes while we read deletes the build we are reading: read the new one.
    root = Path(index_dir)
    for attempt in range(5):
        seen = _current_name(root)
        try:
            return _load_once(root, model)
        except IndexLoadError:
            if attempt == 4 or _current_name(root) == seen:
                raise
    raise AssertionError("unreachable")


def _current_name(root: Path) -> str | None:
    try:
        return (root / "CURRENT").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _load_once(index_dir: Path, model: str | None) -> Index:
    root = Path(index_dir)
    rebuild = f"run `qa build --index {root}` to rebuild it"
    build_dir, raw = _read_manifest(root, rebuild)
    if raw.get("kind") == "sharded":
        shards = ", ".join(e.get("path", "?") for e in raw.get("shards", []))
        raise IndexLoadError(f"{root}/ is a sharded index ({shards}); open it with qa.engine.QA.open "
                             f"or `qa ask --index {root}`, or one shard with `qa ask --index "
                             f"{build_dir}/shard-000`")
    version = raw["format_version"]
    if version != FORMAT_VERSION:
        raise IndexLoadError(f"{root}/ has index format {version}, this qa {__version__} reads format "
                          f"{FORMAT_VERSION}; {rebuild}")
    try:
        manifest = Manifest.from_json(raw)
    except ValueError as e:
        raise IndexLoadError(f"{build_dir / 'manifest.json'} is corrupt ({e}); {rebuild}") from None
    if model is not None and model != manifest.model:
        raise IndexLoadError(f"{root}/ was built with {manifest.model} but the model asked for "
                          f"is {model}; run `qa build --index {root} --model {model}` to rebuild "
                          f"it, or leave --model/QA_MODEL unset")
    for name in FILES:
        path = build_dir / name
        try:
            intact = path.exists() and _digest(path) == manifest.files.get(name)
        except OSError as e:
            raise IndexLoadError(f"{path} cannot be read ({e.strerror}); make it readable or "
                                 f"{rebuild}") from None
        if not intact:
            raise IndexLoadError(f"{path} is missing, truncated or corrupt; {rebuild}")
    bm25s = _bm25s()
    import faiss

    # Any parse failure of our own files is a corrupt index; name the file that failed.
    with _reading(build_dir / "articles.jsonl", rebuild):
        articles = {a.doc_id: a for a in map(_article_from_row, _read_jsonl(build_dir / "articles.jsonl"))}
    with _reading(build_dir / "passages.jsonl", rebuild):
        passages = [_passage_from_row(r) for r in _read_jsonl(build_dir / "passages.jsonl")]
    with _reading(build_dir / "index.faiss", rebuild):
        faiss_index = faiss.read_index(str(build_dir / "index.faiss"))
        if manifest.index_type == "HNSW" and manifest.hnsw:
            # read_index returns the concrete IndexHNSWFlat; faiss's stubs say Index
            faiss_index.hnsw.efSearch = manifest.hnsw["ef_search"]  # type: ignore[attr-defined]
        if manifest.index_type == "IVF" and manifest.ivf:
            ivf = faiss.extract_index_ivf(faiss_index)
            ivf.nprobe = manifest.ivf["nprobe"]
            ivf.make_direct_map()  # for reconstruct_n below
        vectors = faiss_index.reconstruct_n(0, faiss_index.ntotal) if faiss_index.ntotal else \
            np.zeros((0, manifest.dimension), dtype=np.float32)
    with _reading(build_dir / "bm25", rebuild):
        bm25 = bm25s.BM25.load(str(build_dir / "bm25"))
    if len(passages) != manifest.passages or faiss_index.ntotal != len(passages):
        raise IndexLoadError(f"{build_dir} holds {faiss_index.ntotal} vectors for {len(passages)} "
                          f"passages, manifest says {manifest.passages}; {rebuild}")
    index = Index(root, manifest, articles, passages, faiss_index, vectors, bm25)
    index.stale = is_stale(manifest)
    return index


MANIFEST_KEYS = ("format_version", "model", "dimension", "passages", "files")


def _read_manifest(root: Path, rebuild: str) -> tuple[Path, dict]:
    """CURRENT -> (the live build folder, its manifest), each failure naming the file at fault."""
    current = root / "CURRENT"
    if not current.exists():
        raise IndexLoadError(f"no index in {root}/; run `qa build --index {root}` to build one")
    try:
        name = current.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as e:
        raise IndexLoadError(f"{current} cannot be read ({e}); {rebuild}") from None
    # CURRENT names a folder under builds/ and nothing else, never a path out of the index.
    if not re.fullmatch(r"builds/[\w-][\w.-]*", name) or name.endswith(".tmp"):
        raise IndexLoadError(f"{current} is corrupt (it should name a build, "
                             f"`builds/<time>-<pid>`, but holds {name[:60]!r}); {rebuild}")
    build_dir = root / name
    path = build_dir / "manifest.json"
    if not build_dir.is_dir():
        raise IndexLoadError(f"{current} names {name}, which is missing; {rebuild}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexLoadError(f"{path} is missing, truncated or corrupt ({e}); {rebuild}") from None
    if not isinstance(manifest, dict) or not all(k in manifest for k in MANIFEST_KEYS) \
            or not isinstance(manifest["files"], dict):
        raise IndexLoadError(f"{path} is corrupt (it lacks {', '.join(MANIFEST_KEYS)}); {rebuild}")
    return build_dir, manifest


def index_exists(root: Path | str) -> bool:
    """True when root names a live build (it may still be corrupt: `load` checks that)."""
    return (Path(root) / "CURRENT").exists()


def has_builds(root: Path | str) -> bool:
    """True when root holds any build folder, readable or not."""
    builds = Path(root) / "builds"
    return builds.is_dir() and any(builds.iterdir())


def recorded_sources(root: Path | str) -> list[Path]:
    """The sources listed by the newest readable manifest under root, when they all still exist
    (the live build's first, then the others newest first); [] when none does."""
    root = Path(root)
    candidates = []
    try:
        candidates.append(root / (root / "CURRENT").read_text().strip() / "manifest.json")
    except OSError:
        pass
    if (root / "builds").is_dir():
        candidates += sorted((root / "builds").glob("*/manifest.json"), reverse=True)
    for path in candidates:
        try:
            sources = [Path(s) for s in json.loads(path.read_text()).get("sources", [])]
        except (OSError, ValueError, AttributeError):
            continue
        if sources and all(s.exists() for s in sources):
            return sources
    return []


# What a file that passed its checksum but does not parse raises (faiss: RuntimeError). Anything
# else, such as an ImportError of a missing dependency or a NameError, is no corrupt file and
# surfaces as itself.
PARSE_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, OSError, RuntimeError,
                EOFError)


@contextmanager
def _reading(path: Path, rebuild: str):
    try:
        yield
    except PARSE_ERRORS as e:  # a parse failure of one of our own files
        raise IndexLoadError(f"{path} cannot be read, it is corrupt ({type(e).__name__}: "
                             f"{str(e)[:200]}); {rebuild}") from None


def is_stale(manifest: Manifest) -> bool:
    """True when the recorded sources exist and their content changed since the build."""
    sources = [Path(s) for s in manifest.sources]
    if not sources or not all(s.exists() for s in sources):
        return False
    return fingerprint(sources) != manifest.source_fingerprint


def fingerprint(sources: Iterable[Path]) -> str:
    """sha256 over the relative path and content of every file ingestion reads."""
    h = hashlib.sha256()
    for root, path in source_files(sources):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"unreadable")
    return h.hexdigest()


# ---------------------------------------------------------------- files

def _article_row(a: Article) -> dict:
    return {"doc_id": a.doc_id, "title": a.title, "date": a.date, "source": a.source,
            "author": a.author, "path": a.path, "body": [list(s) for s in a.body], "text": a.text}


def _article_from_row(r: dict) -> Article:
    return Article(doc_id=r["doc_id"], text=r["text"], title=r["title"], date=r["date"],
                   source=r["source"], author=r["author"], path=r["path"],
                   body=tuple(tuple(s) for s in r["body"]))


def _passage_row(p: Passage) -> dict:
    return {"pid": p.pid, "doc_id": p.doc_id, "char_start": p.char_start, "char_end": p.char_end,
            "sentences": [list(s) for s in p.sentences], "text": p.text}


def _passage_from_row(r: dict) -> Passage:
    return Passage(pid=r["pid"], doc_id=r["doc_id"], char_start=r["char_start"],
                   char_end=r["char_end"], text=r["text"],
                   sentences=tuple(tuple(s) for s in r["sentences"]))


def _write_jsonl(path: Path, rows: Iterator[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files in name order."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(p.name.encode() + b"\0")
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def _replace(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writable(root: Path) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write the index to {root}/ ({e.strerror}); make it writable or "
                        f"pass --index with a folder you can write") from None
    return root


@contextmanager
def lock(root: Path):
    """Only one build writes an index folder at a time; a second one refuses at once."""
    with (root / ".lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `qa build` is writing {root}/ right now; wait for it to "
                            f"finish, or build into another --index folder") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
