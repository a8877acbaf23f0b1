"""The JSON API, the Gradio API and the embedding routes, against a real app.py server on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import pytest

from webserver import ROOT, app_server

from qa.types import Article

pytestmark = pytest.mark.slow

QUESTION = "When did Dongguan apply to become a national innovative city?"
USER = ("alice", "s3cret")
OTHER_SITE = "https://news.example.com"


@pytest.fixture(scope="module")
def server(seeds_index):
    with app_server(seeds_index) as url:
        yield url


@pytest.fixture(scope="module")
def auth_server(seeds_index):
    # Login and embedding origins from the environment, as a deployment would set them.
    env = {"QA_AUTH": f"{USER[0]}:{USER[1]}", "QA_ALLOWED_ORIGINS": OTHER_SITE}
    with app_server(seeds_index, env=env, auth=USER) as url:
        yield url


@pytest.fixture(scope="module")
def cli_json(seeds_index) -> dict:
    out = subprocess.run([sys.executable, "-m", "qa.cli", "ask", QUESTION, "--json", "--k", "3",
                          "--index", str(seeds_index)], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return json.loads(out.stdout)


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (httpx would normalise ../ away)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- answers

def test_get_returns_exactly_what_qa_ask_json_prints(server, cli_json):
    r = httpx.get(f"{server}/api/ask", params={"question": QUESTION, "k": 3}, timeout=60)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body.keys() == cli_json.keys()
    assert [p.keys() for p in body["passages"]] == [p.keys() for p in cli_json["passages"]]
    assert body["answer"].keys() == cli_json["answer"].keys()
    assert body == cli_json  # same index, same model: the very same object
    assert any("June 2017" in p["text"] for p in body["passages"])


def test_post_gives_the_same_object_as_get(server):
    got = httpx.get(f"{server}/api/ask", params={"question": QUESTION, "k": 4,
                                                  "retriever": "bm25"}, timeout=60).json()
    posted = httpx.post(f"{server}/api/ask", json={"question": QUESTION, "k": 4,
                                                    "retriever": "bm25"}, timeout=60)
    assert posted.status_code == 200
    assert posted.json() == got
    assert len(got["passages"]) == 4


def test_history_resolves_a_follow_up(server):
    r = httpx.post(f"{server}/api/ask", json={"question": "And when was it approved?",
                                               "history": [QUESTION]}, timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert "Dongguan" in body["resolved_question"]
    assert any("April 2018" in p["text"] for p in body["passages"][:3])


def test_filters_restrict_the_passages(server):
    r = httpx.post(f"{server}/api/ask", json={"question": QUESTION, "source": "Dongguan Today",
                                               "since": "2022-01-01", "until": "2022-12-31"},
                   timeout=60)
    assert r.status_code == 200
    assert {p["source"] for p in r.json()["passages"]} == {"Dongguan Today"}
    r = httpx.post(f"{server}/api/ask", json={"question": QUESTION, "until": "2000-01-01"},
                   timeout=60)
    assert r.status_code == 200
    assert r.json()["passages"] == [] and r.json()["abstained"] is True
    assert "no article matches the filters" in r.json()["notices"][-1]
    assert "dated 2018" in r.json()["notices"][-1]


def test_unanswerable_question_abstains_with_low_relevance_passages(server):
    r = httpx.get(f"{server}/api/ask", params={"question": "Who won the 1998 football World Cup?"},
                  timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert body["answer"] is None and body["abstained"] is True
    assert body["passages"] and all(p["low_relevance"] for p in body["passages"])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("params", [
    {"question": ""},
    {"question": "   "},
    {"question": "\x00\x01"},
    {},
    {"question": "x", "k": "0"},
    {"question": "x", "k": "-1"},
    {"question": "x", "k": str(10**9)},
    {"question": "x", "k": "abc"},
    {"question": "x", "k": "2.5"},
    {"question": "x", "retriever": "magic"},
    {"question": "x", "since": "last week"},
    {"question": "x", "until": "2021-02-30"},
])
def test_bad_query_parameters_get_a_json_4xx(server, params):
    r = httpx.get(f"{server}/api/ask", params=params, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json()["error"], str) and r.json()["error"]


@pytest.mark.parametrize("body,status", [
    ('{"question": ', 400),
    ("not json at all", 400),
    ("", 422),
    ("[]", 422),
    ('"When?"', 422),
    ('{"question": ""}', 422),
    ('{"question": "  \\n "}', 422),
    ('{"question": 5}', 422),
    ('{"question": null}', 422),
    ('{"question": ["a"]}', 422),
    ('{"question": "x", "k": "5"}', 422),
    ('{"question": "x", "k": 2.5}', 422),
    ('{"question": "x", "k": true}', 422),
    ('{"question": "x", "k": 0}', 422),
    ('{"question": "x", "k": -1}', 422),
    ('{"question": "x", "k": 1000000000}', 422),
    ('{"question": "x", "retriever": "magic"}', 422),
    ('{"question": "x", "retriever": 3}', 422),
    ('{"question": "x", "history": "not a list"}', 422),
    ('{"question": "x", "history": [1, 2]}', 422),
    ('{"question": "x", "since": "2021-13-01"}', 422),
    ('{"question": "x", "top_k": 3}', 422),
])
def test_bad_bodies_get_a_json_4xx(server, body, status):
    r = httpx.post(f"{server}/api/ask", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_error_messages_say_what_to_fix(server):
    r = httpx.post(f"{server}/api/ask", json={"question": "x", "k": 0}, timeout=60)
    assert "k" in r.json()["error"] and "greater than or equal to 1" in r.json()["error"]
    r = httpx.post(f"{server}/api/ask", json={"question": " "}, timeout=60)
    assert "empty" in r.json()["error"]


@pytest.mark.parametrize("method,send,unknown", [
    ("GET", {"params": {"question": "hi", "foo": "1"}}, "'foo'"),
    ("GET", {"params": {"question": QUESTION, "top_k": "3"}}, "'top_k'"),
    ("GET", {"params": {"foo": "1"}}, "'foo'"),  # named even when the question is missing
    ("POST", {"json": {"question": "hi", "foo": 1}}, "'foo'"),
    ("POST", {"json": {"question": QUESTION, "top_k": 3, "filter": "x"}}, "'filter', 'top_k'"),
])
def test_unknown_parameters_are_refused_by_name(server, method, send, unknown):
    r = httpx.request(method, f"{server}/api/ask", timeout=60, **send)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error.startswith("unknown parameter") and unknown in error, error
    assert "accepts question, k, retriever, history, source, since, until, doc" in error
    assert "Traceback" not in r.text


def test_known_parameters_are_still_answered(server):
    r = httpx.get(f"{server}/api/ask", params={"question": QUESTION, "k": 2, "retriever": "dense",
                                                "history": "x", "source": "Dongguan Today",
                                                "since": "2018-01-01", "until": "2023-01-01",
                                                "doc": "003_fa579be8430ff762"}, timeout=60)
    assert r.status_code == 200, r.text
    assert {p["doc_id"] for p in r.json()["passages"]} == {"003_fa579be8430ff762"}


def test_wrong_method_and_huge_body(server):
    r = httpx.put(f"{server}/api/ask", json={"question": "x"}, timeout=30)
    assert r.status_code == 405 and r.json()["error"]
    r = httpx.post(f"{server}/api/ask", json={"question": "x" * 2_000_000}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]


def test_a_long_question_is_cut_with_a_notice(server):
    r = httpx.post(f"{server}/api/ask", json={"question": "innovation " * 2000}, timeout=120)
    assert r.status_code == 200
    assert any("first 10,000" in n for n in r.json()["notices"])


# ---------------------------------------------------------------- schema and Gradio API

def test_openapi_schema_lists_the_api(server):
    r = httpx.get(f"{server}/openapi.json", timeout=30)
    assert r.status_code == 200
    schema = r.json()
    assert set(schema["paths"]["/api/ask"]) == {"get", "post"}
    assert "/gradio.js" not in schema["paths"]
    body = schema["components"]["schemas"]["AskBody"]
    assert body["required"] == ["question"]
    assert set(body["properties"]) == {"question", "k", "retriever", "history", "source", "since",
                                       "until", "doc"}


def test_no_swagger_page_that_would_need_a_cdn(server):
    """FastAPI's /docs and /redoc load their scripts from a CDN; offline they were blank pages."""
    for path in ("/docs", "/redoc"):
        r = httpx.get(f"{server}{path}", timeout=30)
        assert r.status_code == 404, path
        assert "cdn.jsdelivr.net" not in r.text


def test_gradio_client_ask_endpoint(server):
    from gradio_client import Client

    client = Client(server + "/", verbose=False)
    out = client.predict(QUESTION, 3, "hybrid", api_name="/ask")
    direct = httpx.get(f"{server}/api/ask", params={"question": QUESTION, "k": 3}, timeout=60)
    assert out == direct.json()
    follow = client.predict("And when was it approved?", 3, "hybrid", [QUESTION], api_name="/ask")
    assert "Dongguan" in follow["resolved_question"]
    with pytest.raises(Exception, match="empty"):
        client.predict("   ", api_name="/ask")


# ---------------------------------------------------------------- embedding

def test_embed_page_and_web_component_loader_are_served(server):
    page = httpx.get(f"{server}/embed.html", timeout=30)
    assert page.status_code == 200
    assert f'<iframe id="qa-iframe" src="{server}/"' in page.text
    assert f'<gradio-app src="{server}/"' in page.text
    assert f'"{server}").replace' in page.text and 'import(base + "/gradio.js")' in page.text
    loader = httpx.get(f"{server}/gradio.js", timeout=30)
    assert loader.status_code == 200 and "javascript" in loader.headers["content-type"]
    asset = re.search(r'import\("\./(assets/index-[\w-]+\.js)"\)', loader.text).group(1)
    local = httpx.get(f"{server}/{asset}", headers={"Origin": "http://127.0.0.1:8000"}, timeout=30)
    assert local.status_code == 200
    assert local.headers.get("access-control-allow-origin") == "http://127.0.0.1:8000"
    foreign = httpx.get(f"{server}/{asset}", headers={"Origin": OTHER_SITE}, timeout=30)
    assert "access-control-allow-origin" not in foreign.headers


def test_framing_is_limited_to_allowed_origins(server, auth_server):
    csp = httpx.get(server + "/", timeout=30).headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "http://127.0.0.1:*" in csp
    assert OTHER_SITE not in csp
    csp = httpx.get(auth_server + "/", timeout=30).headers["content-security-policy"]
    assert csp == f"frame-ancestors 'self' {OTHER_SITE}"
    r = httpx.get(f"{auth_server}/gradio.js", headers={"Origin": OTHER_SITE}, timeout=30)
    assert r.headers.get("access-control-allow-origin") == OTHER_SITE
    r = httpx.get(f"{auth_server}/gradio.js", headers={"Origin": "http://127.0.0.1:8000"}, timeout=30)
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("path", [
    "/gradio.js/../../../../etc/passwd",
    "/embed.html/../../../etc/passwd",
    "/assets/../../../../../../etc/passwd",
    "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/assets/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=../../../../../../etc/passwd",
    "/file=/etc/passwd",
    "/gradio_api/file=%2fetc%2fpasswd",
    "/svelte/..%2f..%2f..%2f..%2fetc%2fpasswd",
])
def test_path_traversal_is_refused(server, path):
    status, body = _raw_get(server, path)
    assert 400 <= status < 500, (status, body[:200])
    assert b"root:" not in body


def test_index_files_are_not_served(server, seeds_index):
    current = seeds_index / "CURRENT"
    for path in (f"/gradio_api/file={current}", f"/file={current}", f"/gradio_api/file={ROOT / 'qa' / 'web' / 'api.py'}"):
        status, body = _raw_get(server, path)
        assert 400 <= status < 500, (path, status)


# ---------------------------------------------------------------- login

def test_login_protects_page_and_api(auth_server):
    assert httpx.get(f"{auth_server}/api/ask", params={"question": QUESTION}, timeout=30).status_code == 401
    r = httpx.post(f"{auth_server}/api/ask", json={"question": QUESTION}, timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic" and r.json()["error"]
    assert httpx.get(f"{auth_server}/api/ask", params={"question": QUESTION},
                     auth=("alice", "wrong"), timeout=30).status_code == 401
    # The page itself is Gradio's login form: its config and API refuse without a session.
    page = httpx.get(auth_server + "/", timeout=30)
    assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
    assert "June 2017" not in page.text and "Dongguan accredited" not in page.text
    assert httpx.get(f"{auth_server}/config", timeout=30).status_code == 401
    assert httpx.get(f"{auth_server}/gradio_api/info", timeout=30).status_code == 401
    assert httpx.get(f"{auth_server}/api/health", timeout=30).status_code == 401
    # HTTP Basic works for the JSON API.
    r = httpx.get(f"{auth_server}/api/ask", params={"question": QUESTION}, auth=USER, timeout=60)
    assert r.status_code == 200 and any("June 2017" in p["text"] for p in r.json()["passages"])
    # So does the session cookie of the page's login form, for the page and the JSON API.
    with httpx.Client(base_url=auth_server, timeout=60) as browser:
        assert browser.post("/login", data={"username": "alice", "password": "wrong"}).status_code >= 400
        assert browser.post("/login", data={"username": USER[0], "password": USER[1]}).status_code == 200
        assert browser.get("/config").status_code == 200
        assert browser.post("/api/ask", json={"question": QUESTION}).status_code == 200


def test_gradio_client_needs_the_login(auth_server):
    from gradio_client import Client

    with pytest.raises(Exception):
        Client(auth_server + "/", verbose=False)
    client = Client(auth_server + "/", auth=USER, verbose=False)
    assert client.predict(QUESTION, 2, "dense", api_name="/ask")["answer"] is not None


def test_without_login_the_api_is_open(server):
    assert httpx.get(f"{server}/api/health", timeout=30).json()["status"] == "ok"


# ---------------------------------------------------------------- app.py

def test_app_py_rejects_bad_flags_without_a_traceback(tmp_path):
    for args in (["--auth", "nopassword"], ["--port", "0"], ["--allow-origin", "example.com/path"]):
        r = subprocess.run([sys.executable, str(ROOT / "app.py"), "--index", str(tmp_path / "i"),
                            *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        assert not (tmp_path / "i").exists()  # refused before building anything


# ---------------------------------------------------------------- pure helpers (no server)

def test_gate_refuses_when_full():
    import threading

    from qa.web.api import Busy, Gate

    gate = Gate(running=1, waiting=0, timeout=0.1)
    with gate.enter():
        with pytest.raises(Busy):
            with gate.enter():
                pass
    gate = Gate(running=1, waiting=1, timeout=0.2)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with gate.enter():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    with pytest.raises(Busy):  # waited 0.2 s for the only slot
        with gate.enter():
            pass
    release.set()
    t.join()
    with gate.enter():  # free again
        pass


def test_answer_html_escapes_untrusted_text():
    from qa.web.render import answer_html

    evil = 'x <img src=x onerror="alert(1)"> <script>alert(2)</script> & **b**'
    out = {"question": evil, "resolved_question": evil, "confidence": 0.9, "abstained": False,
           "passages": [{"rank": 1, "doc_id": "d", "char_start": 0, "char_end": len(evil),
                         "title": evil, "source": evil, "date": "2020-01-01", "score": 0.5,
                         "text": evil, "low_relevance": False}],
           "answer": {"text": evil, "doc_id": "d", "title": evil, "source": evil, "date": "",
                      "char_start": 0, "char_end": len(evil), "passage_rank": 1,
                      "confidence": 0.9, "highlight": {"char_start": 2, "char_end": 6,
                                                       "text": "<img"}}}
    html = answer_html(out)
    assert "<img" not in html.replace("<mark><strong>&lt;img", "") and "<script" not in html
    assert "&lt;script&gt;" in html and "<mark><strong>&lt;img</strong></mark>" in html
    assert "[1]" in html and "qa-answer" in html
    out["answer"], out["abstained"] = None, True
    html = answer_html(out)
    assert "Not in the articles" in html and "qa-notfound" in html and "low relevance" in html
    assert "<script" not in html and "<img" not in html


def test_article_segments_cover_the_whole_text_and_mark_the_cited_span():
    from qa.web.render import article_segments

    text = "First sentence. The answer is 42. Last one."
    art = Article(doc_id="d", text=text, title="T", source="S", date="2020-01-01")
    out = {"passages": [{"rank": 1, "doc_id": "d", "char_start": 16, "char_end": 34}],
           "answer": {"doc_id": "d", "char_start": 16, "char_end": 33}}
    segs = article_segments(art, out, 1)
    assert segs[0][1] == "source"
    assert "".join(t for t, _ in segs[1:]) == text
    assert ("The answer is 42.", "answer") in segs
    assert (" ", "cited passage") in segs


@pytest.mark.parametrize("text,expected", [
    ("alice:s3cret", (("alice", "s3cret"),)),
    ("alice:s3:cret, bob:pw", (("alice", "s3:cret"), ("bob", "pw"))),
    ("", ()),
    (None, ()),
])
def test_parse_users(text, expected):
    from qa.web.config import parse_users

    assert parse_users(text) == expected


@pytest.mark.parametrize("text", ["alice", "alice:", ":pw"])
def test_parse_users_refuses_entries_without_a_password(text):
    from qa.settings import UserError
    from qa.web.config import parse_users

    with pytest.raises(UserError, match="user:password"):
        parse_users(text)


def test_parse_origins():
    from qa.settings import UserError
    from qa.web.config import parse_origins

    assert parse_origins(["https://a.example/", "http://b.example:8080,*"]) == (
        "https://a.example", "http://b.example:8080", "*")
    assert parse_origins(None) == ()
    with pytest.raises(UserError):
        parse_origins("a.example")

