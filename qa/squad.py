"""SQuAD files -> what the project trains, tunes and scores on, with the held-out split kept.

`../shared/qa-train/SOURCES.md` defines the split: SQuAD 1.1 dev articles 24-47, and the SQuAD 2.0
dev articles that are the same, are held out; nothing is fitted on them. Of the other SQuAD 2.0
dev articles, those with an even index (in file order) train the reader and the odd ones tune it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from .settings import ROOT, UserError

SHARED = ROOT.parent / "shared"
SQUAD_TRAIN = SHARED / "qa-train" / "squad-v1.1-train.json.gz"
SQUAD_V2_DEV = SHARED / "qa-train" / "squad-v2.0-dev.json"
SQUAD_V1_DEV = SHARED / "beir" / "squad-v1.1-dev"
# SQuAD 1.1 dev article indexes scored as held out (the BEIR copy's doc ids start with them).
HELD_OUT_V1 = range(24, 48)
TRAIN_V2_PARITY = 0


def read_squad(path: Path) -> list[dict]:
    """The `data` list of a SQuAD JSON file (plain or gzipped)."""
    if not path.is_file():
        raise UserError(f"{path} is missing; the training data lives in ../shared/qa-train "
                        f"(see its SOURCES.md)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)["data"]


def held_out_titles() -> set[str]:
    """Titles of SQuAD 1.1 dev articles 24-47, with '_' as in the SQuAD files."""
    titles = set()
    with (SQUAD_V1_DEV / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if int(row["_id"].split("_")[0]) in HELD_OUT_V1:
                titles.add(row["title"].replace(" ", "_"))
    return titles


def v2_split(articles: list[dict], held_out: set[str]) -> tuple[list[dict], list[dict]]:
    """SQuAD 2.0 dev articles that are not held out: (train, tune), alternating in file order."""
    free = [a for a in articles if a["title"] not in held_out]
    return ([a for i, a in enumerate(free) if i % 2 == TRAIN_V2_PARITY],
            [a for i, a in enumerate(free) if i % 2 != TRAIN_V2_PARITY])


def title_text(title: str) -> str:
    from urllib.parse import unquote

    return unquote(title).replace("_", " ")


def v1_dev_articles(held_out: bool) -> list[dict]:
    """SQuAD 1.1 dev as SQuAD-style articles, rebuilt from the BEIR copy: the tuning half
    (articles 0-23) or the held-out half (24-47)."""
    paras: dict[str, dict] = {}
    titles: dict[str, str] = {}
    with (SQUAD_V1_DEV / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if (int(row["_id"].split("_")[0]) in HELD_OUT_V1) == held_out:
                paras[row["_id"]] = {"context": row["text"], "qas": []}
                titles[row["_id"]] = row["title"]
    with (SQUAD_V1_DEV / "questions.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["doc"] in paras:
                paras[row["doc"]]["qas"].append(
                    {"question": row["question"], "answers": [{"text": t} for t in row["answers"]]})
    by_article: dict[str, list[dict]] = {}
    for pid, p in paras.items():
        by_article.setdefault(titles[pid], []).append(p)
    return [{"title": t, "paragraphs": ps} for t, ps in by_article.items()]


def corpus_line(pid: str, article: dict, paragraph: dict) -> str:
    """A SQuAD paragraph as a line of a BEIR-style corpus.jsonl (its article's title, unquoted)."""
    return json.dumps({"_id": pid, "title": title_text(article["title"]),
                       "text": paragraph["context"]}, ensure_ascii=False) + "\n"


def gold_answers(qa: dict) -> list[str]:
    """A SQuAD question's answer texts, each once, in order; [] for an unanswerable one."""
    return list(dict.fromkeys(x["text"] for x in qa["answers"] if x["text"]))


def write_squad2(out: Path, articles: list[dict] | None = None) -> dict[str, int]:
    """SQuAD 2.0 dev as a corpus to index and question files in our format, in `out`:
    corpus.jsonl (every paragraph, `_id` = "<article>_<paragraph>"), questions-tune.jsonl and
    questions-heldout.jsonl. Each question names the paragraph it was written on as `given`;
    an unanswerable one has doc null.

    Returns:
        questions written per file.
    """
    articles = read_squad(SQUAD_V2_DEV) if articles is None else articles
    held_out = held_out_titles()
    _, tune = v2_split(articles, held_out)
    tune_titles = {a["title"] for a in tune}
    out.mkdir(parents=True, exist_ok=True)
    counts = {"questions-tune.jsonl": 0, "questions-heldout.jsonl": 0}
    files = {name: (out / name).open("w", encoding="utf-8") for name in counts}
    try:
        with (out / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
            for ai, a in enumerate(articles):
                name = ("questions-heldout.jsonl" if a["title"] in held_out else
                        "questions-tune.jsonl" if a["title"] in tune_titles else None)
                for pi, p in enumerate(a["paragraphs"]):
                    pid = f"{ai}_{pi}"
                    corpus.write(corpus_line(pid, a, p))
                    if name is None:
                        continue
                    for qa in p["qas"]:
                        answers = gold_answers(qa)
                        row = {"id": qa["id"], "question": qa["question"],
                               "doc": pid if answers else None, "answers": answers, "given": pid}
                        files[name].write(json.dumps(row, ensure_ascii=False) + "\n")
                        counts[name] += 1
    finally:
        for f in files.values():
            f.close()
    return counts
