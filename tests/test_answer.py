"""Answer snippets: question types, entity spans, exact offsets, citations, runs, abstention."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa.answer import (CONFIDENCE_FEATURES, PACKAGED_CALIBRATION, SENTENCE_FEATURES, Calibration,
                       entity_span, no_year_named, question_type, year_clash, years)
from qa.calibrate import choose_threshold, fit_confidence, fit_listwise, fit_logistic
from qa.settings import UserError
from qa.store import load


@pytest.mark.parametrize("question,kind", [
    ("How many high-tech companies were there in Foshan?", "number"),
    ("How much money did Foshan spend?", "number"),
    ("What percentage of firms were high-tech?", "number"),
    ("When was Dongguan's application approved?", "date"),
    ("In which year did Foshan stage the expo?", "date"),
    ("What year did it open?", "date"),
    ("Who was the party secretary of Foshan?", "person"),
    ("Which agency announced the result?", "person"),
    ("Where is the Sino-German zone?", "place"),
    ("Which city also passed the evaluation?", "place"),
    ("What metaphor describes the title?", None),
    ("", None),
])
def test_question_type(question, kind):
    assert question_type(question) == kind


@pytest.mark.parametrize("sentence,kind,question,expected", [
    ("Revenue grew 17.16 percent in 2020.", "number", "How fast did revenue grow in 2020?",
     "17.16 percent"),
    ("There were 5,718 high-tech enterprises in 2020.", "number", "How many in 2020?", "5,718"),
    ("It was approved on December 31, 2021 by the ministry.", "date", "When was it approved?",
     "December 31, 2021"),
    ("Dongguan applied in June 2017 to the ministry.", "date", "When did Dongguan apply?",
     "June 2017"),
    ("The plan was drafted by Xie Shaofeng, an official.", "person", "Who drafted the plan?",
     "Xie Shaofeng"),
    ("The zone is in Sanlongwan, Foshan.", "place", "Where is the zone in Foshan?", "Sanlongwan"),
    # what the question already names is no answer
    ("In 2020 the zone grew.", "date", "What happened in 2020?", None),
    ("No figure here at all.", "number", "How many?", None),
    ("Anything at all 42.", None, "Why?", None),
    ("", "number", "How many?", None),
])
def test_entity_span(sentence, kind, question, expected):
    span = entity_span(sentence, kind, question)
    assert (sentence[span[0]:span[1]] if span else None) == expected


def test_packaged_calibration_is_complete_json():
    c = json.loads(PACKAGED_CALIBRATION.read_text())
    cal = Calibration.from_dict(c)
    assert cal.sentence.features == SENTENCE_FEATURES
    assert cal.confidence.features == CONFIDENCE_FEATURES
    assert cal.sentence.to_json() == c["sentence"] and cal.confidence.to_json() == c["confidence"]
    assert 0 < cal.threshold < 1 and cal.passages >= 1 and cal.max_run >= 1


def test_an_old_manifest_without_the_block_uses_the_packaged_calibration():
    assert Calibration.from_block({}) == Calibration.from_dict(json.loads(
        PACKAGED_CALIBRATION.read_text()))


def _broken(change):
    c = json.loads(PACKAGED_CALIBRATION.read_text())
    change(c)
    return c


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("threshold"), "lacks threshold"),
    (lambda c: c["sentence"]["weights"].pop("wov"), "sentence: 'weights' lacks wov"),
    (lambda c: c["confidence"].update(bias="high"), "confidence: 'bias' must be a number"),
    (lambda c: c["confidence"]["weights"].update(cover=None), "weight of cover must be a number"),
    (lambda c: c.update(passages=0), "'passages' must be a whole number"),
    (lambda c: c.update(threshold=3), "'threshold' must be a number in"),
    (lambda c: c.update(sentence=[1, 2]), "sentence: expected an object"),
])
def test_a_malformed_calibration_is_named_with_the_fix(change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(_broken(change))
    manifest = tmp_path / "manifest.json"
    with pytest.raises(UserError, match=f"calibration in {manifest} is malformed.*{message}.*qa build"):
        Calibration.from_block(_broken(change), manifest)


def test_fit_listwise_learns_which_feature_marks_the_answer():
    rng = np.random.default_rng(0)
    X, y, g = [], [], []
    for q in range(200):
        feats = rng.random((5, 2))
        best = int(np.argmax(feats[:, 0]))  # feature 0 decides, feature 1 is noise
        X += feats.tolist()
        y += [int(i == best) for i in range(5)]
        g += [q] * 5
    w = fit_listwise(np.array(X), np.array(y), np.array(g), ("signal", "noise"))["weights"]
    assert w["signal"] > 5 * abs(w["noise"])


@pytest.mark.parametrize("weighted,bias,coef", [
    # scikit-learn 1.9.1's LogisticRegression(C=1.0, max_iter=2000) on the same data
    (False, 0.41432, [1.96907, -1.06836, 0.32644]),
    (True, -0.65929, [2.03467, -1.10524, 0.35135]),
])
def test_fit_logistic_matches_scikit_learn(weighted, bias, coef):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = (rng.random(300) < 1 / (1 + np.exp(-(2 * X[:, 0] - X[:, 1] + 0.5)))).astype(int)
    got = fit_logistic(X, y, ("a", "b", "c"), np.where(y == 1, 1.0, 3.0) if weighted else None)
    assert got["bias"] == pytest.approx(bias, abs=1e-4)
    assert list(got["weights"].values()) == pytest.approx(coef, abs=1e-4)


def test_fit_logistic_needs_both_classes():
    with pytest.raises(UserError, match="both positive and negative"):
        fit_logistic(np.zeros((4, 2)), np.ones(4, dtype=int), ("a", "b"))


def test_choose_threshold_keeps_wrong_abstentions_within_the_limit():
    conf = np.array([.1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .05, .15])
    answerable = np.array([True] * 10 + [False] * 2)
    t = choose_threshold(conf, answerable, 0.1)  # one of ten may fall below
    assert (conf[answerable] < t).sum() == 1
    assert .1 < t <= .2


def test_a_share_per_set_caps_each_set_by_its_own_share():
    # Two sets of 20 answerable questions (x from -0.9 up) and 5 unanswerable ones (x below -1).
    low = {0: [-0.9, -0.8, -0.7], 1: [-0.95, -0.5, -0.4]}
    rows, set_of = [], []
    for s in (0, 1):
        for x in [-3, -2.5, -2, -1.5, -1.2] + low[s] + list(np.linspace(0, 3, 17)):
            rows.append(({"x": float(x)}, x > -1))
            set_of.append(s)

    def below(shares) -> list[int]:
        model, threshold = fit_confidence(rows, set_of, ("x",), shares, log=lambda m: None)
        conf = {x: 1 / (1 + np.exp(-(model["bias"] + model["weights"]["x"] * x)))
                for x in low[0] + low[1]}
        return [sum(conf[x] < threshold for x in low[s]) for s in (0, 1)]

    assert below(0.05) == [1, 1]  # one of 20 may abstain in each: the first set binds
    assert below([0.10, 0.05]) == [2, 1]  # two of the first set's 20, one of the second's
    assert below([0.05, 0.10]) == [1, 1]  # the first binds again


# ---------------------------------------------------------------- real model, real index

def test_the_manifest_carries_the_calibration(seeds_index):
    m = load(seeds_index).manifest
    assert m.answer == json.loads(PACKAGED_CALIBRATION.read_text())


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
def test_every_snippet_is_verbatim_with_its_citation(engine, questions, retriever):
    for q in questions:
        r = engine.ask(q["question"], retriever=retriever)
        a = r.answer
        assert 0.0 <= r.confidence <= 1.0
        if r.abstained:
            assert a is None
            continue
        article = engine.index.articles[a.doc_id]
        assert article.text[a.char_start:a.char_end] == a.text, q["id"]
        hit = r.hits[a.passage_rank - 1]
        assert hit.passage.doc_id == a.doc_id
        assert hit.passage.char_start <= a.char_start < a.char_end <= hit.passage.char_end
        if a.highlight:
            assert a.char_start <= a.highlight[0] < a.highlight[1] <= a.char_end
        j = engine.to_json(r)["answer"]
        assert {"text", "doc_id", "title", "date", "source", "char_start", "char_end",
                "passage_rank", "confidence", "highlight"} <= set(j)


def test_the_answer_comes_from_the_first_passage_and_highlights_the_number(engine):
    r = engine.ask("How many valid patents did the Foshan high-tech zone hold in 2020?")
    assert not r.abstained and "92,000" in r.answer.text
    assert r.answer.passage_rank == 1
    text = engine.index.articles[r.answer.doc_id].text
    assert text[r.answer.highlight[0]:r.answer.highlight[1]].startswith("92,000")
    assert [h.rank for h in r.hits] == list(range(1, len(r.hits) + 1))


def test_a_date_question_highlights_the_date(engine):
    r = engine.ask("When was Dongguan's application approved?")
    text = engine.index.articles[r.answer.doc_id].text
    assert text[r.answer.highlight[0]:r.answer.highlight[1]] == "April 2018"


def test_k_one_still_cites_rank_one(engine):
    r = engine.ask("What metaphor is used for Dongguan's national innovative city title?", k=1)
    assert len(r.hits) == 1
    assert r.abstained or r.answer.passage_rank == 1


@pytest.mark.parametrize("text, expected", [
    ("In 2020, output rose.", {2020}),
    ("the three-year action plan (2018-20)", {2018, 2019, 2020}),
    ("the 2018-19 season, a 2018-2019-2020 run", {2018, 2019, 2020}),
    ("from 2016 through 2018", {2016, 2017, 2018}),
    ("between 2019 and 2021", {2019, 2020, 2021}),
    ("2,018 robots, 2018.5 tonnes, $2019, 2020% and the 1990s", set()),
    ("in 1999 and 2001, 1200 BC", {1999, 2000, 2001}),  # "and" reads as a range: fewer clashes, never more
])
def test_years(text, expected):
    assert years(text) == expected


@pytest.mark.parametrize("question, snippet, clash", [
    ("How many firms did Foshan have in 2018?", "It had 5,718 firms in 2020.", True),
    ("How many firms did Foshan have in 2018?", "It had 5,718 firms in 2018 and 2020.", False),
    ("How many firms did Foshan have in 2018?", "It had 5,718 firms.", False),  # no year: no clash
    ("How many firms did Foshan have?", "It had 5,718 firms in 2020.", False),  # none asked
    ("What happened in 2017?", "The plan ran from 2016 to 2018.", False),
    ("What happened in 2018 or 2019?", "In 2019, it opened.", False),
])
def test_year_clash(question, snippet, clash):
    why = year_clash(question, snippet)
    assert bool(why) is clash
    if clash:
        assert "2018" in why and "2020" in why


def test_an_answer_about_another_year_is_ruled_out_and_says_why(engine):
    """The issue's example: the 2020 figure is no answer to a question about 2018."""
    r = engine.ask("How many high-tech enterprises did Foshan have in 2018?")
    assert r.abstained and r.answer is None and r.confidence == 0.0
    assert any("asks about 2018" in n and "2020" in n for n in r.notices)
    assert r.hits, "the closest passages are still shown"
    out = engine.to_json(r)
    assert out["notices"] == list(r.notices) and "asks about 2018" in out["withheld"]
    answered = engine.ask("How many high-tech enterprises did Foshan have in 2020?")
    assert not answered.abstained and "2020" in answered.answer.text and not answered.notices
    assert "withheld" not in engine.to_json(answered)


@pytest.mark.parametrize("question, snippet, kind", [
    ("In what year was the zone founded?", "The zone was founded shortly after the war.", "year"),
    ("On what date was it launched?", "It was launched shortly after.", "date"),
    ("Which year saw the most patents?", "Patents rose by 1,323 and then by 87.5 percent.", "year"),
    ("In what year was the zone founded?", "It was founded in 1992.", None),
    ("To which year is the casket dated?", "The casket is dated c1180.", None),
    ("On what date was it launched?", "It was launched on May 17.", None),
    ("In what year did it open?", "It opened in the 1990s.", None),
    ("In which century was it built?", "It was built in the 12th century.", None),
    ("What year did it open?", "It may open soon.", "year"),  # "may" is no month
    ("How many firms were there?", "There were many.", None),  # asks for no year
])
def test_no_year_named(question, snippet, kind):
    why = no_year_named(question, snippet)
    assert bool(why) is (kind is not None)
    if kind:
        assert f"asks for a {kind}" in why


def test_a_snippet_that_names_no_year_is_no_answer_to_a_question_for_one(engine):
    r = engine.ask("In what year was Songshan Lake Science City officially launched?")
    assert r.abstained and r.answer is None and r.confidence == 0.0
    assert any("asks for a year" in n and "names none" in n for n in r.notices)
    assert "asks for a year" in engine.to_json(r)["withheld"] and r.hits
    answered = engine.ask("What year did Dongguan apply to build a national innovative city?")
    assert not answered.abstained and "2017" in answered.answer.text and not answered.notices


def test_an_answer_that_shares_no_word_with_its_article_is_ruled_out_and_says_why(engine):
    # Markup and words the articles never use: only nearness of meaning would pick a sentence.
    r = engine.ask("<script>alert('x')</script>")
    assert r.abstained and r.answer is None and r.confidence == 0.0
    assert any("no word of the question" in n for n in r.notices)
    assert "no word of the question" in engine.to_json(r)["withheld"]
    assert r.hits, "the closest passages are still shown"


@pytest.mark.parametrize("question", [
    "Which country won the 2022 FIFA World Cup?",
    "What is the boiling point of water at sea level in degrees Fahrenheit?",
    "Quelle est la population de la France ?",
    "日本の首都はどこですか",
    "the of and is to",
    "?!?! ... ;;;",
    "<script>alert('x')</script>",
    "<b>Wer</b> hat <i>das</i> gesagt?",
])
def test_off_topic_and_bad_input_abstain_with_a_normal_response(engine, question):
    r = engine.ask(question)
    assert r.abstained and r.answer is None
    out = engine.to_json(r)
    assert out["abstained"] is True and out["answer"] is None
    assert all(p["low_relevance"] for p in out["passages"])


def test_rescore_keeps_scores_falling_down_the_list():
    from qa.answer import rescore
    from qa.types import Hit, Passage

    def h(pid, score):
        return Hit(Passage(pid, "d", 0, 1, "x"), score, pid)
    # two re-ordered passages, then the retriever's tail where merge put a repeat (.8) last
    got = rescore([h(2, .3), h(1, .9)], {1: -1.0, 2: 1.0}, [h(3, .6), h(4, .3), h(5, .8)])
    assert [x.passage.pid for x in got] == [2, 1, 3, 4, 5]
    assert [x.rank for x in got] == [1, 2, 3, 4, 5]
    scores = [x.score for x in got]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert rescore([], {}, []) == []


@pytest.mark.parametrize("k", [1, 5, 40])
def test_ask_scores_fall_with_rank(engine, k):
    r = engine.ask("How large was Foshan's total industrial output in 2017?", k=k)
    scores = [h.score for h in r.hits]
    assert len(r.hits) == min(k, len(engine.index.passages))
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_qa_calibrate_fits_both_models_on_the_seeds(seeds_index, tmp_path):
    from conftest import QUESTIONS
    from qa.cli import main

    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--on", str(seeds_index), str(QUESTIONS), "--limit", "40",
                 "--out", str(out)]) == 0
    cal = json.loads(out.read_text())
    assert set(cal["sentence"]["weights"]) == set(SENTENCE_FEATURES)
    assert set(cal["confidence"]["weights"]) == set(CONFIDENCE_FEATURES)
    assert 0 < cal["threshold"] < 1
    # The overlap with the question must count for a sentence, as on SQuAD.
    assert cal["sentence"]["weights"]["wov"] + cal["sentence"]["weights"]["pref"] > 0
    Calibration.from_dict(cal)


@pytest.mark.parametrize("args,message", [
    (["--max-wrong-abstain", "0.03", "0.05"], "one share, or one per --on set (1), got 2"),
    (["--max-wrong-abstain", "1.5"], "shares are from 0 to below 1, got 1.5"),
    (["--reach", "-1"], "--reach takes auto, all or a number of logits of at least 0, got '-1'"),
    (["--reach", "far"], "got 'far'"),
    (["--reach", "2"], "--reach is for a reader's calibration: add --reader DIR"),
])
def test_qa_calibrate_refuses_a_bad_share_or_reach(seeds_index, tmp_path, capsys, args, message):
    from conftest import QUESTIONS
    from qa.cli import main

    assert main(["calibrate", "--on", str(seeds_index), str(QUESTIONS), *args,
                 "--out", str(tmp_path / "c.json")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_qa_calibrate_names_a_malformed_question_file(seeds_index, tmp_path, capsys):
    from qa.cli import main

    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "question": "Why?"}\n')
    assert main(["calibrate", "--on", str(seeds_index), str(bad), "--out",
                 str(tmp_path / "c.json")]) != 0
    err = capsys.readouterr().err
    assert "q.jsonl:1 has no doc, answers" in err and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()


FOSHAN_COUNT = "How many high-tech enterprises did Foshan have in 2020?"


@pytest.mark.parametrize("question,history,counted,not_this", [
    # The zone's sentence lists SMEs and high-tech enterprises "1,323 and 2,931 respectively".
    (FOSHAN_COUNT, [], "2,931", "1,323"),
    ("How many high-tech enterprises did Foshan have?", [], "2,931", "1,323"),
    # "7,387 national high-tech enterprises and over 11,000 industrial enterprises": the count
    # asked for, not the first number after it. (The 3-layer reader's snippet ran on into the
    # shares "50.9% and 37.9%" of the next sentence; the 6-layer one quotes this sentence alone.
    # After FOSHAN_COUNT, which asks "in 2020", the 3-layer reader quoted the shares' sentence
    # alone: a reading miss, not a highlight one, so that pair is not here.)
    ("And Dongguan?", ["How many high-tech enterprises did Foshan have?"], "7,387", "11,000"),
])
def test_the_highlight_is_the_count_of_the_asked_for_thing(engine, question, history, counted,
                                                           not_this):
    r = engine.ask(question, history=history)
    assert not r.abstained and counted in r.answer.text and not_this in r.answer.text
    text = engine.index.articles[r.answer.doc_id].text
    assert text[r.answer.highlight[0]:r.answer.highlight[1]] == counted


def test_without_a_counted_thing_in_the_sentence_the_first_number_stays(engine):
    # "SMEs" is not how the article names them, so nothing ties a number to it: the first one.
    r = engine.ask("How many SMEs were located in the Foshan high-tech zone in 2020?")
    text = engine.index.articles[r.answer.doc_id].text
    assert text[r.answer.highlight[0]:r.answer.highlight[1]] == "1,323"
