"""Command line: argparse subcommands and nothing else. Heavy imports stay inside commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .settings import (INDEX_TYPES, INGRESS_CHOICES, INGRESS_HELP, NPROBE_HELP, RETRIEVERS, SEEDS,
                       UsageError, UserError, check_ingress, default_settings)

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qa", description="Questions answered from a folder of news "
                                "articles, with exact citations.")
    sub = p.add_subparsers(dest="command")

    b = sub.add_parser("build", help="index a folder of articles")
    b.add_argument("sources", nargs="*", type=Path,
                   help="folders or files (.txt .md .html .htm corpus.jsonl); default seeds/")
    _common(b)
    b.add_argument("--max-tokens", type=int, help="passage size in word pieces (default 128)")
    b.add_argument("--overlap", type=int, help="sentences shared by consecutive passages (default 1)")
    b.add_argument("--no-title-context", action="store_true",
                   help="embed passages without their article title")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--shards", type=int, help="split the index into N shards by article, each a "
                                              "normal index folder (see README, Ray)")
    b.add_argument("--ray", metavar="ADDRESS", help="build the shards on the Ray cluster at "
                                                    "ADDRESS (host:port or auto); needs .[ray]")
    b.add_argument("--index-type", choices=list(INDEX_TYPES), default="auto",
                   help="the vector index, or each shard's: auto (exact Flat below 200,000 "
                        "passages, HNSW above), flat, hnsw, or ivf (IVF-Flat, approximate, the "
                        "one for shards of millions; README, Past one machine)")
    b.set_defaults(run=cmd_build)

    a = sub.add_parser("ask", help="answer a question with cited passages")
    a.add_argument("question")
    _common(a)
    a.add_argument("--k", type=int, help="passages to return (default 5)")
    a.add_argument("--retriever", choices=RETRIEVERS, help="default hybrid")
    a.add_argument("--source", help="only articles from this source/publisher")
    a.add_argument("--since", help="only articles published on or after this date (YYYY-MM-DD)")
    a.add_argument("--until", help="only articles published on or before this date (YYYY-MM-DD)")
    a.add_argument("--doc", help="only this article (doc_id)")
    a.add_argument("--reader", help="'none' for the feature picker alone, or a reader folder "
                                    "(default: the packaged reader, or QA_READER)")
    a.add_argument("--nprobe", type=int, help=NPROBE_HELP)
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--ray", metavar="ADDRESS", help="ask the app `qa serve` runs on the Ray "
                                                    "cluster at ADDRESS; needs .[ray]")
    a.add_argument("--ingress", choices=INGRESS_CHOICES, default="app", help=INGRESS_HELP)
    a.set_defaults(run=cmd_ask)

    s = sub.add_parser("serve", help="run the answering app for a sharded index on a Ray cluster")
    _common(s)
    s.add_argument("--ray", metavar="ADDRESS", required=True, help="the cluster (host:port or auto)")
    s.add_argument("--replicas", type=int, default=1, help="replicas of each shard (default 1)")
    s.add_argument("--ingress-replicas", type=int, default=1,
                   help="replicas of the ingress, each loading the model and the reader; with 2 "
                        "or more, questions whose replica dies go to another at once (default 1)")
    s.add_argument("--nprobe", type=int, help=NPROBE_HELP + " (every shard's)")
    s.add_argument("--shard-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long a question waits for a shard that is down (asking again when "
                        "its replica is replaced) before it fails naming the shard (default 30)")
    s.add_argument("--stop", action="store_true",
                   help="stop the qa app on the cluster (its shards and ingress) and free what "
                        "it holds, instead of starting it")
    s.set_defaults(run=cmd_serve)

    for name, module in (("eval", "qa.evaluate"), ("bench", "qa.bench"),
                         ("calibrate", "qa.calibrate"), ("train-reader", "qa.train_reader")):
        _optional(sub, name, module)
    return p


def _optional(sub, name: str, module: str) -> None:
    """Subcommands whose modules add their own arguments (`add_arguments(parser)`, `run(args)`)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return
    mod = __import__(module, fromlist=["add_arguments"])
    parser = sub.add_parser(name, help=mod.__doc__.splitlines()[0] if mod.__doc__ else None)
    mod.add_arguments(parser)
    parser.set_defaults(run=mod.run)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, help="index folder (default index/, or QA_INDEX)")
    p.add_argument("--model", help="sentence-transformers model name or folder "
                                   "(default all-MiniLM-L6-v2, or QA_MODEL)")


def settings_from(args):
    return default_settings(index_dir=getattr(args, "index", None), model=getattr(args, "model", None),
                            max_tokens=getattr(args, "max_tokens", None),
                            overlap=getattr(args, "overlap", None),
                            title_context=False if getattr(args, "no_title_context", False) else None,
                            reader=getattr(args, "reader", None),
                            nprobe=getattr(args, "nprobe", None))


def cmd_build(args) -> int:
    from .build import build

    settings = settings_from(args)
    if settings.max_tokens < 16 or settings.overlap < 0:
        raise UserError("--max-tokens must be at least 16 and --overlap at least 0")
    sources = args.sources or [SEEDS]
    if args.shards is not None and args.shards < 1:
        raise UserError(f"--shards must be at least 1, got {args.shards}")
    # Skipped files and duplicates were logged, by name, as they were met.
    if args.ray:
        if args.shards is None:
            raise UserError("--ray builds a sharded index; say how many shards with --shards N "
                            "(e.g. one per node)")
        from .cluster import build_on_ray

        summary = build_on_ray(sources, settings, address=args.ray, shards=args.shards,
                               progress=not args.quiet, index_type=args.index_type)
    else:
        summary = build(sources, settings, progress=not args.quiet, shards=args.shards,
                        index_type=args.index_type)
    print(f"built {settings.index_dir}: {summary.documents} documents, {summary.passages} passages "
          f"({summary.index_type}), {len(summary.skipped)} skipped, "
          f"{len(summary.duplicates)} duplicates, {summary.seconds:.1f} s")
    return 0


def cmd_ask(args) -> int:
    from .engine import MAX_K, QA, clean_question
    from .retrieve import Filters
    from .settings import check_k

    settings = settings_from(args)
    # Checked before the model loads: an empty question, a bad date, k (exit code 2).
    clean_question(args.question)
    filters = Filters(args.source, args.since, args.until, args.doc)
    if args.k is not None:
        check_k(args.k, MAX_K)
    started = time.perf_counter()
    check_ingress(args)
    if args.ray:
        from .serve import ask

        if args.nprobe is not None:
            raise UsageError("--nprobe is the app's, not the question's: with --ray, the shards "
                             "search as many lists as `qa serve --nprobe N` set; leave it out")
        out = ask(args.ray, args.question, k=args.k, retriever=args.retriever, filters=filters,
                  local=args.ingress == "local")
        print(json.dumps(out, ensure_ascii=False, indent=2) if args.json
              else render(out, time.perf_counter() - started))
        return 0
    qa = QA.open(settings, check_model=bool(args.model or os.environ.get("QA_MODEL")))
    if qa.index.stale:
        print(f"warning: {settings.index_dir}/ is older than its sources; run `qa build` to "
              f"include the changes", file=sys.stderr)
    result = qa.ask(args.question, k=args.k, retriever=args.retriever,
                    filters=filters)
    if not result.hits and filters.active() and result.notices:
        raise UserError(result.notices[-1])  # the filter let no article through, and why
    out = qa.to_json(result)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(render(out, time.perf_counter() - started))
    return 0


def cmd_serve(args) -> int:
    from .serve import deploy, stop

    if args.stop:
        print(f"stopped the qa app on {args.ray}" if stop(args.ray)
              else f"no qa app was running on {args.ray}")
        return 0
    for flag, n in (("--replicas", args.replicas), ("--ingress-replicas", args.ingress_replicas)):
        if n < 1:
            raise UserError(f"{flag} must be at least 1, got {n}")
    if args.shard_timeout is not None and not args.shard_timeout > 0:
        raise UserError(f"--shard-timeout must be more than 0 seconds, got {args.shard_timeout}")
    settings = settings_from(args)
    got = deploy(args.ray, settings.index_dir, settings, replicas=args.replicas,
                 ingress_replicas=args.ingress_replicas,
                 **({"shard_timeout": args.shard_timeout} if args.shard_timeout else {}))
    print(f"serving {settings.index_dir} on {args.ray}: {got['shards']} shard deployments x "
          f"{got['replicas']} replicas and an ingress x {got['ingress_replicas']}; ask with "
          f"`qa ask --ray {args.ray} QUESTION`")
    return 0


def render(out: dict, seconds: float) -> str:
    lines = [f"Q: {out['question']}"]
    if out.get("resolved_question"):
        lines.append(f"   (read as: {out['resolved_question']})")
    for notice in out.get("notices", []):
        lines.append(f"note: {notice}")
    if out.get("reply"):
        lines.append(f"\n{out['reply']}")
        return "\n".join(lines)
    if out["answer"]:
        a = out["answer"]
        lines.append(f"\nA: {a['text']}  [{a['passage_rank']}]")
        lines.append(f"   {a['title']} | {a['source'] or 'source unknown'} | {a['date'] or 'undated'}"
                     f" | {a['doc_id']} chars {a['char_start']}-{a['char_end']} | "
                     f"confidence {a['confidence']:.2f}")
    else:
        lines.append("\nA: Not in the articles. The closest passages, of low relevance:")
    lines.append("")
    for p in out["passages"]:
        lines.append(f"[{p['rank']}] {p['score']:.3f}  {p['title']} ({p['source'] or '-'}, "
                     f"{p['date'][:10] or 'undated'})  {p['doc_id']}:{p['char_start']}-{p['char_end']}")
        lines.append(f"    {p['text']}")
    lines.append(f"\n({seconds:.2f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
