"""Answering from a sharded index on a Ray cluster, with Ray Serve (`qa serve`, `qa ask --ray`).

One deployment per shard (`shard-000`, ...) holds that shard's index and returns its candidates
for a question (qa.shards.shard_hits). The ingress deployment (`ingress`) holds the model, the
collection's manifest and BM25 statistics: it encodes the question once, asks every shard in
parallel, merges their candidates exactly as one index ranks them (qa.shards.merge_shard_hits),
and answers with the same picker and reader as `qa ask` on one machine. Ray is imported here, and
only when a command is given --ray.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .settings import Settings, UserError

APP = "qa"


class ShardSearch:
    """A Serve deployment's class: one shard, loaded once per replica. No model: the ingress
    sends the question's vector."""

    def __init__(self, path: str, first_pid: int, model: str):
        from .retrieve import Retriever
        from .store import load

        self.index = load(path, model)
        # A shard never encodes: the ingress sends the question's vector.
        self.retriever = Retriever(self.index, encoder=None)  # type: ignore[arg-type]
        self.first_pid = first_pid

    def hits(self, question: str, qvec, k: int, method: str, filters):
        from .shards import shard_hits

        return shard_hits(self.retriever, self.first_pid, question,
                          None if qvec is None else np.asarray(qvec, dtype=np.float32),
                          k, method, filters)


class _RequestArticles:
    """The articles the picker and to_json read: this request's candidates (per thread), and the
    collection's article count for len()."""

    def __init__(self, local: threading.local, documents: int):
        self._local, self._documents = local, documents

    def __getitem__(self, doc_id: str):
        return self._local.articles[doc_id]

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in getattr(self._local, "articles", {})

    def __len__(self) -> int:
        return self._documents

    def items(self):
        return getattr(self._local, "articles", {}).items()

    def values(self):
        return getattr(self._local, "articles", {}).values()


class _RequestVectors:
    def __init__(self, local: threading.local):
        self._local = local

    def __getitem__(self, pids) -> np.ndarray:
        return np.stack([self._local.vectors[int(p)] for p in np.asarray(pids).reshape(-1)])


class RemoteIndex:
    """What the ingress knows of a sharded index without loading its shards: the manifest, the
    collection's BM25 statistics, and (per request, per thread) the candidates' articles and
    vectors the shards sent."""

    def __init__(self, root: Path):
        from .shards import CORPUS_FILE, CorpusTable
        from .store import Manifest, _read_manifest

        build_dir, raw = _read_manifest(root, f"run `qa build --index {root} --shards N`")
        if raw.get("kind") != "sharded":
            raise UserError(f"{root}/ is not a sharded index; build one with `qa build --index "
                            f"{root} --shards N` (and --ray ADDRESS to build it on the cluster)")
        self.path, self.build_dir, self.raw = root, build_dir, raw
        self.manifest = Manifest.from_json(raw)
        corpus = json.loads((build_dir / CORPUS_FILE).read_text(encoding="utf-8"))
        self.bm25 = CorpusTable.from_corpus(corpus)
        self._local = threading.local()
        self.articles = _RequestArticles(self._local, self.manifest.documents)
        self.vectors = _RequestVectors(self._local)
        self.passages: list = []
        self.stale = False

    @property
    def model(self) -> str:
        return self.manifest.model

    def hold(self, parts) -> None:
        """This thread's request: the candidates' articles and vectors."""
        self._local.articles = {d: a for p in parts for d, a in p.articles.items()}
        self._local.vectors = {pid: v for p in parts for pid, v in p.vectors.items()}


class FanOut:
    """Retriever.search over the shard deployments: ask all, wait for all, merge."""

    def __init__(self, index: RemoteIndex, handles: list, encoder, alpha: float):
        self.index, self.handles, self.encoder, self.alpha = index, handles, encoder, alpha

    def search(self, question: str, k: int = 5, method: str = "hybrid", filters=None, qvec=None):
        from .shards import merge_shard_hits

        if method != "bm25" and qvec is None:
            qvec = self.encoder.encode([question])[0]
        responses = [h.hits.remote(question, qvec, k, method, filters) for h in self.handles]
        # Every shard answers or the question fails: never an answer from a subset of shards.
        parts = [r.result() for r in responses]
        self.index.hold(parts)
        return merge_shard_hits(parts, k, method, self.alpha, qvec)


class Ingress:
    """A Serve deployment's class: encodes, fans out, merges, picks; returns `qa ask --json`."""

    def __init__(self, root: str, settings: dict, *shards):
        from .embed import load_encoder
        from .engine import QA
        from .retrieve import HYBRID_ALPHA

        index = RemoteIndex(Path(root))
        self.settings = Settings(**settings)
        encoder = load_encoder(index.model)
        self.qa = QA(index, encoder, self.settings)  # type: ignore[arg-type]  # index-like
        self.qa.retriever = FanOut(index, list(shards), encoder, HYBRID_ALPHA)  # type: ignore[assignment]

    def _answer(self, question, k, retriever, filters, history) -> dict:
        result = self.qa.ask(question, k=k, retriever=retriever, filters=filters, history=history)
        return self.qa.to_json(result)

    async def ask(self, question: str, k: int | None = None, retriever: str | None = None,
                  filters=None, history: list[str] | None = None) -> dict:
        # Off the replica's event loop: the fan-out waits on the shards' responses.
        return await asyncio.to_thread(self._answer, question, k, retriever, filters, history)


def deploy(address: str, index_dir: Path, settings: Settings, replicas: int = 1,
           cpus_per_replica: float = 0.25) -> dict:
    """Run the app on the cluster (replacing a running one): a deployment per shard, the ingress.

    Returns:
        {"shards": n, "replicas": replicas}
    """
    from .cluster import connect

    ray = connect(address)
    from ray import serve

    index = RemoteIndex(Path(index_dir).resolve())
    serve.start(proxy_location="Disabled")
    options = {"num_cpus": cpus_per_replica}
    shard_apps = []
    for entry in index.raw["shards"]:
        dep: Any = serve.deployment(ShardSearch, name=entry["path"], num_replicas=replicas,
                                    ray_actor_options=options)
        shard_apps.append(dep.bind(str(index.build_dir / entry["path"]), entry["first_pid"],
                                   index.model))
    fields = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
    fields["index_dir"] = str(fields["index_dir"])
    ingress: Any = serve.deployment(Ingress, name="ingress", num_replicas=1,
                                    ray_actor_options=options)
    serve.run(ingress.bind(str(index.path), fields, *shard_apps), name=APP, route_prefix=None)
    del ray
    return {"shards": len(shard_apps), "replicas": replicas}


def ask(address: str, question: str, *, k=None, retriever=None, filters=None, history=None) -> dict:
    """One question through the running app; the object `qa ask --json` prints."""
    from .cluster import connect

    connect(address)
    from ray import serve

    try:
        handle = serve.get_app_handle(APP)
    except Exception as e:  # Serve says "not found" in several exception types across 2.x
        raise UserError(f"no qa app is running on the Ray cluster at {address} ({e}); start it "
                        f"with `qa serve --ray {address} --index DIR`") from None
    return handle.ask.remote(question, k, retriever, filters, history).result()
