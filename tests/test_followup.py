"""Follow-up resolution: rewrites of "And Dongguan?"-style questions, then retrieval with the real engine."""

from __future__ import annotations

import pytest

from qa.followup import resolve

DONGGUAN = "When did Dongguan apply to become a national innovative city?"
FOSHAN = "How many high-tech enterprises did Foshan have in 2020?"
ZONE = "What was the operating income of the Foshan Hi-tech Zone in 2020?"


@pytest.mark.parametrize("previous,question,expected", [
    (FOSHAN, "And Dongguan?", "How many high-tech enterprises did Dongguan have in 2020?"),
    (FOSHAN, "What about Dongguan?", "How many high-tech enterprises did Dongguan have in 2020?"),
    (FOSHAN, "and Dongguan", "How many high-tech enterprises did Dongguan have in 2020?"),
    (FOSHAN, "And in 2018?", "How many high-tech enterprises did Foshan have in 2018?"),
    (FOSHAN, "What about patents?", "How many patents? (Foshan 2020)"),
    (DONGGUAN, "And when was it approved?", "When was it approved? (Dongguan)"),
    (DONGGUAN, "When was that approved?", "When was that approved? (Dongguan)"),
    (FOSHAN, "What share of industrial enterprises was that?",
     "What share of industrial enterprises was that? (Foshan 2020)"),
    (ZONE, "And its total export value?",
     "What was Foshan Hi-tech Zone's total export value? (2020)"),
    ("What did the Ministry of Science and Technology approve for Dongguan?", "And Foshan?",
     "What did the Ministry of Science and Technology approve for Foshan?"),
    ("Who is the Party chief of Foshan?", "What was its budget?",
     "What was Foshan's budget? (Party)"),
])
def test_follow_ups_carry_the_previous_subject(previous, question, expected):
    assert resolve(question, [previous]) == expected


@pytest.mark.parametrize("previous,question,expected", [
    # Two names of one word each: the fallback took the first, a title or an actor
    # ("Who is the Dongguan chief of Foshan?"); the place asked about is the last.
    ("Who is the Party chief of Foshan?", "And Dongguan?", "Who is the Party chief of Dongguan?"),
    ("How many patents did Huawei file in Shenzhen in 2020?", "And Dongguan?",
     "How many patents did Huawei file in Dongguan in 2020?"),
    ("Did Xinhua report that Foshan was approved?", "What about Dongguan?",
     "Did Xinhua report that Dongguan was approved?"),
])
def test_the_swapped_name_is_the_one_asked_about(previous, question, expected):
    got = resolve(question, [previous])
    assert got == expected
    assert "Foshan" not in got and "Shenzhen" not in got


@pytest.mark.slow
@pytest.mark.parametrize("question", [
    "佛山有多少家高新技术企业？",                              # another language: never a follow-up
    "¿Cuántas empresas de alta tecnología tiene Foshan?",
    "Who is the Party chief of Dongguan?",                   # a subject of its own
])
def test_a_question_with_its_own_subject_or_language_is_never_rewritten(engine, question):
    out = engine.to_json(engine.ask(question, history=[FOSHAN]))
    assert "resolved_question" not in out, out.get("resolved_question")


@pytest.mark.parametrize("question", [
    "How many patents did Foshan have in 2020?",          # a subject of its own
    "What is the population of Paris?",
    "Which national ministry evaluates innovative cities?",
])
def test_questions_that_stand_alone_are_unchanged(question):
    assert resolve(question, [FOSHAN]) == question


@pytest.mark.parametrize("history", [[], ["", "  "], [None, 3], None])
def test_without_an_earlier_question_nothing_changes(history):
    assert resolve("And Dongguan?", history) == "And Dongguan?"


def test_the_most_recent_question_counts():
    assert resolve("And Dongguan?", [DONGGUAN, FOSHAN, ""]) == \
        "How many high-tech enterprises did Dongguan have in 2020?"


def test_chains_keep_the_topic_when_given_resolved_questions():
    first = resolve("And Dongguan?", [FOSHAN])
    assert resolve("And in 2019?", [FOSHAN, first]) == \
        "How many high-tech enterprises did Dongguan have in 2019?"


# ---------------------------------------------------------------- end to end, real model

PAIRS = [
    (DONGGUAN, "And when was it approved?", "April 2018"),
    (DONGGUAN, "When was that approved?", "April 2018"),
    (FOSHAN, "And Dongguan?", "7,387"),
    (FOSHAN, "What share of industrial enterprises was that?", "74%"),
    ("How much money did Foshan spend from its fiscal budget in 2020?",
     "What share of the public spending was it?", "10.2%"),
    (ZONE, "And its total export value?", "87.6 billion"),
    ("How long did Foshan work to become a National Innovation City?", "Who announced it?",
     "Foshan Technology Bureau"),
]


@pytest.mark.slow
@pytest.mark.parametrize("previous,question,answer", PAIRS)
def test_follow_up_retrieves_the_passage_with_the_answer(engine, previous, question, answer):
    result = engine.ask(question, history=[previous])
    assert result.resolved_question != question
    top = [h.passage.text for h in result.hits[:3]]
    assert any(answer in t for t in top), (result.resolved_question, top)


@pytest.mark.slow
def test_follow_up_through_the_json_object(engine):
    out = engine.to_json(engine.ask("And Dongguan?", history=[FOSHAN]))
    assert out["question"] == "And Dongguan?"
    assert out["resolved_question"] == "How many high-tech enterprises did Dongguan have in 2020?"
    assert any("7,387" in p["text"] for p in out["passages"][:3])
