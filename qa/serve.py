"""Answering from a sharded index on a Ray cluster, with Ray Serve (`qa serve`, `qa ask --ray`).

One deployment per shard (`shard-000`, ...) holds that shard's index and returns its candidates
for a question (qa.shards.shard_hits). The ingress deployment (`ingress`) holds the model, the
collection's manifest and BM25 statistics: it encodes the question once, asks every shard in
parallel, merges their candidates exactly as one index ranks them (qa.shards.merge_shard_hits),
and answers with the same picker and reader as `qa ask` on one machine. Ray is imported here, and
only when a command is given --ray.

Faults: a shard call whose replica dies is asked again (Serve routes it to the replica that
replaces it) until the shard's deadline; a shard that does not answer by then fails the question
with qa.settings.Unavailable naming it (`shard-001 did not answer ...`). No answer is ever built
from a subset of the shards. A client's call whose ingress replica dies is made again in the same
way (`result`). `RemoteQA` is the engine the web app answers with under --ray.

`--ingress local` (local_ingress): the asking process does the ingress's work itself, on the
app's shard deployments, which saves a Serve call per question.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .settings import Settings, Unavailable, UserError
from .types import Article

APP = "qa"
# How long the ingress waits for one shard, asking again when its replica dies, before failing
# the question (a replaced shard replica is back in a few seconds on an idle machine).
SHARD_TIMEOUT_S = 30.0
# How long a client (qa ask --ray, the web app) waits for the ingress.
ASK_TIMEOUT_S = 120.0
# Serve's health check of shard replicas (its default is 10 s): a hung replica is replaced sooner.
HEALTH_CHECK_PERIOD_S = 2.0
# Articles whose metadata the web app gets at start, for its example questions: the page needs
# the collection's count and sources, not every article (10 million in an archive).
EXAMPLES = 32
# Ray passes a reply under `max_direct_call_object_size` (100 KB by default) inline and a larger
# one through the object store, which cost 11-16 ms more per fan-out on the loopback cluster
# (scripts/serve_payload.py). A shard's reply was about 264 KB on SQuAD when it sent every
# candidate whole, 58 KB now (scripts/shard_payload.py), and grows with k, so the shard replicas
# send replies up to this size inline (gRPC's own limit is 10 MB). Since `hits` goes over gRPC,
# this applies to the calls left as actor tasks.
# QA_SHARD_INLINE_BYTES=0 leaves Ray's default.
SHARD_INLINE_BYTES = 4 * 1024 * 1024
# By default Serve calls a replica as a Ray actor task; a handle with `_by_reference=False` calls
# the replica's own gRPC server instead (every replica runs one). On the loopback cluster that cut
# a client's call of a method doing nothing from 6.4 to 2.7 ms at p50, and a fan-out to two
# deployments from 10.1 to 6.9 ms (scripts/serve_overhead.py). The questions (the web page's
# too) and the shards' candidates go that way; calls whose replies grow with the collection
# rather than with k (the catalog's sources, an article the page asks for by id) stay actor tasks.
# QA_SERVE_GRPC=0 (read where `qa serve` deploys, and by the client) makes every call an actor task.
SERVE_GRPC = os.environ.get("QA_SERVE_GRPC", "1") != "0"
# The receiving end of a gRPC call refuses a message over 4 MB by default (Serve's
# RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH): one shard's candidates for `--k 1000` were 5.3 MB on
# SQuAD (every candidate whole, as shards then sent them), and `qa ask --ray` failed. The ingress
# (receiving the shards' replies) and the client (the ingress's) take up to this. Serve reads it
# as it is imported: the ingress gets it in its runtime_env, and this process here, before
# anything imports ray.serve.
GRPC_MAX_BYTES = 1024 * 1024 * 1024
os.environ.setdefault("RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", str(GRPC_MAX_BYTES))

log = logging.getLogger(__name__)


def direct(handle, grpc: bool | None = None):
    """The handle, calling over gRPC where `grpc` (default SERVE_GRPC) allows: for small
    requests and replies."""
    return handle.options(_by_reference=False) if (SERVE_GRPC if grpc is None else grpc) else handle


def _said(e: BaseException) -> str:
    """An exception in one line: its type and the first line of what it says (a gRPC status's
    details)."""
    details = getattr(e, "details", None)
    said = details() if callable(details) else str(e)
    first = said.strip().splitlines()[0][:200] if said and said.strip() else ""
    return type(e).__name__ + (f": {first}" if first else "")


def _is_grpc(e: BaseException) -> bool:
    """A gRPC status Serve passed on as it was (grpc.aio.AioRpcError and kin)."""
    return type(e).__module__.startswith("grpc")


def _grpc_lost(e: BaseException) -> bool:
    """A gRPC call cut off by its replica going away: Serve says UNAVAILABLE as a RayActorError,
    but a replica shut down while answering (replaced after a failed health check) cancels it."""
    code = getattr(e, "code", None)
    return _is_grpc(e) and callable(code) and \
        getattr(code(), "name", "") in ("CANCELLED", "UNKNOWN", "UNAVAILABLE")


class ShardSearch:
    """A Serve deployment's class: one shard, loaded once per replica. No model: the ingress
    sends the question's vector."""

    def __init__(self, path: str, first_pid: int, model: str, nprobe: int | None = None,
                 send_extra: int | None = None):
        from .retrieve import Retriever
        from .shards import SEND_EXTRA
        from .store import load, set_nprobe

        # Candidates sent whole beyond k (shard_send_extra).
        self.send_extra = SEND_EXTRA if send_extra is None else send_extra
        self.index = load(path, model)
        if nprobe is not None:  # `deploy` checked it against the shard's manifest
            set_nprobe(self.index, nprobe)
        # A shard never encodes: the ingress sends the question's vector.
        self.retriever = Retriever(self.index, encoder=None)  # type: ignore[arg-type]
        self.first_pid = first_pid

    def hits(self, question: str, qvec, k: int, method: str, filters):
        from .shards import shard_hits

        started = time.perf_counter()
        out = shard_hits(self.retriever, self.first_pid, question,
                         None if qvec is None else np.asarray(qvec, dtype=np.float32),
                         k, method, filters, send=max(0, k + self.send_extra))
        return replace(out, ms=1000 * (time.perf_counter() - started))

    def passages(self, pids: list[int]):
        """The passages, vectors and articles of those of `pids` this shard holds: for
        candidates the merge reaches that no shard sent whole (qa.shards.merge_shard_hits)."""
        from .shards import shard_passages

        return shard_passages(self.retriever, self.first_pid, pids)

    def ping(self) -> None:
        """Nothing: what a call to a shard costs in Serve itself (Ingress.ask_timed)."""

    def inline_bytes(self) -> int:
        """The largest reply this replica sends inline, not through the object store (0: Ray's
        default); `deploy` sets it (SHARD_INLINE_BYTES)."""
        return int(os.environ.get("RAY_max_direct_call_object_size", "0"))

    def catalog(self, examples: int = EXAMPLES) -> dict:
        """What the web page shows of the shard's articles, in a size that does not grow with
        them: {"documents": how many, "sources": their distinct sources, sorted, "examples": the
        first `examples` articles without their text (the page's example questions)}."""
        articles = self.index.articles
        first = [replace(a, text="", body=()) for _, a in zip(range(examples), articles.values())]
        return {"documents": len(articles), "examples": first,
                "sources": sorted({a.source for a in articles.values() if a.source})}

    def article(self, doc_id: str) -> Article | None:
        return self.index.articles.get(doc_id)


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


class Clock:
    """Seconds this thread's question spent encoding, waiting for the shards (and of that, the
    slowest shard's own work) and merging their candidates (Ingress.ask_timed: where Serve's time
    goes, for `qa bench --ray`)."""

    def __init__(self):
        self._local = threading.local()

    def reset(self) -> None:
        self._local.spent = {"encode": 0.0, "fanout": 0.0, "shard": 0.0, "merge": 0.0}

    def add(self, part: str, seconds: float) -> None:
        spent = getattr(self._local, "spent", None)
        if spent is not None:
            spent[part] += seconds

    def spent(self) -> dict[str, float]:
        return dict(getattr(self._local, "spent", {}))


class TimedEncoder:
    """An encoder whose encode() calls are counted on a Clock; everything else is the encoder's."""

    def __init__(self, encoder, clock: Clock):
        self._encoder, self._clock = encoder, clock

    def encode(self, texts, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._encoder.encode(texts, *args, **kwargs)
        finally:
            self._clock.add("encode", time.perf_counter() - started)

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)


class FanOut:
    """Retriever.search over the shard deployments: ask all, wait for all, merge."""

    def __init__(self, index: RemoteIndex, handles: list, encoder, alpha: float,
                 timeout: float = SHARD_TIMEOUT_S, clock: Clock | None = None,
                 grpc: bool | None = None):
        self.index, self.handles, self.encoder, self.alpha = index, handles, encoder, alpha
        self.direct = [direct(h, grpc) for h in handles]  # for `hits`, `passages` and `ping`
        self.timeout = timeout
        self.clock = clock or Clock()
        # Fan-outs answered after asking a shard again, failed because a shard stayed down, and
        # questions whose merge asked for candidates no shard had sent whole.
        self.counts = {"fanouts": 0, "retried": 0, "failed": 0, "replicas_lost": 0, "fetched": 0}
        self._lock = threading.Lock()

    def _count(self, **add: int) -> None:
        with self._lock:
            for key, n in add.items():
                self.counts[key] += n

    def gather(self, method: str, *args) -> list:
        """Every shard's answer to `method(*args)`, in shard order.

        All shards are asked at once. A call whose replica dies (kill -9, a lost node) is asked
        again, which Serve routes to the replica replacing it, until `timeout` seconds from the
        start; the calls only read, so asking twice is safe. `hits` and `ping` go over gRPC
        (SERVE_GRPC), where a replica shut down mid-call also cancels it: asked again too.

        Raises:
            Unavailable: a shard did not answer in time, or answered with another gRPC status;
                the message names it.
        """
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + self.timeout
        handles = self.direct if method in ("hits", "passages", "ping") else self.handles
        calls = [getattr(h, method).remote(*args) for h in handles]
        out, lost_here = [], 0
        for handle, call in zip(handles, calls):
            lost = 0
            while True:
                try:
                    out.append(call.result(timeout_s=max(0.0, deadline - time.monotonic())))
                    break
                except TimeoutError:
                    call.cancel()
                    self._count(fanouts=1, failed=1, replicas_lost=lost_here + lost)
                    raise Unavailable(self._down(handle.deployment_name, lost)) from None
                except Exception as e:
                    if not isinstance(e, RayActorError) and not _grpc_lost(e):
                        if not _is_grpc(e):
                            raise
                        for other in calls:  # a gRPC status that asking again will not change
                            other.cancel()
                        self._count(fanouts=1, failed=1, replicas_lost=lost_here + lost)
                        raise Unavailable(f"{handle.deployment_name} failed to answer "
                                          f"({_said(e)}); no answer is given from the other "
                                          f"shards alone") from None
                    lost += 1
                    if time.monotonic() >= deadline:  # its replicas keep dying
                        self._count(fanouts=1, failed=1, replicas_lost=lost_here + lost)
                        raise Unavailable(self._down(handle.deployment_name, lost)) from None
                    log.warning("%s: its replica died during a call (%s); asking again",
                                handle.deployment_name, type(e).__name__)
                    time.sleep(0.1)  # the router drops the dead replica; do not spin meanwhile
                    call = getattr(handle, method).remote(*args)
            lost_here += lost
        self._count(fanouts=1, retried=int(lost_here > 0), replicas_lost=lost_here)
        return out

    def _down(self, shard: str, lost: int) -> str:
        why = (f" (its replica died {lost} time(s) during the call and no replacement answered "
               f"in time)" if lost else "")
        return (f"{shard} did not answer within {self.timeout:g} s{why}; no answer is given from "
                f"the other shards alone. Retry in a few seconds; if it persists, check that "
                f"{shard}'s folder is readable on every node and redeploy with `qa serve`")

    def search(self, question: str, k: int = 5, method: str = "hybrid", filters=None, qvec=None):
        from .shards import merge_shard_hits

        if method != "bm25" and qvec is None:
            qvec = self.encoder.encode([question])[0]
        # Every shard answers or the question fails: never an answer from a subset of shards.
        started = time.perf_counter()
        parts = self.gather("hits", question, qvec, k, method, filters)
        self.clock.add("fanout", time.perf_counter() - started)
        self.clock.add("shard", max((p.ms for p in parts), default=0.0) / 1000)
        started = time.perf_counter()
        fetched: list = []

        def fetch(pids: list[int]) -> list:
            got = self.gather("passages", pids)
            fetched.extend(got)
            self._count(fetched=1)
            return got

        hits = merge_shard_hits(parts, k, method, self.alpha, fetch)
        self.index.hold(parts + fetched)
        self.clock.add("merge", time.perf_counter() - started)
        return hits


class Ingress:
    """Encodes, fans out, merges, picks; returns `qa ask --json`. The `ingress` deployment's class,
    and, made by local_ingress, the same in a client's process (`--ingress local`)."""

    def __init__(self, root: str, settings: dict, *shards, shard_timeout: float = SHARD_TIMEOUT_S,
                 grpc: bool = True):
        from .embed import load_encoder
        from .engine import QA
        from .retrieve import HYBRID_ALPHA

        index = RemoteIndex(Path(root))
        self.index, self.fields = index, settings
        self.settings = Settings(**settings)
        self.clock = Clock()
        encoder = TimedEncoder(load_encoder(index.model), self.clock)
        self.qa = QA(index, encoder, self.settings)  # type: ignore[arg-type]  # index-like
        self.fanout = FanOut(index, list(shards), encoder, HYBRID_ALPHA, shard_timeout,
                             self.clock, grpc)
        self.qa.retriever = self.fanout  # type: ignore[assignment]

    def answer(self, question: str, k: int | None = None, retriever: str | None = None,
               filters=None, history: list[str] | None = None, page: bool = False) -> dict:
        """The object `qa ask --json` prints; with `page`, what the web page shows besides:
        {"json", "sentences" (the picker's best sentence per passage), "articles" (of the
        passages, whole)}."""
        result = self.qa.ask(question, k=k, retriever=retriever, filters=filters, history=history)
        out = self.qa.to_json(result)
        if not page:
            return out
        # This thread's candidates' articles: the page shows the cited ones whole.
        docs = {h.passage.doc_id for h in result.hits}
        return {"json": out, "sentences": list(result.sentences),
                "articles": {d: self.index.articles[d] for d in docs}}

    def describe(self) -> dict:
        """The collection's manifest and settings, and what the web page shows of its articles
        (ShardSearch.catalog, over every shard: the first EXAMPLES articles)."""
        parts = self.fanout.gather("catalog")
        return {"manifest": self.index.raw, "settings": self.fields,
                "documents": sum(p["documents"] for p in parts),
                "sources": sorted({s for p in parts for s in p["sources"]}),
                "examples": [a for p in parts for a in p["examples"]][:EXAMPLES]}

    def find(self, doc_id: str) -> Article | None:
        """One article, whole, from the shard that holds it."""
        parts = self.fanout.gather("article", doc_id)
        return next((a for a in parts if a is not None), None)

    # Serve's calls: off the replica's event loop, since the fan-out waits on the shards.

    async def ask(self, question: str, k: int | None = None, retriever: str | None = None,
                  filters=None, history: list[str] | None = None) -> dict:
        return await asyncio.to_thread(self.answer, question, k, retriever, filters, history)

    async def ask_page(self, question: str, k: int | None = None, retriever: str | None = None,
                       filters=None, history: list[str] | None = None) -> dict:
        return await asyncio.to_thread(self.answer, question, k, retriever, filters, history,
                                       True)

    async def info(self) -> dict:
        return await asyncio.to_thread(self.describe)

    async def article(self, doc_id: str) -> Article | None:
        return await asyncio.to_thread(self.find, doc_id)

    async def config(self) -> dict:
        """What an ingress in another process needs to answer as this one does (local_ingress):
        the index folder, the settings, the shard deployments and how long to wait for them."""
        return {"root": str(self.index.path), "settings": self.fields,
                "shards": [h.deployment_name for h in self.fanout.handles],
                "shard_timeout": self.fanout.timeout}

    async def ask_timed(self, question: str, k: int | None = None) -> dict:
        """As ask, with where the ingress's time went: {"json", "ms": {"encode", "fanout" (asking
        every shard and waiting for all), "total" (in this replica, from the question to its
        JSON)}}. For `qa bench --ray`, which splits Serve's overhead with it."""
        return await asyncio.to_thread(self._timed, question, k)

    def _timed(self, question: str, k: int | None) -> dict:
        self.clock.reset()
        started = time.perf_counter()
        out = self.answer(question, k)
        total = time.perf_counter() - started
        ms = {part: round(s * 1000, 3) for part, s in self.clock.spent().items()}
        return {"json": out, "ms": {**ms, "total": round(total * 1000, 3)}}

    async def noop_fanout(self) -> float:
        """Milliseconds to fan out, as an answer does, a call that does nothing
        (`ShardSearch.ping`): what Serve's calls cost apart from the search and the candidates.
        Its own call, so that no answer's time holds it."""
        return await asyncio.to_thread(self._noop_fanout)

    def _noop_fanout(self) -> float:
        started = time.perf_counter()
        for call in [h.ping.remote() for h in self.fanout.direct]:
            call.result(timeout_s=self.fanout.timeout)
        return round((time.perf_counter() - started) * 1000, 3)

    def stats(self) -> dict:
        """Fan-outs so far, those answered after asking a shard again, those failed."""
        return dict(self.fanout.counts)


def shard_inline_bytes() -> int:
    """SHARD_INLINE_BYTES, or QA_SHARD_INLINE_BYTES when set (0: Ray's default).

    Raises:
        UserError: QA_SHARD_INLINE_BYTES is not a whole number of bytes.
    """
    raw = os.environ.get("QA_SHARD_INLINE_BYTES", "").strip()
    if not raw:
        return SHARD_INLINE_BYTES
    if not raw.isdigit():
        raise UserError(f"QA_SHARD_INLINE_BYTES must be a whole number of bytes (0: Ray's default "
                        f"of 100 KB), got {raw!r}")
    return int(raw)


def shard_send_extra() -> int:
    """How many candidates beyond k each shard sends whole (passage, vector, article):
    qa.shards.SEND_EXTRA, or QA_SHARD_SEND_EXTRA when set. A large number sends every candidate
    whole, as shards did before; a negative one fewer than k, so the merge fetches (for tests).

    Raises:
        UserError: QA_SHARD_SEND_EXTRA is not a whole number.
    """
    from .shards import SEND_EXTRA

    raw = os.environ.get("QA_SHARD_SEND_EXTRA", "").strip()
    if not raw:
        return SEND_EXTRA
    if not re.fullmatch(r"-?\d+", raw):
        raise UserError(f"QA_SHARD_SEND_EXTRA must be a whole number of candidates (default "
                        f"{SEND_EXTRA}), got {raw!r}")
    return int(raw)


def deploy(address: str, index_dir: Path, settings: Settings, replicas: int = 1,
           cpus_per_replica: float = 0.25, shard_timeout: float = SHARD_TIMEOUT_S,
           ingress_replicas: int = 1) -> dict:
    """Run the app on the cluster (replacing a running one): a deployment per shard, the ingress.

    Args:
        replicas: replicas of each shard.
        shard_timeout: seconds the ingress waits for a shard (asking again when its replica
            dies) before failing the question with a message naming the shard.
        ingress_replicas: replicas of the ingress, each with its own model and reader. With
            two or more, a question whose ingress replica dies is asked again of another at once
            (`result`), instead of waiting for the dead one's replacement to load.

    Returns:
        {"shards": n, "replicas": replicas, "ingress_replicas": ingress_replicas}
    """
    from .cluster import connect

    ray = connect(address)
    from ray import serve

    index = RemoteIndex(Path(index_dir).resolve())
    if settings.nprobe is not None:  # refused here, not in a replica that would never start
        from .store import Manifest, _read_manifest, check_nprobe

        for entry in index.raw["shards"]:
            shard = index.build_dir / entry["path"]
            raw = _read_manifest(shard, f"run `qa build --index {index_dir} --shards N`")[1]
            check_nprobe(Manifest.from_json(raw), settings.nprobe, shard)
    serve.start(proxy_location="Disabled")
    options: dict[str, Any] = {"num_cpus": cpus_per_replica}
    inline = shard_inline_bytes()
    send_extra = shard_send_extra()
    shard_options = {**options, "runtime_env": {"env_vars": {
        "RAY_max_direct_call_object_size": str(inline)}}} if inline else options
    shard_apps = []
    for entry in index.raw["shards"]:
        dep: Any = serve.deployment(ShardSearch, name=entry["path"], num_replicas=replicas,
                                    ray_actor_options=shard_options,
                                    health_check_period_s=HEALTH_CHECK_PERIOD_S)
        shard_apps.append(dep.bind(str(index.build_dir / entry["path"]), entry["first_pid"],
                                   index.model, settings.nprobe, send_extra))
    fields = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
    fields["index_dir"] = str(fields["index_dir"])
    ingress_options = {**options, "runtime_env": {"env_vars": {
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MAX_BYTES)}}}
    ingress: Any = serve.deployment(Ingress, name="ingress", num_replicas=ingress_replicas,
                                    ray_actor_options=ingress_options)
    serve.run(ingress.bind(str(index.path), fields, *shard_apps, shard_timeout=shard_timeout,
                           grpc=SERVE_GRPC), name=APP, route_prefix=None)
    del ray
    return {"shards": len(shard_apps), "replicas": replicas, "ingress_replicas": ingress_replicas}


def stop(address: str) -> bool:
    """Delete the `qa` app on the cluster at address (`qa serve --stop`), freeing the CPUs its
    replicas hold; whether one was running.

    Raises:
        UserError: no cluster there.
    """
    from .cluster import connect

    connect(address)
    from ray import serve

    running = APP in serve.status().applications  # empty where Serve never started
    if running:
        serve.delete(APP)
    return running


def app_handle(address: str):
    """The handle of the running `qa` app on the cluster at address.

    Raises:
        UserError: no cluster there, or no `qa` app on it; the message says how to start it.
    """
    from .cluster import connect

    connect(address)
    from ray import serve

    try:
        return serve.get_app_handle(APP)
    except Exception as e:  # Serve says "not found" in several exception types across 2.x
        raise UserError(f"no qa app is running on the Ray cluster at {address} "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); start it "
                        f"with `qa serve --ray {address} --index DIR`") from None


def result(address: str, call, timeout: float = ASK_TIMEOUT_S):
    """The result of `call()`, a handle call to the app, its failures said in one line. A call
    whose ingress replica dies (kill -9, a lost node, or a gRPC call cut off as it shuts down) is
    made again, which Serve routes to another replica or the one replacing it, until `timeout`
    seconds from the start; the app's calls only read, so making one twice is safe.

    Raises:
        UserError: what the ingress raised for the request (a bad question, a filter), as it was.
        Unavailable: a shard or the ingress is down (see FanOut.gather), or no answer in time.
    """
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import RayServeException

    redeploy = f"redeploy with `qa serve --ray {address} --index DIR`"
    deadline = time.monotonic() + timeout
    response = call()
    while True:
        try:
            return response.result(timeout_s=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            response.cancel()
            raise Unavailable(f"the qa app on the Ray cluster at {address} did not answer within "
                              f"{timeout:g} s; retry later, and if it persists {redeploy}") from None
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise
        except Exception as e:
            # Anything else Serve raises (its own errors, a gRPC status) is said in one line.
            if not isinstance(e, (RayActorError, RayServeException)) and not _is_grpc(e):
                raise
            if (isinstance(e, RayActorError) or _grpc_lost(e)) and time.monotonic() < deadline:
                log.warning("the ingress replica died during a call (%s); asking again",
                            type(e).__name__)
                time.sleep(0.1)  # the router drops the dead replica; do not spin meanwhile
                response = call()
                continue
            raise Unavailable(f"the qa app on the Ray cluster at {address} failed to answer "
                              f"({_said(e)}); retry in a few seconds, and if it persists "
                              f"{redeploy}") from None


class AppIngress:
    """The `qa` app's ingress deployment, called through a Serve handle: Ingress's answer,
    describe and find, each call made again if its replica dies (`result`)."""

    def __init__(self, address: str, handle):
        self.address, self.handle = address, handle
        self.direct = direct(handle)  # for the answers: their replies grow with k, not the collection

    def answer(self, question: str, k: int | None = None, retriever: str | None = None,
               filters=None, history: list[str] | None = None, page: bool = False) -> dict:
        method = self.direct.ask_page if page else self.direct.ask
        return result(self.address, lambda: method.remote(question, k, retriever, filters, history))

    def describe(self) -> dict:
        return result(self.address, lambda: self.handle.info.remote())

    def find(self, doc_id: str) -> Article | None:
        return result(self.address, lambda: self.handle.article.remote(doc_id))


def local_ingress(address: str) -> Ingress:
    """An ingress in this process on the shards of the `qa` app running at address
    (`--ingress local`): it loads the model and the reader here, and asks the shard deployments
    itself, which saves a Serve call per question (the hop to the app's ingress). It needs the
    index folder readable here, at the path the app serves it from (its manifest and BM25
    statistics; the shards stay in their replicas).

    Raises:
        UserError: no cluster or app there, or the index folder is not here.
    """
    from ray import serve

    handle = app_handle(address)
    config = result(address, lambda: direct(handle).config.remote())
    root = Path(config["root"])
    if not (root / "CURRENT").is_file():
        raise UserError(f"--ingress local reads the index's manifest at {root}, where the qa app "
                        f"on {address} serves it from, and there is no index there on this "
                        f"machine; make that folder readable here at the same path, or drop "
                        f"--ingress local to ask the app's own ingress")
    shards = [serve.get_deployment_handle(name, app_name=APP) for name in config["shards"]]
    return Ingress(str(root), config["settings"], *shards, shard_timeout=config["shard_timeout"],
                   grpc=SERVE_GRPC)


def open_ingress(address: str, local: bool = False) -> Ingress | AppIngress:
    """The `qa` app at address: its ingress deployment, or with `local` one in this process."""
    return local_ingress(address) if local else AppIngress(address, app_handle(address))


def ask(address: str, question: str, *, k=None, retriever=None, filters=None, history=None,
        local: bool = False) -> dict:
    """One question through the running app; the object `qa ask --json` prints."""
    return open_ingress(address, local).answer(question, k, retriever, filters, history)


# ---------------------------------------------------------------- the web app's engine

@dataclass(frozen=True)
class RemoteResult:
    """What the web page needs of an answer from the app: the JSON and the picker's sentences."""

    out: dict
    sentences: tuple


class RemoteArticles:
    """The collection's articles as the web page reads them under --ray: their count and
    sources, a few of them for examples (`values()` and `items()` give these, without text), and
    whole articles by `[doc_id]` (those of recent answers, kept; others asked of the shards)."""

    def __init__(self, documents: int, sources: list[str], examples: list[Article], fetch,
                 keep: int = 512):
        from collections import OrderedDict

        self.documents, self.sources = documents, list(sources)
        self._examples = {a.doc_id: a for a in examples}
        self._whole: OrderedDict[str, Article] = OrderedDict()
        self._fetch, self._keep = fetch, keep
        self._lock = threading.Lock()

    def remember(self, articles: dict[str, Article]) -> None:
        with self._lock:
            for doc_id, article in articles.items():
                self._whole[doc_id] = article
                self._whole.move_to_end(doc_id)
            while len(self._whole) > self._keep:
                self._whole.popitem(last=False)

    def __getitem__(self, doc_id: str) -> Article:
        with self._lock:
            if doc_id in self._whole:
                return self._whole[doc_id]
        article = self._fetch(doc_id)
        if article is None:
            raise KeyError(doc_id)
        self.remember({doc_id: article})
        return article

    def get(self, doc_id: str, default=None):
        try:
            return self[doc_id]
        except KeyError:
            return default

    def __contains__(self, doc_id: object) -> bool:
        # Only the shards know every doc_id: one not kept here is asked of them.
        return isinstance(doc_id, str) and self.get(doc_id) is not None

    def __len__(self) -> int:
        return self.documents

    def __iter__(self):
        return iter(self._examples)

    def keys(self):
        return self._examples.keys()

    def values(self):
        return self._examples.values()

    def items(self):
        return self._examples.items()


class RemoteCatalog:
    """The index as the web app sees it under --ray: the manifest and the articles."""

    def __init__(self, manifest, articles: RemoteArticles):
        self.manifest, self.articles = manifest, articles
        self.passages = range(manifest.passages)  # their count; the passages stay on the shards
        self.stale = False

    @property
    def model(self) -> str:
        return self.manifest.model


class RemoteQA:
    """The engine of `python app.py --ray ADDRESS`: qa.engine.QA's ask, to_json, index and
    settings, answered by the `qa` app on the cluster, through its ingress deployment or one in
    this process (`--ingress local`)."""

    def __init__(self, ingress: Ingress | AppIngress):
        from .store import Manifest

        self.ingress = ingress
        info = ingress.describe()
        self.settings = Settings(**info["settings"])
        articles = RemoteArticles(info["documents"], info["sources"], info["examples"],
                                  ingress.find)
        self.index = RemoteCatalog(Manifest.from_json(info["manifest"]), articles)

    def ask(self, question: str, *, k: int | None = None, retriever: str | None = None,
            filters=None, history: list[str] | None = None) -> RemoteResult:
        """As QA.ask, through the app.

        Raises:
            UserError: as QA.ask.
            Unavailable: a shard or the app is down; the message names it.
        """
        got = self.ingress.answer(question, k, retriever, filters, history, page=True)
        self.index.articles.remember(got["articles"])
        return RemoteResult(got["json"], tuple(got["sentences"]))

    def to_json(self, result: RemoteResult) -> dict:
        return result.out


def open_app(address: str, local: bool = False) -> RemoteQA:
    """The engine for the web app, on the `qa` app running on the cluster at address; with
    `local`, its ingress in this process (local_ingress).

    Raises:
        UserError: no cluster at address, or no `qa` app on it.
    """
    return RemoteQA(open_ingress(address, local))
