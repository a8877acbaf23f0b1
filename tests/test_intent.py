"""Chit-chat and other languages are told apart from questions, and get a reply, not a quote."""

from __future__ import annotations

import pytest

from qa.intent import CHITCHAT, OTHER_LANGUAGE, QUESTION, classify, reply


@pytest.mark.parametrize("text,kind", [
    ("hi", CHITCHAT), ("Hello there!", CHITCHAT), ("thanks", CHITCHAT),
    ("Thank you very much.", CHITCHAT), ("ok", CHITCHAT), ("bye", CHITCHAT),
    ("Who are you?", CHITCHAT), ("what can you do", CHITCHAT), ("Good morning", CHITCHAT),
    ("佛山有多少家高新技术企业？", OTHER_LANGUAGE), ("Сколько компаний в Фошане?", OTHER_LANGUAGE),
    ("東莞は いつ 承認された？", OTHER_LANGUAGE),
    ("Hi, when was Dongguan's application approved?", QUESTION),
    ("How many high-tech enterprises did Foshan have in 2020?", QUESTION),
    ("Who is the mayor of Foshan?", QUESTION), ("help with Foshan's patents", QUESTION),
    ("How many firms are in Foshan (佛山)?", QUESTION),  # a name in another script is fine
    ("2020", QUESTION),
    # Latin script, another language: told by its function words.
    ("¿Cuántas empresas de alta tecnología tiene Foshan?", OTHER_LANGUAGE),
    ("Wie viele Hightech-Unternehmen hat Foshan?", OTHER_LANGUAGE),
    ("Où est Foshan ?", OTHER_LANGUAGE),
    ("Combien d'entreprises de haute technologie à Foshan ?", OTHER_LANGUAGE),
    ("Quante imprese high-tech ha Foshan?", OTHER_LANGUAGE),
    ("Quantas empresas de alta tecnologia tem Foshan?", OTHER_LANGUAGE),
    ("Hoeveel hightechbedrijven heeft Foshan?", OTHER_LANGUAGE),
    # English with foreign names or words stays a question.
    ("When did Charles de Gaulle die?", QUESTION),
    ("How far is La Paz from Los Angeles?", QUESTION),
    ("What is the role of the Foshan hi-tech zone's 'Wie' programme?", QUESTION),
    ("And Dongguan?", QUESTION),
])
def test_classify(text, kind):
    assert classify(text) == kind


def test_every_english_question_of_the_seeds_is_a_question(questions):
    assert [q["question"] for q in questions if classify(q["question"]) != QUESTION] == []


def test_replies_say_what_the_product_does():
    assert "5 news articles" in reply(CHITCHAT, 5) and "cit" in reply(CHITCHAT, 5)
    assert "English" in reply(OTHER_LANGUAGE, 1204) and "1,204 articles" in reply(OTHER_LANGUAGE, 1204)


@pytest.mark.slow
def test_the_engine_replies_without_retrieval_and_never_rewrites(engine):
    for text, kind in (("hi", CHITCHAT), ("佛山有多少家高新技术企业？", OTHER_LANGUAGE),
                       ("¿Cuántas empresas de alta tecnología tiene Foshan?", OTHER_LANGUAGE)):
        result = engine.ask(text, history=["How many high-tech enterprises did Foshan have in 2020?"])
        out = engine.to_json(result)
        assert result.abstained and result.answer is None and not result.hits
        assert out["kind"] == kind and out["reply"] and "resolved_question" not in out
    out = engine.to_json(engine.ask("When was Dongguan's application approved?"))
    assert out["kind"] == "question" and "reply" not in out and out["answer"]
