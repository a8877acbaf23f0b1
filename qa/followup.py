"""Follow-up questions: resolve "And Dongguan?" or "When was that approved?" against the last turn.

Rules, tried in order, against the most recent earlier question ("previous"):

1. A question with a subject of its own (a name, or enough content words and no pronoun) is
   returned unchanged.
2. "And/What about/How about X?" with X a name swaps X for the matching name of the previous
   question: "How many high-tech enterprises did Foshan have in 2020?" + "And Dongguan?" ->
   "How many high-tech enterprises did Dongguan have in 2020?".
3. ... with X a year swaps the year: + "And in 2018?" -> "... did Foshan have in 2018?".
4. ... with X something else keeps the previous question's wh-words and topic:
   + "What about patents?" -> "How many patents? (Foshan 2020)";
   a possessive names the previous subject: "And its export value?" after "What was the income
   of the Foshan Hi-tech Zone in 2020?" -> "What was Foshan Hi-tech Zone's export value? (2020)".
5. "And when was it approved?" drops the "And" and continues with rule 6.
6. A question that leans on the previous one (a pronoun such as it/that/its, or at most two
   content words, and no name of its own): a possessive becomes the previous question's name
   ("What was its budget?" -> "What was Foshan's budget?"), and the previous question's names and
   years (else its content words) are appended: "When was it approved? (Dongguan)".
"""

from __future__ import annotations

import re

_LEAD = re.compile(r"^\s*(?:and\s+what\s+about|and\s+how\s+about|what\s+about|how\s+about|"
                   r"what\s+of|and\s+for|and)\b[\s,]*(?P<rest>.*?)[\s?.!]*$", re.I | re.S)
_PRONOUN = re.compile(r"\b(?:it|its|that|this|those|these|they|them|their|there|then|he|she|his|"
                      r"her|the same|the city|the company)\b", re.I)
_POSSESSIVE = re.compile(r"\b(?:its|their)\b", re.I)
_CONNECTOR = r"(?:of|and|for|the|de|du|van|von)"
# A capitalised word, then more capitalised words, optionally joined by of/and/the:
# "Ministry of Science and Technology" is one name.
_NAME = re.compile(rf"\b[A-Z][\w'&.-]*[A-Za-z0-9](?:\s+(?:{_CONNECTOR}\s+)*[A-Z][\w'&.-]*[A-Za-z0-9])*"
                   rf"|\b[A-Z]\b")
_YEAR = re.compile(r"\b(?:1[89]|20)\d{2}\b")
_QUESTION_WORD = re.compile(r"^(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|"
                            r"does|did|can|could|will|would|should|has|have|had|in|on|and|or|but|"
                            r"according|apart|compared|besides|after|before|since|during|i|a|an|"
                            r"the|then|so)$", re.I)
_WH = re.compile(r"^\s*(?P<wh>(?:how\s+(?:many|much|long|far|big|large|old|high|fast)|"
                 r"what\s+(?:percentage|share|proportion|number|amount|rate|year|month|day|date)|"
                 r"what|which|who|whom|whose|when|where|why|how))\b", re.I)
_STOP = frozenset("""a an the of in on at to for from by with and or but is are was were be been being
what which who whom whose when where why how do does did has have had it its this that these those
as into about than then so such there their they them he she his her we our you your i me my
many much long can could will would should may might also more most any some""".split())
_WORD = re.compile(r"[\w'-]+")
MIN_OWN_WORDS = 3


def resolve(question: str, history: list[str]) -> str:
    """The question as it reads on its own, given the earlier questions (oldest first).

    Args:
        question: the new question.
        history: earlier questions of the conversation, oldest first; non-text items are ignored.
            Pass the resolved form of earlier follow-ups so chains of follow-ups keep their topic.

    Returns:
        The question unchanged when it stands on its own or there is no earlier question;
        otherwise a rewrite that carries the previous question's subject (see the module rules).

    >>> resolve("And Dongguan?", ["How many high-tech enterprises did Foshan have in 2020?"])
    'How many high-tech enterprises did Dongguan have in 2020?'
    >>> resolve("When was it approved?", ["When did Dongguan apply to become a national innovative city?"])
    'When was it approved? (Dongguan)'
    """
    previous = next((h.strip() for h in reversed(history or [])
                     if isinstance(h, str) and h.strip()), None)
    if previous is None or not isinstance(question, str) or not question.strip():
        return question
    m = _LEAD.match(question)
    if m and m.group("rest"):
        rest = m.group("rest").strip()
        if _WH.match(rest) or _starts_like_question(rest):
            question = rest[0].upper() + rest[1:] + ("" if rest.endswith("?") else "?")  # rule 5
        else:
            return _about(rest, previous)
    if _leans_on_previous(question):
        return _with_topic(question, previous)
    return question


def _about(rest: str, previous: str) -> str:
    """Rules 2-4: "And X?" against the previous question."""
    rest = re.sub(r"^(?:in|for|during)\s+(?=(?:1[89]|20)\d{2}\b)", "", rest, flags=re.I)
    if _NAME.fullmatch(rest):
        target = _matching_name(_names(previous), rest)
        if target:
            return previous.replace(target, rest, 1)
    years = _YEAR.findall(previous)
    if _YEAR.fullmatch(rest) and years:
        return previous.replace(years[-1], rest, 1)
    wh = _WH.match(previous)
    lead = wh.group("wh") if wh else "What about"
    if wh and " " not in lead.strip():
        lead = " ".join(previous.split()[:2])  # "What was", "Who is": keep the verb
    lead = lead[0].upper() + lead[1:]
    names = _names(previous)
    if names:
        rest = _POSSESSIVE.sub(lambda _: f"{names[-1]}'s", rest, count=1)
    topic = " ".join(w for w in _topic_words(previous) if w.lower() not in _words_lower(rest))
    return f"{lead} {rest}? ({topic})" if topic else f"{lead} {rest}?"


def _with_topic(question: str, previous: str) -> str:
    """Rule 6: name the previous subject for a possessive, and append the previous topic."""
    names = _names(previous)
    q = question.rstrip()
    if names and _POSSESSIVE.search(q):
        name = names[-1]  # "the Party chief of Foshan": the last name is the owner
        q = _POSSESSIVE.sub(lambda _: f"{name}'s", q, count=1)
    topic = " ".join(w for w in _topic_words(previous) if w.lower() not in _words_lower(q))
    return f"{q} ({topic})" if topic else q


def _leans_on_previous(question: str) -> bool:
    if _names(question):
        return False
    own = [w for w in _WORD.findall(question) if w.lower() not in _STOP]
    return bool(_PRONOUN.search(question)) or len(own) < MIN_OWN_WORDS


def _starts_like_question(text: str) -> bool:
    first = text.split(None, 1)[0].lower() if text.split() else ""
    return first in {"is", "are", "was", "were", "do", "does", "did", "can", "could", "will",
                     "would", "has", "have", "had"}


def _names(text: str) -> list[str]:
    """Capitalised names, leaving out a capitalised word that only opens the sentence.

    >>> _names("What did the Ministry of Science and Technology approve for Dongguan?")
    ['Ministry of Science and Technology', 'Dongguan']
    """
    names = []
    for m in _NAME.finditer(text):
        name = m.group(0)
        if m.start() == _first_word_start(text):
            first, _, rest = name.partition(" ")
            if _QUESTION_WORD.match(first) or first.lower() in _STOP:
                rest = re.sub(rf"^(?:{_CONNECTOR}\s+)+", "", rest)
                if not rest:
                    continue
                name = rest
        if name.lower() in _STOP or len(name) < 2:
            continue
        names.append(name)
    return names


def _first_word_start(text: str) -> int:
    return len(text) - len(text.lstrip())


def _matching_name(names: list[str], new: str) -> str | None:
    """The previous name the new one replaces: one with as many words, else any; of those the
    last, since a question's first name is often a title or an actor and its last the place or
    owner asked about ("Who is the Party chief of Foshan?" + "And Dongguan?" swaps Foshan).

    >>> _matching_name(["Party", "Foshan"], "Dongguan")
    'Foshan'
    """
    if not names:
        return None
    same = [n for n in names if len(n.split()) == len(new.split())]
    return (same or names)[-1]


def _topic_words(previous: str) -> list[str]:
    """What the previous question was about: its names and years when it has some (its verbs
    would pull the answer towards the previous one), else its content words."""
    anchors = [w for n in _names(previous) for w in n.split() if w.lower() not in _STOP]
    anchors += _YEAR.findall(previous)
    return anchors or [w for w in _WORD.findall(previous) if w.lower() not in _STOP]


def _words_lower(text: str) -> set[str]:
    return {re.sub(r"'s$", "", w.lower()) for w in _WORD.findall(text)}
