"""evaluate question sets or BEIR datasets: metrics per retriever, RUN.jsonl, a report with plots

Stage: question sets -> metrics, reports, plots. Two inputs:

- a question file in the format of `tests/questions.jsonl`, one JSON object a line:
  `{"id", "question", "doc" (null when the articles do not answer it), "answers": [...]}`,
  scored against an existing index (`--index`);
- a dataset in the standard BEIR layout (`--beir DIR`: `corpus.jsonl`, `queries.jsonl`,
  `qrels/test.tsv`), whose corpus is indexed once and cached (see `beir_index`).

Levels. An *article* (a document of the corpus) is relevant when it is the question's `doc` (or a
BEIR qrel); the article ranking is the distinct articles of the passage ranking, in order, so an
article's passages count once. A *passage* is relevant when it belongs to the question's `doc`
and contains one of the answers verbatim. BEIR judges documents, so BEIR runs score articles only.

Ranking metrics (Hit@k = trec_eval `success`, Recall@k, MRR@10 = `recip_rank` over the top 10,
nDCG@10 = `ndcg_cut.10` with linear gain) come from pytrec_eval. Answer metrics: answer-hit (the
snippet, when not abstained, contains an expected answer verbatim), exact offsets, wrongly
abstained, abstention precision and recall, and the abstention AUC (how well the confidence
separates answerable from unanswerable questions, whatever the threshold).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .evaluation.data import (
    Dataset,
    Outcome,
    Question,
    beir_index,
    load_beir,
    load_questions,
    select,
)
from .evaluation.metrics import ANSWER_METRICS, DEPTH_10, Scores, score
from .evaluation.report import (
    THRESHOLDS,
    check_thresholds,
    run_line,
    tables,
    write_report,
)
from .retrieve import Filters
from .settings import NPROBE_HELP, RETRIEVERS, UsageError, UserError, default_settings
from .types import Hit

EXIT_THRESHOLD = 3
MAX_PASSAGE_DEPTH = 1000  # engine.MAX_K


# ---------------------------------------------------------------- running

def run_questions(qa, questions: Sequence[Question], retriever: str, k: int, *, is_beir: bool,
                  drop_self_hits: bool = True, qvecs=None, progress=None,
                  given_doc: bool = False) -> list[Outcome]:
    """Ask every question with one retriever.

    Our question sets go through `QA.ask` (retrieval, snippet and abstention, as a user gets
    them) with max(k, 10) passages. BEIR queries go through the retriever only, asking for more
    passages until max(k, 10) distinct articles are found; with drop_self_hits a hit on the
    document whose id is the query's own id is left out (ArguAna's protocol). With given_doc,
    a question that names a `given` article is asked of that article alone.
    """
    depth = max(k, DEPTH_10)
    out: list[Outcome] = []
    for i, q in enumerate(questions):
        started = time.perf_counter()
        if is_beir:
            hits = _search_articles(qa, q, retriever, depth, drop_self_hits,
                                    None if qvecs is None else qvecs[i])
            answer, abstained, confidence = None, None, None
        else:
            only = Filters(doc=q.given) if given_doc and q.given else None
            result = qa.ask(q.question, k=depth, retriever=retriever, filters=only)
            hits, answer, abstained = list(result.hits), result.answer, result.abstained
            confidence = result.confidence
        seconds = time.perf_counter() - started
        articles = tuple(dict.fromkeys(h.passage.doc_id for h in hits))[:depth]
        out.append(Outcome(q, retriever, tuple(hits), articles, answer, abstained, seconds,
                           confidence))
        if progress is not None:
            progress.update(1)
    return out


def _search_articles(qa, q: Question, method: str, depth: int, drop_self: bool, qvec) -> list[Hit]:
    want = 3 * depth
    while True:
        hits = qa.retriever.search(q.question, k=want, method=method, qvec=qvec)
        kept = [h for h in hits if not (drop_self and h.passage.doc_id == q.id)]
        if len({h.passage.doc_id for h in kept}) >= depth or len(hits) < want \
                or want >= MAX_PASSAGE_DEPTH:
            return kept
        want = min(2 * want, MAX_PASSAGE_DEPTH)


# ---------------------------------------------------------------- command

def add_arguments(p) -> None:
    p.description = ("Score retrievers and answers on a question file (our format) against an "
                     "index, or on a BEIR dataset (indexed and cached on first use). Prints a "
                     f"table; exit code {EXIT_THRESHOLD} when a --min-* threshold is not met.")
    p.add_argument("questions", nargs="?", type=Path,
                   help='question .jsonl: {"id", "question", "doc" (null if unanswerable), "answers"}')
    p.add_argument("--beir", type=Path, metavar="DIR",
                   help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    p.add_argument("--split", default="test", help="BEIR qrels split (default test)")
    p.add_argument("--index", type=Path, help="index folder (default index/, or QA_INDEX); with "
                   "--beir, where to build/reuse its index (default ~/.cache/qa/beir/<name>-<hash>)")
    p.add_argument("--model", help="model for a BEIR index (default all-MiniLM-L6-v2)")
    p.add_argument("--retriever", choices=RETRIEVERS + ("all",), default="hybrid",
                   help="default hybrid; all = dense, bm25 and hybrid side by side")
    p.add_argument("--k", type=int, default=10, help="passages per question in RUN.jsonl and the "
                   "cut-off of Recall@k (default 10)")
    p.add_argument("--run-out", type=Path, metavar="RUN.jsonl",
                   help="write one line per question and retriever")
    p.add_argument("--report-out", type=Path, metavar="DIR",
                   help="write report.md, recall_at_k.png and metrics.json here")
    p.add_argument("--filter-doc", metavar="REGEX", help="keep questions whose doc matches (re.search); "
                   "e.g. '^(2[4-9]|3[0-9]|4[0-7])_' = SQuAD articles 24-47")
    p.add_argument("--given-doc", action="store_true",
                   help="ask each question that names a `given` article of that article alone "
                        "(SQuAD 2.0: is the question answered by its own paragraph?)")
    p.add_argument("--reader", help="'none' for the feature picker alone, or a reader folder "
                        "(default: the packaged reader)")
    p.add_argument("--nprobe", type=int, help=NPROBE_HELP)
    p.add_argument("--sample", type=int, metavar="N", help="score a random sample of N questions")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--keep-self-hits", action="store_true",
                   help="BEIR: keep hits whose doc id is the query id (dropped by default, as in "
                        "BEIR/MTEB; matters for ArguAna)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threshold-level", choices=("article", "passage"), default="article",
                   help="level the ranking thresholds read (default article)")
    for flag, _key, label in THRESHOLDS:
        p.add_argument("--" + flag.replace("_", "-"), type=float, metavar="X",
                       help=f"exit {EXIT_THRESHOLD} if {label} < X for any retriever")


def run(args) -> int:
    from tqdm import tqdm

    from .engine import QA

    if (args.questions is None) == (args.beir is None):
        raise _usage("give either a question file or --beir DIR, e.g. `qa eval tests/questions.jsonl` "
                     "or `qa eval --beir data/scifact`")
    if not 1 <= args.k <= 100:
        raise _usage(f"--k must be from 1 to 100, got {args.k}")
    for flag, key, _label in THRESHOLDS:
        value = getattr(args, flag)
        if value is not None and not 0 <= value <= 1:
            raise _usage(f"--{flag.replace('_', '-')} must be between 0 and 1, got {value}")
        if value is not None and args.beir and key in ANSWER_METRICS:
            raise _usage(f"--{flag.replace('_', '-')} needs answers; BEIR runs score retrieval only")
    if args.filter_doc and args.beir:
        raise _usage("--filter-doc works on question files; BEIR queries have no doc field")
    if args.beir and args.threshold_level == "passage":
        raise _usage("--threshold-level passage needs answers; BEIR runs score articles only")
    settings = default_settings(index_dir=args.index, model=args.model, reader=args.reader,
                                nprobe=args.nprobe)
    progress_off = True if args.quiet else None  # None: a bar on a terminal only
    notes: list[str] = []
    if args.beir:
        dataset = load_beir(args.beir, args.split)
        questions = select(dataset.questions, None, args.sample, args.seed)
        assert dataset.beir_corpus is not None  # load_beir always names its corpus.jsonl
        started = time.perf_counter()
        index, built = beir_index(dataset.beir_corpus, settings, args.index, progress=not args.quiet)
        notes.append(f"{'built' if built else 'reused'} the index of {dataset.beir_corpus} "
                     f"in {index.path}" + (f" ({time.perf_counter() - started:.0f} s)" if built else ""))
        missing = {d for q in questions for d in q.qrels if d not in index.articles}
        if missing:
            notes.append(f"{len(missing)} judged documents are not in the index (missing from the "
                         f"corpus, or duplicates indexed once), e.g. {sorted(missing)[0]}; they "
                         f"count as never retrieved")
        if args.keep_self_hits:
            notes.append("hits whose doc id equals the query id were kept (--keep-self-hits)")
        else:
            selfs = sum(q.id in index.articles for q in questions)
            notes.append(f"hits whose doc id equals the query id were dropped (BEIR/MTEB protocol "
                         f"for ArguAna; {selfs} queries are themselves in the corpus); "
                         f"--keep-self-hits keeps them")
        from .embed import load_encoder

        qa = QA(index, load_encoder(index.model), settings)
    else:
        questions = select(load_questions(args.questions), args.filter_doc, args.sample, args.seed)
        dataset = Dataset(args.questions.name, tuple(questions))
        qa = QA.open(settings, check_model=args.model is not None)
        unknown = sorted({q.doc for q in questions if q.doc and q.doc not in qa.index.articles})
        if unknown:
            raise UserError(f"{len(unknown)} doc ids in {args.questions} are not in the index "
                            f"{settings.index_dir}/ (e.g. {', '.join(unknown[:3])}); build the index "
                            f"from the articles these questions are about (`qa build ... --index "
                            f"DIR`, then --index DIR), or fix the ids")
    dataset = Dataset(dataset.name, tuple(questions), dataset.beir_corpus, dataset.notes)
    notes += list(dataset.notes)
    if args.filter_doc or args.sample:
        notes.append(f"questions selected with --filter-doc {args.filter_doc!r} --sample "
                     f"{args.sample} --seed {args.seed}")
    retrievers = list(RETRIEVERS) if args.retriever == "all" else [args.retriever]
    qvecs = None
    if dataset.is_beir and set(retrievers) - {"bm25"}:
        qvecs = qa.encoder.encode([q.question for q in questions], progress=False)
    outcomes: dict[str, list[Outcome]] = {}
    scores: list[Scores] = []
    with tqdm(total=len(questions) * len(retrievers), desc="qa eval", unit="q", file=sys.stderr,
              disable=progress_off, leave=False) as bar:
        for r in retrievers:
            bar.set_postfix_str(r)
            outcomes[r] = run_questions(qa, questions, r, args.k, is_beir=dataset.is_beir,
                                        drop_self_hits=not args.keep_self_hits, qvecs=qvecs,
                                        progress=bar, given_doc=args.given_doc)
            scores.append(score(r, outcomes[r], qa.index, args.k, dataset.is_beir))
    if args.run_out:
        args.run_out.parent.mkdir(parents=True, exist_ok=True)
        with args.run_out.open("w", encoding="utf-8") as f:
            for q_i in range(len(questions)):
                for r in retrievers:
                    f.write(json.dumps(run_line(outcomes[r][q_i], args.k), ensure_ascii=False) + "\n")
    print(f"{dataset.name}: {len(questions)} questions, index {qa.index.path} "
          f"({qa.index.manifest.passages} passages)")
    for n in notes:
        print(f"note: {n}")
    print()
    print(tables(scores, args.k))
    if args.report_out:
        written = write_report(args.report_out, dataset, qa.index, scores, outcomes, args.k, notes)
        print(f"\nreport: {', '.join(str(p) for p in written)}")
    if args.run_out:
        print(f"run: {args.run_out}")
    problems = check_thresholds(scores, args, args.threshold_level)
    for problem in problems:
        print(f"threshold not met: {problem}", file=sys.stderr)
    return EXIT_THRESHOLD if problems else 0


def _usage(message: str) -> UsageError:
    return UsageError(message)
