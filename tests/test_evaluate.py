"""qa eval: metrics against hand-computed values, input errors, and end-to-end runs with the real model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from qa.cli import main
from qa.evaluate import EXIT_THRESHOLD
from qa.evaluation.data import Outcome, Question, load_beir, load_questions, select
from qa.evaluation.metrics import Scores, answer_metrics, passage_qrels, percentile, ranking_metrics
from qa.evaluation.report import check_thresholds
from qa.settings import UserError
from qa.types import Answer, Article, Passage

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "tests" / "questions.jsonl"
FIXTURE = ROOT / "tests" / "fixtures" / "beir-seeds"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- metrics, by hand

def test_ranking_metrics_match_a_hand_computed_case():
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"b": 2, "d": 1}, "q3": {"z": 1}}
    runs = {"q1": ["x", "a", "y", "c"], "q2": ["d", "e", "b"]}  # q3 retrieved nothing
    m = ranking_metrics(qrels, runs, k=4)
    q1 = m["q1"]
    assert (q1["hit@1"], q1["hit@3"], q1["hit@5"], q1["hit@10"]) == (0, 1, 1, 1)
    assert [q1[f"recall@{c}"] for c in (1, 2, 3, 4)] == [0, 0.5, 0.5, 1.0]
    assert q1["recall@k"] == 1.0
    assert q1["mrr@10"] == pytest.approx(0.5)
    # relevant at ranks 2 and 4, ideal at 1 and 2, binary gain
    ideal = 1 + 1 / math.log2(3)
    assert q1["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    q2 = m["q2"]
    # graded, linear gain (trec_eval): d(1) at rank 1, b(2) at rank 3; ideal b then d
    assert q2["ndcg@10"] == pytest.approx((1 + 2 / math.log2(4)) / (2 + 1 / math.log2(3)))
    assert q2["mrr@10"] == 1.0 and q2["recall@2"] == 0.5 and q2["recall@3"] == 1.0
    assert all(v == 0.0 for v in m["q3"].values())


def test_mrr_and_hits_stop_at_ten_while_recall_goes_to_k():
    run = [f"n{i}" for i in range(10)] + ["rel"]
    m = ranking_metrics({"q": {"rel": 1}}, {"q": run}, k=12)["q"]
    assert m["mrr@10"] == 0.0 and m["hit@10"] == 0.0 and m["ndcg@10"] == 0.0
    assert m["recall@10"] == 0.0 and m["recall@11"] == 1.0 and m["recall@k"] == 1.0


@pytest.mark.parametrize("run", [[], ["a", "a", "b"]])
def test_ranking_metrics_edge_runs(run):
    m = ranking_metrics({"q": {"b": 1}}, {"q": run}, k=3)["q"]
    # a repeated id counts once: "b" is second, not third
    assert m["mrr@10"] == (0.5 if run else 0.0)


def test_passage_qrels_need_the_answer_verbatim_in_the_right_doc():
    ps = {"d": [Passage(0, "d", 0, 10, "about 8 years"), Passage(1, "d", 10, 20, "eight years")],
          "e": [Passage(2, "e", 0, 10, "8 years too")]}
    q = Question("q", "How long?", "d", ("8 years",), {"d": 1})
    assert passage_qrels(q, ps) == {"0": 1}
    assert passage_qrels(Question("u", "?", None), ps) == {}


def _outcome(q: Question, text: str | None, abstained: bool, start: int = 0,
             confidence: float | None = None) -> Outcome:
    answer = None if text is None else Answer(text, "d", start, start + len(text), 1, 0.9)
    return Outcome(q, "hybrid", (), (), answer, abstained, 0.01, confidence)


def test_answer_metrics_by_hand():
    articles = {"d": Article("d", "It took 8 years. Then 9.")}
    a1 = Question("a1", "How long?", "d", ("8 years",), {"d": 1})
    a2 = Question("a2", "Then?", "d", ("10",), {"d": 1})
    a3 = Question("a3", "Again?", "d", ("9",), {"d": 1})
    u1 = Question("u1", "Mars?", None)
    u2 = Question("u2", "Venus?", None)
    outcomes = [_outcome(a1, "It took 8 years.", False),      # hit, exact offsets
                _outcome(a2, "Then 9.", False, start=17),       # miss, exact offsets
                _outcome(a3, None, True),                       # wrongly abstained
                _outcome(u1, None, True),                       # right abstention
                _outcome(u2, "It took 8 yearz", False)]         # answered; offsets wrong
    m = answer_metrics(outcomes, articles)
    assert m["answer_hit"] == pytest.approx(1 / 3)
    assert m["offsets_exact"] == pytest.approx(2 / 3)
    assert m["wrongly_abstained"] == pytest.approx(1 / 3)
    assert m["abstention_precision"] == pytest.approx(1 / 2)
    assert m["abstention_recall"] == pytest.approx(1 / 2)
    assert answer_metrics([_outcome(a1, "It took 8 years.", False)], articles)["abstention_precision"] is None
    assert m["abstention_auc"] is None  # no confidences


def test_abstention_auc_by_hand():
    """AUC: of the answerable x unanswerable pairs, the share where the answerable question is
    more confident, ties counting half. 3 x 2 pairs: (.9 > .2, .9 > .5), (.5 > .2, .5 = .5 half),
    (.1 < .2, .1 < .5) -> 3.5 / 6."""
    articles = {"d": Article("d", "x")}
    answerable = [Question(f"a{i}", "?", "d", ("x",), {"d": 1}) for i in range(3)]
    unanswerable = [Question(f"u{i}", "?", None) for i in range(2)]
    outcomes = [_outcome(q, None, True, confidence=c) for q, c in zip(answerable, (.9, .5, .1))]
    outcomes += [_outcome(q, None, True, confidence=c) for q, c in zip(unanswerable, (.2, .5))]
    assert answer_metrics(outcomes, articles)["abstention_auc"] == pytest.approx(3.5 / 6)
    assert answer_metrics(outcomes[:3], articles)["abstention_auc"] is None  # one kind only


def test_thresholds_name_the_retriever_and_metric():
    s = Scores("bm25", 10, {"article": {"hit@1": 0.8, "ndcg@10": 0.9}}, {}, {"answer_hit": None},
               1.0, {"article": 10})

    class Args:
        min_hit1, min_ndcg10, min_answer_hit = 0.85, 0.9, None

    problems = check_thresholds([s], Args, "article")
    assert problems == ["bm25: article Hit@1 0.800 is below --min-hit1 0.85"]
    Args.min_answer_hit = 0.5
    assert "answer-hit is undefined" in check_thresholds([s], Args, "article")[-1]


# ---------------------------------------------------------------- input

def test_select_filters_docs_and_samples_deterministically():
    qs = [Question(str(i), "?", f"{i}_0", ("x",), {f"{i}_0": 1}) for i in range(48)] + [Question("u", "?")]
    held_out = select(qs, r"^(2[4-9]|3[0-9]|4[0-7])_")
    assert [q.id for q in held_out] == [str(i) for i in range(24, 48)]
    a, b = select(qs, sample=5, seed=1), select(qs, sample=5, seed=1)
    assert a == b and len(a) == 5
    with pytest.raises(Exception, match="no questions left"):
        select(qs, "^nothing")


@pytest.mark.parametrize("lines, message", [
    (['{"id": "a", "question": "Q?", "doc": null, "answers": []}', '{"id": "b", "question"'],
     "bad.jsonl:2 is not valid JSON"),
    (['{"id": "a", "question": "Q?", "answers": []}'], "has no doc"),
    (['{"id": "a", "question": "Q?", "doc": "d", "answers": []}'], "names doc d but no answers"),
    (['{"id": "a", "question": "Q?", "doc": null, "answers": []}'] * 2, "already used on line 1"),
    (['{"id": "a", "question": "  ", "doc": null, "answers": []}'], "empty question text"),
    (['[1, 2]'], "not a JSON object"),
    ([""], "holds no questions"),
])
def test_bad_question_files_are_named_with_the_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=message):
        load_questions(path)


def test_cli_reports_input_errors_without_traceback(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.jsonl"), "--index", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "either a question file or --beir" in capsys.readouterr().err
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    assert main(["eval", "--beir", str(tmp_path / "beir")]) == 1
    err = capsys.readouterr().err
    assert "queries.jsonl, qrels/test.tsv missing" in err and "Traceback" not in err
    assert main(["eval", str(QUESTIONS), "--min-hit1", "1.5"]) == 2


def test_load_beir_fixture_and_bad_qrels(tmp_path):
    data = load_beir(FIXTURE)
    assert len(data.questions) == 58 and data.beir_corpus.name == "corpus.jsonl"
    q01 = next(q for q in data.questions if q.id == "q01")
    assert q01.qrels == {"000_8c8a69ca8b028a93-p00": 1}
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURE, bad)
    with (bad / "qrels" / "test.tsv").open("a") as f:
        f.write("q01 only-two-cells\n")
    with pytest.raises(Exception, match=r"test.tsv:\d+ is not 'query-id"):
        load_beir(bad)


def test_unknown_doc_ids_are_refused(seeds_index, tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "question": "What?", "doc": "no-such-doc", "answers": ["x"]}\n')
    assert main(["eval", str(path), "--index", str(seeds_index)]) == 1
    err = capsys.readouterr().err
    assert "no-such-doc" in err and "not in the index" in err


# ---------------------------------------------------------------- end to end, real model

@pytest.mark.slow
def test_eval_on_the_seed_questions_end_to_end(seeds_index, tmp_path, capsys):
    run_out, report = tmp_path / "run.jsonl", tmp_path / "report"
    rc = main(["eval", str(QUESTIONS), "--index", str(seeds_index), "--retriever", "all",
               "--run-out", str(run_out), "--report-out", str(report), "--quiet",
               "--min-hit1", "0.8", "--min-answer-hit", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "article level" in out and "passage level" in out and "answers" in out
    lines = [json.loads(line) for line in run_out.read_text().splitlines()]
    assert len(lines) == 110 * 3
    for line in lines:
        assert {"id", "question", "abstained", "answer", "passages"} <= set(line)
        assert isinstance(line["abstained"], bool)
        assert len(line["passages"]) <= 10 and line["passages"]
        for p in line["passages"]:
            assert set(p) == {"doc_id", "text", "score", "char_start", "char_end"}
        if line["answer"] is not None:
            assert set(line["answer"]) == {"text", "doc_id", "char_start", "char_end", "confidence"}
            assert not line["abstained"]
    metrics = json.loads((report / "metrics.json").read_text())
    by_name = {r["retriever"]: r for r in metrics["retrievers"]}
    assert set(by_name) == {"dense", "bm25", "hybrid"}
    hybrid = by_name["hybrid"]
    # floors a little below what was measured (0.95 article Hit@1, 0.74 answer-hit)
    assert hybrid["levels"]["article"]["hit@1"] >= 0.85
    assert hybrid["levels"]["article"]["hit@5"] >= 0.95
    assert hybrid["levels"]["passage"]["hit@5"] >= 0.85
    assert hybrid["answers"]["answer_hit"] >= 0.6
    assert hybrid["answers"]["offsets_exact"] == 1.0
    md = (report / "report.md").read_text()
    assert md.count("| hybrid") >= 3 and "## Failed questions" in md and "retrieved instead" in md
    assert (report / "recall_at_k.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_eval_beir_fixture_builds_caches_and_scores(tmp_path, capsys, seeds_index):
    index = tmp_path / "idx"
    args = ["eval", "--beir", str(FIXTURE), "--index", str(index), "--retriever", "all", "--quiet",
            "--report-out", str(tmp_path / "rep"), "--run-out", str(tmp_path / "run.jsonl")]
    assert main(args + ["--min-ndcg10", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "built the index" in out and "were dropped" in out
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    for r in metrics["retrievers"]:
        assert set(r["levels"]) == {"article"} and r["judged"]["article"] == 58
        assert r["levels"]["article"]["hit@10"] >= 0.9
    run = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert len(run) == 58 * 3 and all(r["answer"] is None for r in run)
    # second run reuses the index, and an unmet threshold exits with EXIT_THRESHOLD, naming it
    assert main(args + ["--min-ndcg10", "0.999", "--retriever", "bm25"]) == EXIT_THRESHOLD
    captured = capsys.readouterr()
    assert "reused the index" in captured.out
    assert "bm25: article nDCG@10" in captured.err and "--min-ndcg10 0.999" in captured.err
    # an --index holding another corpus is never overwritten
    before = sorted(p.name for p in Path(seeds_index).rglob("*"))
    assert main(["eval", "--beir", str(FIXTURE), "--index", str(seeds_index), "--quiet"]) == 1
    assert "pass an empty folder as --index" in capsys.readouterr().err
    assert sorted(p.name for p in Path(seeds_index).rglob("*")) == before


@pytest.mark.parametrize("values,q,expected", [
    ([], 50, 0.0), ([7.0], 99, 7.0),
    ([4.0, 1.0, 3.0, 2.0], 50, 2.0),        # nearest rank: ceil(.5 * 4) = 2nd smallest
    ([float(i) for i in range(1, 11)], 95, 10.0), ([float(i) for i in range(1, 101)], 95, 95.0),
    ([1.0, 2.0], 50, 1.0), ([float(i) for i in range(1, 7)], 50, 3.0),  # soak's old copy gave 4.0
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_given_is_read_and_checked(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "Who?", "doc": None, "answers": [],
                                "given": "3_1"}) + "\n")
    assert load_questions(path)[0].given == "3_1" and not load_questions(path)[0].answerable
    path.write_text(json.dumps({"id": "a", "question": "Who?", "doc": None, "answers": [],
                                "given": 7}) + "\n")
    with pytest.raises(UserError, match="given must be a doc id"):
        load_questions(path)


@pytest.mark.slow
def test_given_doc_asks_each_question_of_its_own_article(seeds_index, tmp_path, capsys):
    """With --given-doc a question is asked of the article it names alone: asked of another
    article than the one that answers it, every passage comes from the given one."""
    questions = tmp_path / "given.jsonl"
    questions.write_text(json.dumps({
        "id": "g1", "question": "When was Dongguan's application approved?", "doc": None,
        "answers": [], "given": "000_8c8a69ca8b028a93"}) + "\n")
    run = tmp_path / "run.jsonl"
    assert main(["eval", str(questions), "--index", str(seeds_index), "--given-doc", "--quiet",
                 "--run-out", str(run)]) == 0
    line = json.loads(run.read_text())
    assert {p["doc_id"] for p in line["passages"]} == {"000_8c8a69ca8b028a93"}
    assert main(["eval", str(questions), "--index", str(seeds_index), "--quiet",
                 "--run-out", str(run)]) == 0
    assert "003_fa579be8430ff762" in {p["doc_id"] for p in json.loads(run.read_text())["passages"]}
