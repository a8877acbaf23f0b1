"""Follow-up questions: resolve "And Dongguan?" or "When was that approved?" against the last turn."""

from __future__ import annotations

import re

_AND_ABOUT = re.compile(r"^\s*(?:and|what about|how about|and what about|what of)\s+(?P<rest>.+?)\s*\??\s*$", re.I)
_PRONOUN = re.compile(r"\b(?:it|its|that|this|those|these|they|them|their|there|he|she|his|her)\b", re.I)
_NAME = re.compile(r"\b[A-Z][a-zA-Z-]+(?:\s+[A-Z][a-zA-Z-]+)*")
_QUESTION_WORD = re.compile(r"^(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|will|would|should)\b", re.I)


def resolve(question: str, history: list[str]) -> str:
    """The question as it reads on its own, given the earlier questions (oldest first).

    A question with a subject of its own is returned unchanged. Examples, after
    "When did Foshan become a national innovation city?":
        "And Dongguan?"            -> "When did Dongguan become a national innovation city?"
        "When was that approved?"  -> "When was that approved? (Foshan national innovation city)"
    """
    previous = next((h for h in reversed(history) if isinstance(h, str) and h.strip()), None)
    if previous is None:
        return question
    m = _AND_ABOUT.match(question)
    if m:
        rest = m.group("rest")
        names = _names(previous)
        if names and _NAME.fullmatch(rest.strip()):
            # Swap the subject: the last turn's first name becomes the new one.
            return previous.replace(names[0], rest.strip(), 1)
        return f"{previous.rstrip(' ?')} {rest}?"
    if _PRONOUN.search(question) and not _names(question):
        return f"{question.rstrip()} ({_topic(previous)})"
    return question


def _names(text: str) -> list[str]:
    """Capitalised names, leaving out a question word that only opens the sentence."""
    names = []
    for m in _NAME.finditer(text):
        name = m.group(0)
        if m.start() == 0 and _QUESTION_WORD.match(name):
            rest = name.split(" ", 1)[1] if " " in name else ""
            if not rest:
                continue
            name = rest
        names.append(name)
    return names


def _topic(previous: str) -> str:
    words = [w for w in re.findall(r"[\w'-]+", previous) if not _QUESTION_WORD.fullmatch(w)]
    return " ".join(words)
