"""The page: Gradio Blocks with the chat, the sources and the article viewer, wired to the engine."""

from __future__ import annotations

import html

import gradio as gr

from ..retrieve import Filters
from ..settings import RETRIEVERS, UserError, check_k
from .config import ANY_SOURCE, API_MAX_K, MAX_HISTORY, UI_MAX_K, WebConfig
from .render import (COLORS, answer_html, article_segments, example_questions, hint_html,
                     SOURCE_HEADERS, passage_segments, source_rows, status_html)


def build_demo(engine, config: WebConfig | None = None):
    """The Gradio Blocks of the page, wired to a loaded engine (qa.engine.QA).

    Args:
        engine: the loaded QA.
        config: concurrency limits (the Gradio queue).

    Returns:
        gr.Blocks with a queue; its API has one public endpoint, "/ask".
    """
    config = config or WebConfig()
    index = engine.index
    # Under --ray the articles are a qa.serve.RemoteArticles, which knows its sources without
    # holding every article.
    sources = getattr(index.articles, "sources", None) or sorted(
        {a.source for a in index.articles.values() if a.source})
    settings = engine.settings

    def run(question, k, retriever, source, since, until, history):
        filters = Filters(source=None if source in (None, "", ANY_SOURCE) else source,
                          since=since, until=until)
        result = engine.ask(question, k=int(k), retriever=retriever, filters=filters,
                            history=list(history or []))
        return result, engine.to_json(result)

    def on_ask(question_, chat_, asked_, retriever_, k_, source_, since_, until_):
        # A user's mistake is a hint by the box: the conversation and the other panels stay.
        if not (question_ or "").strip():
            return {status: hint_html("Type a question first, for example: "
                                      "When was Dongguan's application approved?")}
        try:
            result, out = run(question_, k_, retriever_, source_, since_, until_, asked_)
        except UserError as e:
            return {status: hint_html(str(e))}
        messages = list(chat_ or []) + [
            {"role": "user", "content": html.escape(out["question"])},
            {"role": "assistant", "content": answer_html(out)}]
        history = list(asked_ or []) + ([out.get("resolved_question") or out["question"]]
                                        if out["kind"] == "question" else [])
        choices = [(f"[{p['rank']}] {p['title'] or p['doc_id']}", p["rank"]) for p in out["passages"]]
        rank = out["answer"]["passage_rank"] if out["answer"] else None
        shown = (article_segments(index.articles[out["answer"]["doc_id"]], out, rank)
                 if rank else [])
        return {question: "", chat: messages, asked: history[-MAX_HISTORY:], last: out,
                status: status_html(out), table: source_rows(out),
                passages: passage_segments(out, list(result.sentences)),
                opened: gr.update(choices=choices, value=rank), article: shown}

    def on_open(rank, out):
        if not out or rank in (None, ""):
            return []
        p = next((p for p in out["passages"] if p["rank"] == int(rank)), None)
        return article_segments(index.articles[p["doc_id"]], out, int(rank)) if p else []

    def on_row(out, evt: gr.SelectData):
        if not out:
            return {opened: gr.update(), article: []}
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(out["passages"]):
            return {opened: gr.update(), article: []}
        rank = out["passages"][row]["rank"]
        return {opened: gr.update(value=rank), article: on_open(rank, out)}

    def on_clear():
        return {question: "", chat: [], asked: [], last: None, status: status_html(None),
                table: [], passages: [], opened: gr.update(choices=[], value=None), article: []}

    def ask(question: str, k: int = settings.k, retriever: str = settings.retriever,
            history: list[str] | None = None, source: str = "", since: str = "",
            until: str = "") -> dict:
        """Answer a question from the articles; returns the JSON object of `qa ask --json`."""
        try:
            check_k(k, API_MAX_K)
            return run(question, k, retriever, source, since, until, history)[1]
        except UserError as e:
            raise gr.Error(str(e)) from None

    m = index.manifest
    with gr.Blocks(title="Ask the articles") as demo:
        gr.Markdown("## Ask the articles\nAnswers are quoted from the articles, with their sources. "
                    "Follow-up questions such as *And Dongguan?* use the previous question.")
        gr.Markdown(f"Index: {m.documents or len(index.articles)} articles, "
                    f"{m.passages} passages, built "
                    f"{html.escape(m.built_at or '?')}.", elem_id="index-info")
        asked = gr.State([])
        last = gr.State(None)
        with gr.Row():
            with gr.Column(scale=5):
                chat = gr.Chatbot(label="Conversation", elem_id="chat", height=480,
                                  render_markdown=False, sanitize_html=True, line_breaks=False,
                                  feedback_options=None,
                                  placeholder="Ask a question about the articles.")
                question = gr.Textbox(label="Question", elem_id="question", lines=1, max_lines=4,
                                      max_length=10_000,
                                      placeholder="e.g. When did Dongguan apply to become a "
                                                  "national innovative city?")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("New conversation", elem_id="clear")
                gr.Examples([[q] for q in example_questions(index.articles)], inputs=[question],
                            label="Example questions")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    with gr.Row():
                        retriever = gr.Dropdown(list(RETRIEVERS), value=settings.retriever,
                                                label="Retriever", elem_id="retriever")
                        k = gr.Slider(1, UI_MAX_K, value=min(settings.k, UI_MAX_K), step=1,
                                      label="Passages", elem_id="k")
                    with gr.Row():
                        source = gr.Dropdown([ANY_SOURCE] + sources, value=ANY_SOURCE,
                                             label="Source", elem_id="source")
                        since = gr.Textbox(label="Published on or after (YYYY-MM-DD)",
                                           elem_id="since", max_length=10)
                        until = gr.Textbox(label="Published on or before (YYYY-MM-DD)",
                                           elem_id="until", max_length=10)
            with gr.Column(scale=4):
                status = gr.HTML(status_html(None), elem_id="status")
                table = gr.Dataframe(headers=SOURCE_HEADERS,
                                     datatype=["number", "str", "str", "str", "str"],
                                     interactive=False, wrap=True, label="Sources (click to open)",
                                     # Short fields get the room they need on one line; the
                                     # title wraps between words in the rest. At phone width
                                     # the table scrolls sideways rather than break a word.
                                     column_widths=["36px", "35%", "104px", "104px", "96px"],
                                     elem_id="sources")
                passages = gr.HighlightedText(label="Passages", elem_id="passages", elem_classes=["qa-text"],
                                              color_map=COLORS, show_legend=True,
                                              show_inline_category=False, combine_adjacent=False)
        with gr.Row():
            with gr.Column():
                opened = gr.Dropdown([], value=None, label="Open a source", elem_id="open",
                                     interactive=True)
                article = gr.HighlightedText(label="Article", elem_id="article", elem_classes=["qa-text"], color_map=COLORS,
                                             show_legend=True, show_inline_category=False,
                                             combine_adjacent=False)

        inputs = [question, chat, asked, retriever, k, source, since, until]
        # Handlers return {component: value}; these are the components they may set. Gradio takes
        # a set here (its docs' form for dict returns), but its annotations say Sequence.
        outputs = {question, chat, asked, last, status, table, passages, opened, article}
        send.click(on_ask, inputs, outputs, api_visibility="private")  # type: ignore[arg-type]
        question.submit(on_ask, inputs, outputs, api_visibility="private")  # type: ignore[arg-type]
        clear.click(on_clear, None, outputs, api_visibility="private")  # type: ignore[arg-type]
        opened.input(on_open, [opened, last], article, api_visibility="private")
        table.select(on_row, [last], {opened, article}, api_visibility="private")  # type: ignore[arg-type]
        gr.api(ask, api_name="ask")
    demo.queue(default_concurrency_limit=config.max_running, max_size=config.queue_size)
    return demo
