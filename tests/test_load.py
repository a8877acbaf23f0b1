"""Load on a real `python app.py` server on 127.0.0.1: many clients, zero errors, bounded waits.

The load test is bounded in count and time and stops by itself:
QA_LOAD_QUESTIONS (default 2000) questions from 16 clients (QA_LOAD_CLIENTS), at most
QA_LOAD_SECONDS (default 240) seconds. Its figures go to artifacts/load.json and RELIABILITY.md.
The 10,000-question soak is a benchmark, not a test: `python -m qa.soak`.
"""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

from qa.soak import drive, load_questions, requests_for, rss_bytes, serve

pytestmark = pytest.mark.slow

N = int(os.environ.get("QA_LOAD_QUESTIONS", "2000"))
CLIENTS = int(os.environ.get("QA_LOAD_CLIENTS", "16"))
SECONDS = float(os.environ.get("QA_LOAD_SECONDS", "240"))
QUESTION = "When did Dongguan apply to become a national innovative city?"


@pytest.fixture(scope="module")
def server(seeds_index, tmp_path_factory):
    log = tmp_path_factory.mktemp("load") / "server.log"
    with serve(seeds_index, log=log) as (url, proc):
        yield url, proc


def test_16_clients_2000_questions_zero_errors(server, artifacts):
    url, proc = server
    rss = {}

    def sample(done, result):
        rss[done] = rss_bytes(proc.pid)

    requests = requests_for(load_questions(), N)
    result = drive(url, requests, clients=CLIENTS, deadline=SECONDS, on_progress=sample,
                   progress_every=max(1, min(1000, N // 2)))
    rss[len(result.latencies)] = rss_bytes(proc.pid)
    summary = result.summary() | {"clients": CLIENTS,
                                  "rss_mb": {n: round(b / 2**20, 1) for n, b in sorted(rss.items())}}
    (artifacts / "load.json").write_text(json.dumps(summary, indent=2))
    print(f"\nload: {json.dumps(summary)}")
    assert not result.stopped_early, f"only {len(result.latencies)} of {N} questions in {SECONDS} s"
    assert len(result.latencies) == N
    assert result.error_count == 0, result.errors[:5]
    assert set(result.statuses) == {200}
    # Scaled-down soak: server memory after all the questions within 10% of memory halfway.
    first, last = min(rss), max(rss)
    assert last > first and rss[last] <= 1.10 * rss[first], summary["rss_mb"]


@pytest.fixture(scope="module")
def small_server(seeds_index, tmp_path_factory):
    """One question at a time: 16 may wait for the JSON API, 64 in the page's queue."""
    log = tmp_path_factory.mktemp("overload") / "server.log"
    with serve(seeds_index, "--max-running", "1", log=log) as (url, proc):
        yield url


def burst(n: int, send) -> list[tuple[int, dict, dict, float]]:
    """n requests released at once (each on its own open connection): (status, json, headers, s)."""
    barrier, out, lock = threading.Barrier(n), [], threading.Lock()

    def one():
        with httpx.Client(timeout=120) as client:
            client.get(f"{send.url}/api/health")  # open the connection before the burst
            barrier.wait()
            t0 = time.perf_counter()
            r = send(client)
            took = time.perf_counter() - t0
            try:
                body = r.json()
            except ValueError:
                body = {"not json": r.text[:200]}
            with lock:
                out.append((r.status_code, body, dict(r.headers), took))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(out) == n, "some requests never returned"
    return out


def test_overload_gets_busy_json_not_an_unbounded_wait(small_server):
    """64 questions at once against 1 answering slot and 16 waiting places: the rest are told
    at once, in JSON, that the server is busy, and everyone has an answer within the wait bound."""

    def send(client):
        return client.post(f"{small_server}/api/ask", json={"question": QUESTION, "k": 100,
                                                            "retriever": "hybrid"})
    send.url = small_server
    results = burst(64, send)
    statuses = [s for s, *_ in results]
    assert set(statuses) <= {200, 503}, statuses
    busy = [(body, headers, took) for s, body, headers, took in results if s == 503]
    assert busy, "64 questions at once never filled 1 slot + 16 waiting places"
    assert statuses.count(200) >= 1
    for body, headers, took in busy:
        assert "busy" in body["error"] and headers["content-type"].startswith("application/json")
        assert int(headers["retry-after"]) > 0
    assert max(took for *_, took in results) < 45  # the wait for a slot is bounded (30 s)
    print(f"\noverload: {statuses.count(200)} answered, {len(busy)} busy (503), slowest "
          f"{max(t for *_, t in results):.1f} s, slowest busy reply {max(t for *_, t in busy):.2f} s")
    # Afterwards it answers normally.
    assert httpx.get(f"{small_server}/api/ask", params={"question": QUESTION}, timeout=60).status_code == 200


def test_page_queue_overload_is_refused_with_busy_json(small_server):
    """The page's Gradio queue is bounded too (64): a flood of events gets 503 "Queue is full"."""

    def send(client):
        return client.post(f"{small_server}/gradio_api/call/ask",
                           json={"data": [QUESTION, 100, "hybrid", [], "", "", ""]})
    send.url = small_server
    results = burst(120, send)
    statuses = [s for s, *_ in results]
    assert set(statuses) <= {200, 503}, statuses
    full = [body for s, body, *_ in results if s == 503]
    assert full and all("Queue is full" in json.dumps(b) for b in full), full[:3]
    print(f"\npage queue: {statuses.count(200)} queued, {len(full)} refused (503 queue full)")
