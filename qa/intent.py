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
