"""The page in headless Chromium (Playwright, /usr/bin/chromium) against real app.py servers.

Screenshots go to artifacts/ (git-ignored): web_answer.png, web_followup.png, web_source.png,
web_not_found.png, web_embed.png, web_inert.png, web_empty_*.png, web_chitchat_*.png,
web_other_language_*.png, web_sources_after_*.png and web_followup_highlight_after_*.png
(1400 and 360 px wide).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from conftest import REQUIRE_ALL
from webserver import ROOT, app_server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]
WAIT = 60_000
QUESTION = "When did Dongguan apply to become a national innovative city?"
UNANSWERABLE = "Who won the 1998 football World Cup?"
EVIL_ARTICLE = """Xanadu council opens <b>library</b> <script>window.__xss_title=1</script>
2021-05-04 10:00

The Xanadu city council opened a new public library on Monday, after two years of building work.

The mayor said the library cost 12 million yuan. <script>window.__xss_script=1</script> <img src=x onerror="window.__xss_img=1"> Visitors can borrow up to ten books for free.

Local schools will bring pupils to the library every week. <iframe src="javascript:window.__xss_frame=1"></iframe>
"""
MARKERS = "() => [window.__xss_title, window.__xss_script, window.__xss_img, window.__xss_frame]"

if not CHROMIUM.exists():  # pragma: no cover - CI installs Debian's chromium
    if REQUIRE_ALL:
        raise RuntimeError("QA_REQUIRE_ALL=1 but /usr/bin/chromium is missing: "
                           "apt-get install chromium chromium-driver")
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A fresh page, 1400 px wide unless parametrized (indirect) with another width."""
    context = browser.new_context(viewport={"width": getattr(request, "param", 1400),
                                            "height": 1600})
    pg = context.new_page()
    pg.set_default_timeout(WAIT)
    yield pg
    context.close()


@pytest.fixture(scope="module")
def server(seeds_index):
    with app_server(seeds_index) as url:
        yield url


@pytest.fixture(scope="module")
def evil_server(tmp_path_factory, encoder):
    from qa.settings import Settings
    from qa.build import build

    corpus = tmp_path_factory.mktemp("evil-corpus")
    (corpus / "xanadu.txt").write_text(EVIL_ARTICLE)
    (corpus / "other.txt").write_text((ROOT / "seeds" / "003_fa579be8430ff762.txt").read_text())
    index = tmp_path_factory.mktemp("evil-index")
    build([corpus], Settings(index_dir=index), encoder=encoder, progress=False)
    with app_server(index) as url:
        yield url


def ask(page, question: str, scope=None) -> None:
    """Type a question in the page (or in `scope`, a frame or element) and wait for the reply."""
    scope = scope or page
    before = scope.locator("#chat .qa-msg").count()
    scope.locator("#question textarea").fill(question)
    scope.locator("#ask").click()
    scope.locator("#chat .qa-msg").nth(before).wait_for()


def test_ask_shows_answer_citation_and_sources(page, server, artifacts):
    page.goto(server + "/")
    ask(page, QUESTION)
    reply = page.locator("#chat .qa-msg").last
    assert "qa-answer" in reply.get_attribute("class")
    text = reply.inner_text()
    assert "ANSWER" in text.upper() and "[1]" in text
    assert "Dongguan accredited national innovative city" in text  # the citation line
    assert "Answered from the articles" in page.locator("#status").inner_text()
    sources = page.locator("#sources").inner_text()
    assert "Dongguan accredited national innovative city" in sources and "Dongguan Today" in sources
    assert "cited" in sources
    passages = page.locator("#passages")
    assert passages.locator(".token.highlighted").count() > 0
    # No per-question score that reads 1.000 on every passage (see README, "Sources").
    assert "[1]" in passages.inner_text() and "score" not in passages.inner_text()
    page.screenshot(path=str(artifacts / "web_answer.png"), full_page=True)

    ask(page, "And when was it approved?")
    follow = page.locator("#chat .qa-msg").last.inner_text()
    assert "Read as:" in follow and "Dongguan" in follow
    page.screenshot(path=str(artifacts / "web_followup.png"), full_page=True)


def test_opening_a_source_shows_the_article_with_the_span_highlighted(page, server, artifacts):
    expected = httpx.get(f"{server}/api/ask", params={"question": QUESTION}, timeout=60).json()
    second = expected["passages"][1]
    page.goto(server + "/")
    ask(page, QUESTION)
    page.locator("#sources [role=gridcell]").filter(has_text=second["title"]).nth(1).click()
    article = page.locator("#article")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#article .token.highlighted')]"
        ".some(e => e.innerText.includes(t))", arg=second["text"][:60])
    highlighted = " ".join(article.locator(".token.highlighted").all_inner_texts())
    assert second["text"][:60] in highlighted
    whole = article.inner_text()
    lines = [ln.strip() for ln in (ROOT / "seeds" / f"{second['doc_id']}.txt").read_text().splitlines()
             if ln.strip()]
    assert lines[-1] in whole and lines[2][:60] in whole  # the whole article, not the passage
    page.screenshot(path=str(artifacts / "web_source.png"), full_page=True)


def test_unanswerable_question_shows_the_not_found_state(page, server, artifacts):
    page.goto(server + "/")
    ask(page, UNANSWERABLE)
    reply = page.locator("#chat .qa-msg").last
    assert "qa-notfound" in reply.get_attribute("class")
    assert "NOT IN THE ARTICLES" in reply.inner_text().upper()
    assert "low relevance" in reply.inner_text()
    assert page.locator("#status .qa-status-notfound").count() == 1
    relevance = page.locator("#sources [role=gridcell][data-col='4']").all_inner_texts()
    assert relevance and {r.strip() for r in relevance} == {"low"}  # under the "relevance" header
    # It looks different from an answer: the reply's border is not the answer's.
    styles = reply.evaluate("e => getComputedStyle(e).borderLeftStyle")
    assert styles == "dashed"
    page.screenshot(path=str(artifacts / "web_not_found.png"), full_page=True)


def test_an_answer_about_another_year_is_not_shown_and_the_page_says_why(page, server, artifacts):
    page.goto(server + "/")
    ask(page, "How many high-tech enterprises did Foshan have in 2018?")
    reply = page.locator("#chat .qa-msg").last
    assert "qa-notfound" in reply.get_attribute("class")
    note = reply.locator(".qa-notice").inner_text()
    assert "asks about 2018" in note and "2020" in note
    banner = page.locator("#status .qa-status-notfound").inner_text()
    assert "asks about 2018" in banner, banner
    page.screenshot(path=str(artifacts / "web_year_ruled_out.png"), full_page=True)


@pytest.fixture(scope="module")
def embed_site(server, tmp_path_factory):
    """examples/embed.html pointed at the test server, served from another origin (port)."""
    site = tmp_path_factory.mktemp("embed-site")
    # The page as shipped: the app's address comes from ?app= (it is not on port 7860).
    shutil.copy(ROOT / "examples" / "embed.html", site / "embed.html")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/embed.html?app={server}"
    httpd.shutdown()
    httpd.server_close()


def test_embed_page_loads_the_app_both_ways_and_answers(page, embed_site, server, artifacts):
    outside = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(embed_site)
    # 1. The iframe.
    frame = page.frame_locator("#qa-iframe")
    ask(page, QUESTION, scope=frame)
    assert "[1]" in frame.locator("#chat .qa-msg").last.inner_text()
    # 2. The <gradio-app> web component, rendered inside this page.
    component = page.locator("#qa-component gradio-app")
    ask(page, UNANSWERABLE, scope=component)
    assert "NOT IN THE ARTICLES" in component.locator("#chat .qa-msg").last.inner_text().upper()
    page.screenshot(path=str(artifacts / "web_embed.png"), full_page=True)
    assert outside == []  # no CDN: everything came from the app and the host page


def test_script_tags_in_an_article_stay_inert(page, evil_server, artifacts):
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: d.dismiss())
    page.goto(evil_server + "/")
    ask(page, "How much did the Xanadu library cost?")
    page.locator("#sources [role=gridcell]").filter(has_text="Xanadu").first.click()
    page.wait_for_function("() => document.querySelector('#article').innerText.includes('Xanadu')")
    page.wait_for_timeout(1000)
    assert page.evaluate(MARKERS) == [None, None, None, None]
    for where in ("#passages", "#article"):
        shown = page.locator(where).inner_text()
        assert "<script>window.__xss_script=1</script>" in shown
        assert '<img src=x onerror="window.__xss_img=1">' in shown
    assert "<b>library</b>" in page.locator("#sources").inner_text()
    # Nothing the article contains became an element or fetched anything.
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], iframe').length") == 0
    assert page.evaluate("() => [...document.scripts].some(s => s.text.trim().startsWith('window.__xss'))") is False
    assert "What does the article “Xanadu council opens <b>library</b>" in page.inner_text("body")  # example
    assert not [u for u in requests if u.rstrip("/").endswith("/x")]
    page.screenshot(path=str(artifacts / "web_inert.png"), full_page=True)
    # The question box is literal too.
    ask(page, '<img src=x onerror="window.__xss_img=1"> library cost?')
    assert '<img src=x onerror="window.__xss_img=1">' in page.locator("#chat").inner_text()
    assert page.evaluate(MARKERS) == [None, None, None, None]


@pytest.mark.parametrize("page", [1400, 360], indirect=True)
def test_empty_question_chitchat_and_other_languages_get_a_reply_not_a_quote(page, server, artifacts):
    width = page.viewport_size["width"]
    page.goto(server + "/")
    ask(page, QUESTION)
    # Ask with an empty box: a hint by the box; the conversation stays; no error badge.
    page.locator("#question textarea").fill("   ")
    page.locator("#ask").click()
    page.locator("#status .qa-hint").wait_for()
    assert "Type a question first" in page.locator("#status").inner_text()
    assert page.locator("#chat .qa-msg").count() == 1
    assert page.get_by_text("Error", exact=True).count() == 0
    page.screenshot(path=str(artifacts / f"web_empty_{width}.png"), full_page=True)

    ask(page, "hi")
    reply = page.locator("#chat .qa-msg").last
    assert "qa-reply-msg" in reply.get_attribute("class")
    assert "I answer questions from the 5 news articles" in reply.inner_text()
    assert "ANSWER" not in reply.inner_text().upper().split("I ANSWER")[0]

    ask(page, "佛山有多少家高新技术企业？")
    reply = page.locator("#chat .qa-msg").last
    assert "English articles and questions only" in reply.inner_text()
    assert "Read as" not in reply.inner_text()  # not taken for a follow-up of the question
    assert page.locator("#chat .qa-msg").count() == 3
    page.screenshot(path=str(artifacts / f"web_chitchat_{width}.png"), full_page=True)

    ask(page, "¿Cuántas empresas de alta tecnología tiene Foshan?")  # Latin script, Spanish
    reply = page.locator("#chat .qa-msg").last
    assert "English articles and questions only" in reply.inner_text()
    assert "Read as" not in reply.inner_text() and reply.locator("mark").count() == 0
    page.screenshot(path=str(artifacts / f"web_other_language_{width}.png"), full_page=True)


# Words drawn on more than one line: each run of letters and digits between spaces and hyphens
# (a line may end after a hyphen: "high-/tech" is fine, "sour/ce" is not).
BROKEN_WORDS = """sel => {
  const broken = [];
  for (const root of document.querySelectorAll(sel)) {
    const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walk.nextNode(); node; node = walk.nextNode()) {
      for (const m of node.data.matchAll(/[^\\s\\-\\u2010-\\u2014\\/]+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].filter(r => r.width > 0)
                                                          .map(r => Math.round(r.top)));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
  }
  return broken;
}"""
FONT_OF = "sel => getComputedStyle(document.querySelector(sel)).fontFamily"
# Without "in 2020": after that question the retrained reader quotes the wrong sentence for
# "And Dongguan?" (a reading miss; the closing note of #12 says so).
FOSHAN_COUNT = "How many high-tech enterprises did Foshan have?"


@pytest.mark.parametrize("page", [1400, 360], indirect=True)
def test_sources_table_reads_at_a_glance_and_the_count_is_highlighted(page, server, artifacts):
    width = page.viewport_size["width"]
    page.goto(server + "/")
    ask(page, FOSHAN_COUNT)
    reply = page.locator("#chat .qa-msg").last
    # The highlight is the count of high-tech enterprises, not the SMEs' 1,323 before it.
    assert reply.locator("mark").inner_text() == "2,931"
    sources = page.locator("#sources")
    headers = [h.strip() for h in sources.locator("[role=columnheader]").all_inner_texts()]
    assert headers == ["#", "title", "source", "date", "relevance"]
    # The zone's article states no source: its cell says so, in grey, rather than stay blank.
    rows = sources.locator("[role=row]").filter(has_text="Foshan Hi-tech Zone")
    missing = rows.first.locator("[role=gridcell]").nth(2)
    assert missing.inner_text().strip() == "unknown"
    assert missing.evaluate("e => getComputedStyle(e).fontStyle") == "italic"
    # The cited row is marked: it says so, and it is drawn in green.
    cited = sources.locator("[role=gridcell]").filter(has_text="cited").first
    assert cited.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(220, 252, 231)"
    # One proportional font: the table's cells, the headings and the buttons share the body's.
    body = page.evaluate(FONT_OF, ".gradio-container")
    assert "mono" not in body.lower()
    for sel in ("#sources [role=gridcell]", "#sources [role=columnheader]", "h2", "#ask",
                "#chat .qa-msg"):
        assert page.evaluate(FONT_OF, sel) == body, sel
    # A date sits on one line.
    date = sources.locator("[role=gridcell]").filter(has_text="2021-05-18").first
    assert date.evaluate("e => e.querySelector('span').getClientRects().length") == 1
    assert page.evaluate(BROKEN_WORDS, "#sources [role=columnheader], #sources [role=gridcell], "
                                       "#chat, #status, label, button, h2, #passages") == []
    page.screenshot(path=str(artifacts / f"web_sources_after_{width}.png"), full_page=True)

    ask(page, "And Dongguan?")
    reply = page.locator("#chat .qa-msg").last
    assert "Read as: How many high-tech enterprises did Dongguan have?" in reply.inner_text()
    assert reply.locator("mark").inner_text() == "7,387"
    assert page.evaluate(BROKEN_WORDS, "#sources [role=gridcell], #chat") == []
    page.screenshot(path=str(artifacts / f"web_followup_highlight_after_{width}.png"),
                    full_page=True)
