"""Load and soak measurement of the HTTP API: many clients asking /api/ask, latency and memory.

Stage: report (reliability). `python -m qa.soak` starts the web app (`python -m qa.web`) on 127.0.0.1 with an
index (built from the packaged seeds into a temporary folder unless --index is given), drives `/api/ask` with
--clients concurrent clients for --questions questions, and prints, every --every questions, the
server's resident memory (RSS, the app process and its children) and the latency so far. It ends
with the verdict the reliability report uses: memory after all questions within 10% of memory
after the first 1,000 (exit 0), else exit 1. `tests/test_load.py` uses `drive()` for its bounded
load test.

    python -m qa.soak                          # 10,000 questions, 16 clients (about 6 min on 2 cores)
    python -m qa.soak --questions 2000 --every 500 --url http://127.0.0.1:7860 --pid 1234
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .evaluation.metrics import percentile
from .settings import QUESTIONS, RETRIEVERS, SEEDS, UserError

ANSWER_KEYS = {"question", "passages", "answer", "abstained", "confidence"}


@dataclass
class LoadResult:
    """What a load run saw: every latency, status counts and the errors (first few kept)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds (0 when none)."""
        return percentile(self.latencies, q)

    def summary(self) -> dict:
        n = len(self.latencies)
        return {"questions": n, "errors": self.error_count, "statuses": dict(self.statuses),
                "seconds": round(self.seconds, 1),
                "per_second": round(n / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(self.percentile(50) * 1000, 1),
                "p95_ms": round(self.percentile(95) * 1000, 1),
                "p99_ms": round(self.percentile(99) * 1000, 1),
                "max_ms": round(max(self.latencies, default=0) * 1000, 1),
                "stopped_early": self.stopped_early}


def load_questions(path: Path = QUESTIONS) -> list[str]:
    """The question texts of a question file (default: the packaged seeds' questions).

    Raises:
        UserError: a missing or malformed file.
    """
    from .evaluation.data import load_questions as read

    return [q.question for q in read(path)]


def requests_for(questions: list[str], n: int, seed: int = 0) -> list[dict]:
    """n request parameter sets: the questions in turn, with k, retriever and a follow-up mixed in."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        params = {"question": questions[i % len(questions)], "k": rng.randint(1, 10),
                  "retriever": RETRIEVERS[i % len(RETRIEVERS)]}
        if i % 7 == 3:
            params["history"] = [questions[(i - 1) % len(questions)]]
            params["question"] = "And in 2018?"
        out.append(params)
    return out


def check_answer(params: dict, status: int, body: bytes) -> str | None:
    """None when the response is a well-formed answer to params, else what is wrong."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    try:
        out = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if not ANSWER_KEYS <= set(out):
        return f"missing {ANSWER_KEYS - set(out)}"
    if out["question"] != " ".join(params["question"].split()):
        return f"answered {out['question']!r} for {params['question']!r}"
    if len(out["passages"]) > params.get("k", 5) or out["abstained"] != (out["answer"] is None):
        return f"inconsistent answer: {len(out['passages'])} passages for k={params.get('k')}"
    return None


def drive(url: str, requests: list[dict], *, clients: int = 16, auth: tuple[str, str] | None = None,
          timeout: float = 60.0, deadline: float | None = None, post_every: int = 2,
          on_progress: Callable[[int, LoadResult], None] | None = None,
          progress_every: int = 1000) -> LoadResult:
    """Send the requests to url + /api/ask from `clients` threads, each with its own connection.

    Bounded: stops at the end of the list, or when `deadline` (seconds from now) has passed.

    Args:
        url: the server, e.g. http://127.0.0.1:7860.
        requests: query parameter sets; every post_every-th is sent as a POST JSON body.
        clients: concurrent clients.
        auth: HTTP Basic credentials, when the server has a login.
        timeout: per-request timeout in seconds.
        deadline: stop sending after this many seconds.
        on_progress: called with (questions done, result so far) every progress_every questions.

    Returns:
        A LoadResult; every non-200 or malformed answer counts as an error.
    """
    import httpx

    result, lock = LoadResult(), threading.Lock()
    cursor = iter(enumerate(requests))
    started = time.perf_counter()
    stop_at = started + deadline if deadline else None

    def worker() -> None:
        with httpx.Client(base_url=url, auth=auth, timeout=timeout) as client:
            while True:
                with lock:
                    if stop_at and time.perf_counter() > stop_at:
                        result.stopped_early = True
                        return
                    try:
                        i, params = next(cursor)
                    except StopIteration:
                        return
                t0 = time.perf_counter()
                try:
                    if post_every and i % post_every == 1:
                        r = client.post("/api/ask", json=params)
                    else:
                        r = client.get("/api/ask", params=params)
                    status, body = r.status_code, r.content
                except httpx.HTTPError as e:
                    status, body = 0, f"{type(e).__name__}: {e}".encode()
                elapsed = time.perf_counter() - t0
                problem = check_answer(params, status, body)
                with lock:
                    result.latencies.append(elapsed)
                    result.statuses[status] += 1
                    if problem:
                        result.error_count += 1
                        if len(result.errors) < 20:
                            result.errors.append(problem)
                    done = len(result.latencies)
                    if on_progress and done % progress_every == 0:
                        result.seconds = time.perf_counter() - started
                        on_progress(done, result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - started
    return result


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(index: Path | None, *args: str, log: Path | None = None, env: dict | None = None,
          auth: tuple[str, str] | None = None,
          startup_seconds: float = 240) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `python -m qa.web --index INDEX ARGS` (what app.py runs) on a free 127.0.0.1 port;
    yield (url, process).

    Args:
        index: the index folder; None for none (with --ray ADDRESS in args).
        env: extra environment variables (e.g. QA_AUTH).
        auth: credentials for the readiness probe, when the server has a login.
    """
    import httpx

    port = free_port()
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                        "PYTHONUNBUFFERED": "1"} | (env or {})
    out = open(log or os.devnull, "w")
    where = ["--index", str(index)] if index is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "qa.web", *where,
                             "--port", str(port), "--quiet", *args],
                            env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if auth is None and "--auth" in args:
        user, _, password = args[args.index("--auth") + 1].split(",")[0].partition(":")
        auth = (user, password)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the web app exited with {proc.returncode}"
                                   + (f":\n{log.read_text()[-3000:]}" if log else ""))
            try:
                if httpx.get(f"{url}/api/health", auth=auth, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web app did not answer within {startup_seconds} s")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def soak(url: str, pid: int, questions: int, clients: int, every: int,
         auth: tuple[str, str] | None = None, out=sys.stdout,
         asked: list[str] | None = None) -> dict:
    """Drive `questions` questions (taken in turn from `asked`, default the packaged seeds'
    questions) and sample the server's RSS every `every` questions.

    Returns:
        {"load": LoadResult.summary(), "rss_mb": {questions done: MB}, "growth": fraction
        from the first sample at or after 1,000 questions to the last}.
    """
    samples: dict[int, float] = {0: rss_bytes(pid) / 2**20}
    print(f"{'questions':>10} {'RSS MB':>8} {'p50 ms':>8} {'p95 ms':>8} {'q/s':>6} {'errors':>6}",
          file=out, flush=True)
    print(f"{0:>10} {samples[0]:>8.1f}", file=out, flush=True)

    def progress(done: int, result: LoadResult) -> None:
        samples[done] = rss_bytes(pid) / 2**20
        s = result.summary()
        print(f"{done:>10} {samples[done]:>8.1f} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} "
              f"{s['per_second']:>6.1f} {s['errors']:>6}", file=out, flush=True)

    result = drive(url, requests_for(asked or load_questions(), questions), clients=clients, auth=auth,
                   on_progress=progress, progress_every=every)
    samples[len(result.latencies)] = rss_bytes(pid) / 2**20
    base_at = min((n for n in samples if n >= 1000), default=max(samples))
    last = max(samples)
    growth = samples[last] / samples[base_at] - 1 if samples[base_at] else 0.0
    return {"load": result.summary(), "errors": result.errors[:5],
            "rss_mb": {n: round(mb, 1) for n, mb in sorted(samples.items())},
            "baseline_at": base_at, "growth": round(growth, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qa.soak", description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=10_000, help="questions to ask (default 10000)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--every", type=int, default=1000, help="sample memory every N questions")
    p.add_argument("--index", type=Path, help="index to serve (default: seeds/ built into a tmp dir)")
    p.add_argument("--url", help="drive a server that is already running (needs --pid)")
    p.add_argument("--pid", type=int, help="process id of the server given by --url")
    p.add_argument("--auth", help="user:password of the server given by --url, when it has a login")
    p.add_argument("--max-growth", type=float, default=0.10,
                   help="allowed memory growth after 1,000 questions (default 0.10)")
    p.add_argument("--question-file", type=Path, default=QUESTIONS, metavar="FILE",
                   help="questions to ask in turn, one JSON object a line as for `qa eval` "
                        "(default: the packaged seeds' questions)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.url and not args.pid:
        p.error("--url needs --pid, the server's process id, to read its memory")
    if args.questions < 1 or args.clients < 1 or args.every < 1:
        p.error("--questions, --clients and --every must be at least 1")
    try:
        asked = load_questions(args.question_file)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    with tempfile.TemporaryDirectory(prefix="qa-soak-") as tmp:
        if args.url:
            auth = tuple(args.auth.split(":", 1)) if args.auth else None
            report = soak(args.url, args.pid, args.questions, args.clients, args.every, auth,
                          asked=asked)
        else:
            index = args.index
            if index is None:
                index = Path(tmp) / "index"
                print(f"building seeds/ into {index} ...", flush=True)
                subprocess.run([sys.executable, "-m", "qa.cli", "build", str(SEEDS),
                                "--index", str(index), "--quiet"], check=True)
            with serve(index, log=Path(tmp) / "server.log") as (url, proc):
                print(f"server {url} (pid {proc.pid}); {args.questions} questions, "
                      f"{args.clients} clients", flush=True)
                report = soak(url, proc.pid, args.questions, args.clients, args.every, asked=asked)
    load = report["load"]
    ok = load["errors"] == 0 and report["growth"] <= args.max_growth
    print(f"\n{load['questions']} questions in {load['seconds']} s ({load['per_second']}/s), "
          f"{load['errors']} errors, p50 {load['p50_ms']} ms, p95 {load['p95_ms']} ms, "
          f"p99 {load['p99_ms']} ms")
    print(f"RSS after {report['baseline_at']:,} questions {report['rss_mb'][report['baseline_at']]} MB, "
          f"after {max(report['rss_mb']):,} {report['rss_mb'][max(report['rss_mb'])]} MB: "
          f"{report['growth']:+.1%} (limit +{args.max_growth:.0%}) -> {'PASS' if ok else 'FAIL'}")
    for e in report["errors"]:
        print(f"error: {e}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
