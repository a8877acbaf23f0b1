"""How often an answer rule fires on right answers, wrong answers and unanswerable questions.

Asks every question once with the shipped settings, the rule measured here switched off (the
other rules in Picker.pick apply, so an answer they withhold keeps no text), records the
answers, then applies each rule below to the recorded snippets. The tuning halves choose
whether a rule ships (it must never fire on a right answer there); the held-out halves say what
it changed. Needs the indexes `bash scripts/reader_figures.sh` builds (default /tmp/qa-figures);
the answers are kept in FIGURES_DIR/rule-check/ and reused (delete the folder after changing the
reader). About 5 minutes on 2 cores the first time.

Usage: PYTHONPATH=$PWD python scripts/rule_check.py [FIGURES_DIR]
"""

import json
import random
import re
import sys
from pathlib import Path

from qa import answer
from qa.answer import _ASKS_YEAR, ENTITY, no_year_named
from qa.engine import QA
from qa.evaluation.data import load_questions
from qa.retrieve import Filters
from qa.settings import default_settings

SQUAD = Path(__file__).resolve().parents[1].parent / "shared/beir/squad-v1.1-dev/questions.jsonl"
SEEDS = Path(__file__).resolve().parents[1] / "tests/questions.jsonl"
TUNE, HELD = re.compile(r"^([0-9]|1[0-9]|2[0-3])_"), re.compile(r"^(2[4-9]|3[0-9]|4[0-7])_")

# The rules measured and not taken: a number asked for, no number in the snippet; a time asked
# for with "when", no date in it.
_NUMBER_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
    r"fifty|hundreds?|thousands?|millions?|billions?|dozens?|half|twice|double|several|few|"
    r"numerous|multiple|once)\b", re.IGNORECASE)


def no_number(question: str, snippet: str) -> bool:
    return bool(re.search(r"\bhow (?:many|much)\b", question, re.IGNORECASE)) and \
        not re.search(r"\d", snippet) and not _NUMBER_WORDS.search(snippet)


def when_no_date(question: str, snippet: str) -> bool:
    return bool(re.search(r"\bwhen\b", question, re.IGNORECASE)) and \
        not ENTITY["date"].search(snippet) and not re.search(r"\d{3,4}", snippet)


RULES = {"no_year_named (shipped)": lambda q, t: bool(no_year_named(q, t)),
         "how many/much, no number": no_number, "when, no date": when_no_date}
ASKS = {"no_year_named (shipped)": lambda q: bool(_ASKS_YEAR.search(q)),
        "how many/much, no number": lambda q: bool(re.search(r"\bhow (?:many|much)\b", q, re.I)),
        "when, no date": lambda q: bool(re.search(r"\bwhen\b", q, re.I))}


def sets(figures: Path) -> dict:
    """name -> (index folder, questions, ask of the given article only)."""
    squad = load_questions(SQUAD)
    seeds = load_questions(SEEDS)
    squad2 = figures / "squad2-data"
    return {
        "seeds tuning": ("seeds", [q for q in seeds if not q.id.startswith("nm")], False),
        "seeds nm (held out)": ("seeds", [q for q in seeds if q.id.startswith("nm")], False),
        "SQuAD 1.1 tuning": ("squad", [q for q in squad if q.doc and TUNE.match(q.doc)], False),
        "SQuAD 1.1 held out (1,500)": ("squad", random.Random(0).sample(
            [q for q in squad if q.doc and HELD.match(q.doc)], 1500), False),
        "SQuAD 2.0 tuning": ("squad2", load_questions(squad2 / "questions-tune.jsonl"), True),
        "SQuAD 2.0 held out (2,000)": ("squad2", random.Random(0).sample(
            load_questions(squad2 / "questions-heldout.jsonl"), 2000), True),
    }


def record(figures: Path, name: str, index: str, questions, given: bool) -> list[dict]:
    cache = figures / "rule-check" / (re.sub(r"\W+", "-", name).strip("-") + ".jsonl")
    if cache.exists():
        return [json.loads(line) for line in cache.open()]
    qa = QA.open(default_settings(index_dir=figures / index))
    rows = []
    answer.no_year_named = lambda question, snippet: ""  # measured here, so not applied
    for q in questions:
        r = qa.ask(q.question, filters=Filters(doc=q.given) if given else None)
        text = r.answer.text if r.answer else None
        rows.append({"id": q.id, "question": q.question, "answerable": q.answerable,
                     "text": text, "abstained": r.abstained, "withheld": r.withheld,
                     "right": bool(text and any(a in text for a in q.answers))})
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def main(figures: Path) -> None:
    for name, (index, questions, given) in sets(figures).items():
        rows = [r for r in record(figures, name, index, questions, given) if r["text"]]
        print(f"{name}: {len(rows)} answers with a snippet")
        for rule, fires in RULES.items():
            asked = [r for r in rows if ASKS[rule](r["question"])]
            fired = [r for r in asked if fires(r["question"], r["text"])]
            right = sum(r["right"] for r in asked)
            print(f"  {rule}: asked {len(asked)} ({right} right); fired on "
                  f"{sum(r['right'] for r in fired)} right, "
                  f"{sum(r['answerable'] and not r['right'] for r in fired)} wrong, "
                  f"{sum(not r['answerable'] for r in fired)} of "
                  f"{sum(not r['answerable'] for r in asked)} unanswerable "
                  f"({sum(not r['answerable'] and not r['abstained'] for r in fired)} "
                  f"not abstaining before)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/qa-figures"))
