"""The sharded build on a Ray cluster (`qa build --ray ADDRESS --shards N`); Ray is imported here only.

The pipeline, in Ray Data:
  files, listed by the driver in path order
  -> read and parsed in tasks across the cluster (qa.ingest.read_file: decoding, HTML
     extraction, metadata), materialized in the object store; the driver takes only each
     article's ids, where it was read and a hash of its text (qa.ingest.Found), and decides ids
     and duplicates in path order exactly as a single build does (qa.ingest.Choices)
  -> those choices joined to the files' rows: one row per article kept, numbered in path order
  -> the articles chunked and embedded, in an actor pool (each actor loads the model once: its
     tokenizer sizes the passages, then it encodes them); each article rides along as its own row
  -> materialized in the object store; one pass of tasks counts passages per article and the
     BM25 statistics per block, which the driver adds up and plans the shards with (qa.shards)
  -> each passage and article gets its global id and shard
  -> grouped by shard; each group is written as a normal index folder (qa.shards.write_shard)
The driver never holds the articles' text: it holds a few strings per article (its choices) and
a few numbers per article (the passage counts, the shard plan).
The shards are written under the new build's temporary folder, which the driver then publishes as
a single build does: a build that fails leaves the previous index serving. Every node must see
that folder at the same path (one machine, or a shared file system).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .settings import INDEX_TYPES, Settings, UserError

INSTALL_HINT = "pip install -e .[ray]  (or pip install 'qa[ray]')"


def import_ray():
    """ray, or a UserError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise UserError(f"--ray needs Ray, which is not installed ({e}); install it with "
                        f"`{INSTALL_HINT}`") from None
    return ray


def connect(address: str):
    """Join the Ray cluster at address (host:port, or "auto"); quiet, and idempotent.

    Raises:
        UserError: nothing listens at address, or Ray cannot join the cluster there.
    """
    ray = import_ray()
    # Never a cluster of its own: without this, a Ray call made after ray.shutdown() (by a build
    # abandoned when a node was lost, as the process ends) starts a new local cluster, with token
    # authentication and a ~/.ray/auth_token that `ray start --address` then trips on.
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False
    if not ray.is_initialized():
        _probe(address)
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot reach a Ray cluster at {address} ({str(e).splitlines()[0]}); "
                            f"start one with `ray start --head --port 6379` and pass --ray "
                            f"127.0.0.1:6379") from None
    return ray


def _probe(address: str, seconds: float = 5.0) -> None:
    """Refuse at once an address where nothing listens: ray.init would wait minutes for it."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray parses itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as e:
        raise UserError(f"no Ray cluster at {address} ({e.strerror or e}); start one with `ray "
                        f"start --head --port {port}` or pass the address `ray status` shows "
                        f"to --ray") from None


def _threads(n: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


class ChunkEmbed:
    """Ray Data actor: article rows -> passage rows (ids within the article) with their unit
    vectors. The model is loaded once per actor and serves both the chunker (its tokenizer
    sizes passages) and the embedding."""

    def __init__(self, settings: dict, cpus: float):
        from .embed import load_encoder

        _threads(cpus)
        self.settings = Settings(**settings)
        self.encoder = load_encoder(self.settings.model)

    def __call__(self, batch: dict) -> dict:
        from .build import _chunk_all
        from .store import _article_from_row, _passage_row, embed_text

        out: dict[str, list] = {"article": [], "j": [], "passage": [], "text": []}
        for i, row in zip(batch["article"], batch["row"]):
            article = _article_from_row(json.loads(row))
            # The article itself rides along as passage -1, so that its shard's writer gets it
            # from the rows it is given, not from the driver.
            out["article"].append(int(i))
            out["j"].append(-1)
            out["passage"].append(row)
            out["text"].append("")
            for p in _chunk_all([article], self.encoder, self.settings):
                out["article"].append(int(i))
                out["j"].append(p.pid)
                out["passage"].append(json.dumps(_passage_row(p), ensure_ascii=False))
                out["text"].append(embed_text(article, p, self.settings.title_context))
        cols = {k: np.array(v, dtype=object if k in ("passage", "text") else np.int64)
                for k, v in out.items()}
        passages = cols["j"] >= 0
        vectors = np.zeros((len(out["j"]), self.encoder.dim), dtype=np.float32)
        if passages.any():
            vectors[passages] = self.encoder.encode(list(cols["text"][passages]),
                                                    batch_size=self.settings.batch_size)
        cols["vector"] = vectors
        return cols


def _read_files(batch: dict) -> dict:
    """Ray Data task: files -> their articles (rows, as JSON), what ingest decides on of each
    (qa.ingest.Found) and what was skipped, why."""
    from dataclasses import astuple

    from .ingest import Found, read_file
    from .store import _article_row

    articles, found, skipped = [], [], []
    for root, path in zip(batch["root"], batch["path"]):
        got, why = read_file(Path(root), Path(path))
        articles.append(json.dumps([_article_row(a) for a in got], ensure_ascii=False))
        found.append(json.dumps([astuple(Found.of(a, Path(path))) for a in got],
                                ensure_ascii=False))
        skipped.append(json.dumps(why, ensure_ascii=False))
    return {"file": batch["file"], "articles": np.array(articles, dtype=object),
            "found": np.array(found, dtype=object), "skipped": np.array(skipped, dtype=object)}


def _kept(batch: dict, choices: list, per_part: int, get: Callable | None = None) -> dict:
    """Ray Data: files' articles (a row a file) -> one row per article kept, numbered in path
    order, under the doc_id ingest chose.

    `choices[i]` holds the choices of files i * per_part to (i + 1) * per_part - 1, in order, each
    (the doc_id or None per article, the number of the file's first article kept): an object ref
    that `get` (ray.get) fetches, so a task fetches the parts of its own files only. Looked up by
    file number, so the files' rows may come in any order.
    """
    if get is None:
        import ray

        get = ray.get
    numbers, rows = [], []
    parts: dict[int, list] = {}
    for file, articles in zip(batch["file"], batch["articles"]):
        part, at = divmod(int(file), per_part)
        if part not in parts:
            parts[part] = get(choices[part])
        keep, n = parts[part][at]
        for row, doc_id in zip(json.loads(articles), keep, strict=True):
            if doc_id is None:
                continue
            row["doc_id"] = doc_id
            numbers.append(n)
            rows.append(json.dumps(row, ensure_ascii=False))
            n += 1
    return {"article": np.array(numbers, dtype=np.int64), "row": np.array(rows, dtype=object)}


def ingest_on_ray(ray, sources: list[Path], workers: int, files_per_task: int = 64):
    """qa.ingest.ingest on a cluster: Ray Data tasks of one CPU read and parse the files
    (qa.ingest.read_file), and the articles stay in the cluster's object store. The driver gets
    only what it decides on (qa.ingest.Found: ids, where, a hash of the text) and decides in path
    order, as ingest does, so the report and the articles are the same.

    Args:
        ray: the joined `ray` module (connect).
        sources: folders or files, as `qa build`.
        workers: read tasks at once, at most.
        files_per_task: files one task reads.

    Returns:
        (the IngestReport, with `articles` empty and `kept` counted; a materialized Ray Dataset
        of the kept articles, in blocks for `workers` embedding actors, one row each:
        `article`, its number in path order, and `row`, the article as qa.store's JSON row).
        Every node must see the files at the same path.

    Raises:
        UserError: as ingest; or a file's result is missing.
    """
    from .ingest import Choices, Found, source_files

    files = list(source_files(sources))
    choices = Choices(len(files))
    if not files:
        choices.done(sources)  # raises: no readable articles
    items = [{"file": i, "root": str(root), "path": str(path)}
             for i, (root, path) in enumerate(files)]
    blocks = max(1, min(len(items), -(-len(items) // files_per_task)))
    # Read in path order, so that the driver decides as one process does, file by file.
    with _in_order(ray):
        read = (ray.data.from_items(items, override_num_blocks=blocks)
                .map_batches(_read_files, batch_size=files_per_task, num_cpus=1,
                             compute=ray.data.TaskPoolStrategy(size=max(1, workers)))
                .materialize())
        decided: list[tuple[list[str | None], int]] = []
        # A file's row at a time: the driver never holds every article's strings.
        for r in read.select_columns(["file", "found", "skipped"]).iter_rows():
            if int(r["file"]) != len(decided):
                break
            root, path = files[len(decided)]
            first = choices.report.kept
            ids = choices.file(root, path, [Found(*f) for f in json.loads(r["found"])],
                               [tuple(w) for w in json.loads(r["skipped"])])
            decided.append((ids, first))
    if len(decided) != len(files):
        raise UserError(f"the Ray build got the files back out of order or not all of them "
                        f"({len(decided)} of {len(files)} in order); the previous index is "
                        f"still live")
    report = choices.done(sources)
    # The choices go to the object store in parts of files_per_task files; each task of the
    # join fetches the parts its files fall in. Materialized here, in blocks for the embedding
    # actors: these tasks need CPUs, which the actor pool downstream would otherwise hold while
    # waiting for them.
    parts = [ray.put(decided[i:i + files_per_task])
             for i in range(0, len(decided), files_per_task)]
    kept = (read.map_batches(_kept, batch_size=files_per_task,
                             fn_kwargs={"choices": parts, "per_part": files_per_task})
            .repartition(max(1, min(report.kept, 4 * workers)))
            .materialize())
    return report, kept


@contextmanager
def _in_order(ray) -> Iterator[None]:
    """Inside this `with`, Ray Data keeps rows in their order (`preserve_order`)."""
    options = ray.data.DataContext.get_current().execution_options
    before, options.preserve_order = options.preserve_order, True
    try:
        yield
    finally:
        options.preserve_order = before


class NodeWatch:
    """The nodes a build started with, and the first of them to leave the cluster since."""

    def __init__(self, ray, period: float = 2.0):
        self.ray, self.period = ray, period
        self.nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}

    def check(self) -> str | None:
        """The first node that left the cluster since the start, as "node ID (address)"."""
        try:
            alive = {n["NodeID"] for n in self.ray.nodes() if n["Alive"]}
        except Exception:  # the head itself is unreachable: not a lost worker node
            return None
        gone = [n for n in self.nodes if n not in alive]
        return f"node {gone[0][:12]} ({self.nodes[gone[0]]})" if gone else None

    def run(self, work: Callable[[], None]) -> str | None:
        """work() in a thread, this one checking the nodes every `period` seconds meanwhile.

        Returns:
            the node lost, as soon as one is (work goes on in its daemon thread, and ends with
            the process); None when work finished with every node still there.

        Raises:
            whatever work raised, unless a node was lost by then (Ray may say a task failed before
            the cluster marks its node dead, so that is waited for, up to 30 s).
        """
        import time

        failed: list[BaseException] = []

        def target() -> None:
            try:
                work()
            except BaseException as e:  # noqa: BLE001  # raised again in the caller's thread
                failed.append(e)

        # Not a watcher that interrupts this thread: a signal to a main thread waiting inside Ray
        # Data went unseen until the build had ended (in a full test run; alone it was seen).
        thread = threading.Thread(target=target, name="qa-ray-build", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(self.period)
            if lost := self.check():
                # The build goes on in its thread until the process ends; Ray Data then logs its
                # executor's end with a traceback, which would bury the one line said instead.
                logging.getLogger("ray.data").setLevel(logging.CRITICAL + 1)
                return lost
        if not failed:
            return self.check()  # lost after the last look, while Ray Data redid its work
        if isinstance(failed[0], UserError):
            raise failed[0]
        deadline = time.monotonic() + 30.0
        while (lost := self.check()) is None and time.monotonic() < deadline:
            time.sleep(self.period)
        if lost is None:
            raise failed[0]
        return lost


def _tally(batch: dict) -> dict:
    """A block's passages per article and its BM25 statistics, to be added up on the driver."""
    from collections import Counter

    from .bm25corpus import corpus_stats_part

    passages = batch["j"] >= 0
    part = corpus_stats_part(list(batch["text"][passages]))
    part["articles"] = {int(a): n for a, n in Counter(batch["article"][passages].tolist()).items()}
    return {"part": np.array([json.dumps(part)], dtype=object)}


def _place(batch: dict, first_pid: np.ndarray, shard_of: np.ndarray) -> dict:
    """Global passage id and shard of each row (an article's own row, j = -1, gets its shard)."""
    articles = batch["article"]
    batch["pid"] = first_pid[articles] + batch["j"]
    batch["shard"] = shard_of[articles]
    return batch


def _write_group(batch: dict, folder: str, manifests: list[dict],
                 shard_articles: list[tuple[int, int]], corpus: dict) -> dict:
    """One shard's rows (a whole group: its articles' own rows and their passages) -> a shard
    folder; returns its manifest entry."""
    from dataclasses import replace

    from .shards import shard_name, write_shard
    from .store import _article_from_row, _passage_from_row

    number = int(batch["shard"][0])
    own = batch["j"] < 0
    a, b = shard_articles[number]
    held = np.argsort(batch["article"][own], kind="stable")
    if batch["article"][own][held].tolist() != list(range(a, b)):
        raise RuntimeError(f"shard {number} was given articles other than {a}-{b - 1}")
    articles = [_article_from_row(json.loads(r)) for r in batch["passage"][own][held]]
    pid, passage, text = batch["pid"][~own], batch["passage"][~own], batch["text"][~own]
    vector = batch["vector"][~own]
    order = np.argsort(pid, kind="stable")
    passages = [replace(_passage_from_row(json.loads(passage[i])), pid=int(pid[i])) for i in order]
    texts = [text[i] for i in order]
    vectors = np.ascontiguousarray(np.stack([vector[i] for i in order]), dtype=np.float32)
    entry = write_shard(Path(folder) / shard_name(number), manifests[number], articles,
                        passages, texts, vectors, corpus)
    return {"entry": np.array([json.dumps(entry)], dtype=object)}


def whole_free_cpus() -> tuple[int, list[float]]:
    """How many one-CPU actors fit on the cluster's nodes now, and each node's free CPUs.

    An actor of one CPU runs on one node, so two nodes with half a CPU free each hold none.
    """
    from ray._private.state import available_resources_per_node  # no public per-node view

    per_node = [round(float(r.get("CPU", 0.0)), 6)
                for r in available_resources_per_node().values()]
    return sum(int(c) for c in per_node), per_node


def build_on_ray(sources: list[Path | str], settings: Settings, *, address: str, shards: int,
                 workers: int | None = None, progress: bool = True, index_type: str = "auto"):
    """A sharded build on the Ray cluster at address (see the module docstring).

    Args:
        sources: folders or files, as `qa build`.
        settings: the index folder, model and chunking.
        address: the cluster (host:port of its head, or "auto").
        shards: how many shards.
        workers: actors in the chunk-and-embed pool; default one per whole CPU free on a node now.
        index_type: each shard's, a key of qa.store.INDEX_TYPES.

    Returns:
        qa.build.BuildSummary.
    """
    import time

    from .build import BuildSummary, build_record
    from .bm25corpus import add_stats
    from .embed import load_encoder
    from .ingest import check_sources
    from .shards import plan_shards, shard_manifest, write_collection
    from .store import lock, publish, writable

    import_ray()  # before any work: a missing extra is said at once
    started = time.perf_counter()
    folders = check_sources(sources)  # a missing folder is said before joining the cluster
    if shards < 1:
        plan_shards([1], shards)  # raises the UserError that says why
    ray = connect(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.execution_options.verbose_progress = False
    # One embedding actor per whole CPU free now on some node, not per CPU of the cluster: a
    # cluster that also runs `qa serve` holds some, and a pool sized otherwise waits forever.
    free, per_node = whole_free_cpus()
    if free < (workers or 1):
        said = ", ".join(f"{c:g}" for c in per_node) or "none"
        what = (f"{workers} embedding workers were asked for and {free} fit" if workers else
                "no node has a whole CPU free")
        raise UserError(f"{what} on the Ray cluster at {address} (CPUs free per node: {said}), "
                        f"and each embedding worker needs a whole one on a node; add a node, or "
                        f"stop what holds them (the qa app does: `qa serve --ray {address} "
                        f"--stop`), then build again")
    workers = workers or free
    report, articles = ingest_on_ray(ray, folders, workers)
    if shards > report.kept:
        plan_shards([1] * report.kept, shards)  # raises the UserError that says why
    encoder = load_encoder(settings.model)  # the driver's copy: the build record only
    base = build_record(settings, encoder, folders)
    root = writable(Path(settings.index_dir))
    settings_dict = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
    settings_dict["index_dir"] = str(settings_dict["index_dir"])
    summary: dict = {}

    def fill(tmp: Path) -> None:
        lost = NodeWatch(ray).run(lambda: write(tmp))
        if lost is not None:
            raise UserError(f"{lost} left the Ray cluster during the build, which stopped; the "
                            f"previous index in {root}/ is still live (CURRENT unchanged). Rerun "
                            f"the build once every node is back (`ray status` lists them)")

    def write(tmp: Path) -> None:
        embedded = articles.map_batches(
            ChunkEmbed, batch_size=8, num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=workers, max_size=workers),
            fn_constructor_kwargs={"settings": settings_dict, "cpus": 1}).materialize()
        parts = [json.loads(r["part"]) for r in embedded.map_batches(_tally, batch_size=4096).take_all()]
        counts = [0] * report.kept
        for part in parts:
            for a, n in part.pop("articles").items():
                counts[int(a)] += n
        corpus = add_stats(parts)
        plan = plan_shards(counts, shards)
        first_pid = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        shard_of = np.zeros(report.kept, dtype=np.int64)
        for number, (a, b) in enumerate(plan):
            shard_of[a:b] = number
        manifests = [shard_manifest(base, n, shards, int(first_pid[a]), b - a, sum(counts[a:b]),
                                    index_type)
                     for n, (a, b) in enumerate(plan)]
        entries = (embedded
                   .map_batches(_place, fn_kwargs={"first_pid": first_pid, "shard_of": shard_of})
                   .groupby("shard", num_partitions=shards)
                   .map_groups(_write_group, batch_format="numpy",
                               fn_kwargs={"folder": str(tmp), "manifests": manifests,
                                          "shard_articles": plan,
                                          "corpus": corpus})
                   .take_all())
        got = [json.loads(e["entry"]) for e in entries]
        if len(got) != shards:
            raise UserError(f"the Ray build wrote {len(got)} of {shards} shards; the previous "
                            f"index is still live")
        write_collection(tmp, base, got, corpus)
        summary["passages"] = sum(counts)

    with lock(root):
        target = publish(root, fill)
    return BuildSummary(report.kept, summary["passages"], report.skipped,
                        report.duplicates, time.perf_counter() - started, target,
                        f"{shards} shards on Ray, {workers} embedding "
                        f"{'actor' if workers == 1 else 'actors'}"
                        + (f", {INDEX_TYPES[index_type]}" if index_type != "auto" else ""))
