"""Time /api/ask: 100 sequential questions from tests/questions.jsonl against a running app.

    python app.py --port 7860 &            # then:
    python examples/api_latency.py http://127.0.0.1:7860 [--n 100] [--auth user:pass]

Prints the p50, p90 and mean latency of the requests (client side, after one warm-up request).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import httpx

QUESTIONS = Path(__file__).resolve().parent.parent / "tests" / "questions.jsonl"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", default="http://127.0.0.1:7860")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--auth", help="user:password when the app requires a login")
    args = p.parse_args()
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    with httpx.Client(base_url=args.url.rstrip("/"), auth=auth, timeout=120) as client:
        client.get("/api/ask", params={"question": "warm-up"}).raise_for_status()
        times, statuses = [], []
        for question in itertools.islice(itertools.cycle(questions), args.n):
            started = time.perf_counter()
            r = client.get("/api/ask", params={"question": question})
            times.append(time.perf_counter() - started)
            statuses.append(r.status_code)
    times.sort()
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    print(f"{len(times)} sequential GET /api/ask: p50 {statistics.median(times) * 1000:.0f} ms, "
          f"p90 {p90 * 1000:.0f} ms, mean {statistics.mean(times) * 1000:.0f} ms; "
          f"status codes {sorted(set(statuses))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
