"""Question -> what kind of message it is: a question for the articles, chit-chat, or a question
in a language the product does not read. Only questions go on to retrieval; the others get a
short reply that says what the product can do, never a quote.
"""

from __future__ import annotations

import re
import unicodedata

QUESTION, CHITCHAT, OTHER_LANGUAGE = "question", "chitchat", "other_language"

# Whole messages only: "hi", "thanks!", "good morning", "what can you do?". A question that
# merely starts with "hi, ..." and goes on to ask something is a question.
_CHITCHAT = re.compile(r"""^(?:
    (?:hi|hello|hey|hiya|howdy|yo|greetings|good\s+(?:morning|afternoon|evening|day))(?:\s+there)?|
    (?:thanks?|thank\s+you|thx|ty|cheers|many\s+thanks)(?:\s+(?:a\s+lot|so\s+much|very\s+much))?|
    ok(?:ay)?|cool|great|nice|awesome|perfect|got\s+it|i\s+see|
    bye|goodbye|good\s*bye|see\s+you|see\s+ya|
    how\s+are\s+you(?:\s+doing)?|how\s+is\s+it\s+going|what'?s\s+up|
    who\s+are\s+you|what\s+are\s+you|what\s+can\s+you\s+do|what\s+do\s+you\s+do|help|
    how\s+does\s+this\s+work|how\s+do\s+i\s+use\s+(?:this|you)
)$""", re.IGNORECASE | re.VERBOSE)
# Share of letters outside the Latin script above which a message is not English.
MAX_OTHER_SCRIPT = 0.3
# Latin-script languages are told by their function words: a message with at least two of
# these and more of them than English ones is not English. Words that are English too ("die",
# "hat", "was", "a", "per", "van") are left out, and names ("de Gaulle", "Los Angeles") bring
# one or two at most, outnumbered by the English words around them.
_FOREIGN = frozenset("""
el los las del que qué y un una unos unas es son por para con cómo cuántos cuántas cuánto cuál
cuáles cuándo dónde quién quiénes tiene tienen tenía fue fueron está están hay sobre entre al se
su sus lo le más año años empresas ciudad
der das und ist sind wie viele wieviel wann wo wer welche welcher welches haben hatte hatten ein
eine einen einem einer mit von für auf im zu nicht den dem des auch wurde wurden gibt es sich
le la les des du et est sont une où quand qui quel quelle quels quelles combien comment pourquoi
dans pour avec sur aux ont été entreprises ville
il gli di che è quanti quante quanto dove chi perché hanno nel nella della delle degli dei
os do da dos das em uma quantas quantos onde quem têm tem foi são não
het een en zijn hoeveel wanneer waar wie wat heeft hebben niet op voor
""".split())
_ENGLISH = frozenset("""
the a an of in on at to for from by with about into over after before and or but not no is are
was were be been being has have had do does did will would can could should may might must
how many much what when where who whom whose which why that this these those there it its they
them their he she his her we our you your i me my
""".split())
# A question word that opens a message in these languages ("Quante imprese ha Foshan?").
_FOREIGN_OPENERS = frozenset("""
qué cómo cuántos cuántas cuánto cuál cuándo dónde quién wie wieviel wann wo wer welche welcher
où quand combien comment pourquoi quel quelle quanti quante quanto dove perché quantos quantas
onde quem hoeveel wanneer waar
""".split())
_LETTERS = re.compile(r"[^\W\d_]+")


def latin_other_language(text: str) -> bool:
    """Whether a Latin-script message is in another language than English, by function words.

    >>> latin_other_language("¿Cuántas empresas de alta tecnología tiene Foshan?")
    True
    >>> latin_other_language("Wie viele Hightech-Unternehmen hat Foshan?")
    True
    >>> latin_other_language("Quante imprese high-tech ha Foshan?")
    True
    >>> latin_other_language("How far is La Paz from Los Angeles?")
    False
    """
    words = [w.lower() for w in _LETTERS.findall(text)]
    foreign = sum(w in _FOREIGN for w in words)
    english = sum(w in _ENGLISH for w in words)
    opener = bool(words) and words[0] in _FOREIGN_OPENERS and english == 0
    return opener or (foreign >= 2 and foreign > english)


def classify(text: str) -> str:
    """QUESTION, CHITCHAT or OTHER_LANGUAGE.

    >>> classify("Hi!"), classify("Thank you very much."), classify("What can you do?")
    ('chitchat', 'chitchat', 'chitchat')
    >>> classify("佛山有多少家高新技术企业？"), classify("Hi, when was Dongguan approved?")
    ('other_language', 'question')
    """
    letters = [ch for ch in text if ch.isalpha()]
    if letters:
        other = sum(not unicodedata.name(ch, "").startswith("LATIN") for ch in letters)
        if other / len(letters) > MAX_OTHER_SCRIPT:
            return OTHER_LANGUAGE
    if latin_other_language(text):
        return OTHER_LANGUAGE
    words = " ".join(re.sub(r"[^\w'\s]", " ", text).split())
    return CHITCHAT if _CHITCHAT.match(words) else QUESTION


def reply(kind: str, articles: int, example: str | None = None) -> str:
    """What the product says instead of answering: what it can do, and how to ask."""
    ask = f' For example: "{example}"' if example else ""
    if kind == OTHER_LANGUAGE:
        return (f"I read English articles and questions only, so I cannot answer this one. "
                f"Please ask in English about the {articles:,} articles here.{ask}")
    return (f"Hello! I answer questions from the {articles:,} news articles here, quoting the "
            f"sentence that answers and citing its article; when they do not hold the answer, "
            f"I say so.{ask}")
