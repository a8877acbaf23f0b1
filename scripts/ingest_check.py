"""Reading and parsing articles (qa.ingest) in one process against Ray Data tasks on a cluster,
as `qa build --ray` reads them: seconds, articles per second, and whether the two reports are
the same (articles, skipped files, duplicates, in order).

Usage: PYTHONPATH=$PWD python scripts/ingest_check.py FOLDER --ray ADDRESS [--workers 1,2]
  e.g. FOLDER of HTML pages; the README (Past one machine) made 2,000 from SQuAD 1.1 train
  paragraphs in a news page's markup.
"""

import argparse
import time
from pathlib import Path

from qa.bench_cluster import load_average
from qa.cluster import connect, read_on_ray
from qa.ingest import ingest


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder", type=Path)
    p.add_argument("--ray", required=True, metavar="ADDRESS")
    p.add_argument("--workers", default="1,2", help="Ray tasks at once, each run in turn")
    args = p.parse_args()
    started = time.perf_counter()
    here = ingest([args.folder])
    seconds = time.perf_counter() - started
    n = len(here.articles)
    print(f"{here.files:,} files, {n:,} articles; one process: {seconds:.1f} s, "
          f"{n / seconds:.1f} articles/s (load average {load_average():.1f})")
    ray = connect(args.ray)
    for workers in (int(w) for w in args.workers.split(",")):
        started = time.perf_counter()
        there = ingest([args.folder], read_on_ray(ray, workers))
        seconds = time.perf_counter() - started
        print(f"Ray, {workers} task(s) at once: {seconds:.1f} s, {n / seconds:.1f} articles/s, "
              f"same report: {there == here} (load average {load_average():.1f})")


if __name__ == "__main__":
    main()
