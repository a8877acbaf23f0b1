"""Reading and parsing articles (qa.ingest) in one process against Ray Data tasks on a cluster,
as `qa build --ray` reads them (qa.cluster.ingest_on_ray): seconds, articles per second, whether
the two give the same report (kept articles in order, skipped files, duplicates), and what the
asking process holds afterwards (Python memory, by tracemalloc, in a run of its own: one process
holds every article; on Ray the driver holds only its choices, and the articles stay on the
cluster).

Usage: PYTHONPATH=$PWD python scripts/ingest_check.py FOLDER --ray ADDRESS [--workers 1,2]
  [--make N]   first write N HTML pages into FOLDER, each 4 SQuAD 1.1 train paragraphs in a news
               page's markup (nav, aside, footer, meta), as the README's figures used (2,000)
"""

import argparse
import html
import json
import time
import tracemalloc
from pathlib import Path

from qa.bench_cluster import load_average
from qa.cluster import connect, ingest_on_ray
from qa.ingest import ingest
from qa.store import _article_from_row

PAGE = """<!doctype html><html><head><title>{title}</title>
<meta property="og:title" content="{title}"><meta name="author" content="Staff reporter">
<meta property="article:published_time" content="2021-0{month}-1{day}"></head><body>
<nav><a href="/">Home</a> | <a href="/world">World</a> | <a href="/business">Business</a></nav>
<article><h1>{title}</h1><p class="byline">By Staff reporter</p>{body}</article>
<aside><h3>Most read</h3><ul><li>Markets close higher</li><li>Weather warning</li></ul></aside>
<footer>Copyright 2021 The Daily Example. All rights reserved.</footer></body></html>"""


def make_pages(folder: Path, n: int) -> None:
    """n pages of 4 SQuAD 1.1 train paragraphs each, in file order of the training set."""
    from qa.squad import SQUAD_TRAIN, read_squad, title_text

    paragraphs = [(title_text(a["title"]), p["context"]) for a in read_squad(SQUAD_TRAIN)
                  for p in a["paragraphs"]]
    if n > len(paragraphs) // 4:
        raise SystemExit(f"--make {n}: SQuAD 1.1 train makes at most {len(paragraphs) // 4:,} pages")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        group = paragraphs[4 * i:4 * i + 4]
        body = "".join(f"<p>{html.escape(text)}</p>" for _, text in group)
        title = f"{group[0][0]}: report {i}"
        (folder / f"page-{i:05d}.html").write_text(
            PAGE.format(title=html.escape(title), month=i % 9 + 1, day=i % 9, body=body),
            encoding="utf-8")


def held(run) -> tuple[object, float, float]:
    """run()'s result, and the Python memory it left held and its peak, in MB."""
    tracemalloc.start()
    try:
        got = run()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return got, current / 1e6, peak / 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder", type=Path)
    p.add_argument("--ray", required=True, metavar="ADDRESS")
    p.add_argument("--workers", default="1,2", help="Ray tasks at once, each run in turn")
    p.add_argument("--make", type=int, default=0, metavar="N")
    args = p.parse_args()
    if args.make:
        make_pages(args.folder, args.make)
    started = time.perf_counter()
    here = ingest([args.folder])
    seconds = time.perf_counter() - started
    n = len(here.articles)
    print(f"{here.files:,} files, {n:,} articles; one process: {seconds:.1f} s, "
          f"{n / seconds:.1f} articles/s (load average {load_average():.1f})")
    ray = connect(args.ray)
    workers = [int(w) for w in args.workers.split(",")]
    for w in workers:
        started = time.perf_counter()
        report, kept = ingest_on_ray(ray, [args.folder], w)
        seconds = time.perf_counter() - started
        rows = sorted(kept.take_all(), key=lambda r: int(r["article"]))
        same = ((report.kept, report.skipped, report.duplicates) ==
                (n, here.skipped, here.duplicates)
                and [_article_from_row(json.loads(r["row"])) for r in rows] == here.articles)
        print(f"Ray, {w} task(s) at once: {seconds:.1f} s, {n / seconds:.1f} articles/s, "
              f"same report: {same} (load average {load_average():.1f})")
    del here
    here_held = held(lambda: ingest([args.folder]))
    ray_held = held(lambda: ingest_on_ray(ray, [args.folder], workers[-1]))
    text = sum(len(a.text) for a in here_held[0].articles)
    print(f"Python memory held after reading, one process: {here_held[1]:.1f} MB, peak "
          f"{here_held[2]:.1f} MB ({1e6 * here_held[2] / n:,.0f} bytes an article; their text is "
          f"{text / n:,.0f} characters an article)")
    print(f"the same on Ray, the driver: {ray_held[1]:.1f} MB, peak {ray_held[2]:.1f} MB "
          f"({1e6 * ray_held[2] / n:,.0f} bytes an article)")


if __name__ == "__main__":
    main()
