"""The HTTP app: the JSON API (/api/ask, /api/health) beside the page, login, embedding policy
and concurrency limits."""

from __future__ import annotations

import logging
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import gradio as gr
import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..retrieve import Filters
from ..settings import RETRIEVERS, Unavailable, UserError
from .config import (API_MAX_K, EMBED_DEFAULT_URL, EMBED_PAGE, LOCAL_FRAME_ANCESTORS,
                     LOCAL_ORIGINS, MAX_BODY_BYTES, MAX_HISTORY, STANDARD_METHODS, WebConfig)
from .page import build_demo
from .render import CSS, FONT

log = logging.getLogger(__name__)

# The retrievers the API accepts: the engine's own list.
Retriever = Literal[RETRIEVERS]  # type: ignore[valid-type]


class Busy(Exception):
    """Every answering slot is taken and the waiting line is full."""


class Gate:
    """At most `running` questions at once, at most `waiting` more waiting for a slot."""

    def __init__(self, running: int, waiting: int, timeout: float):
        self._slots = threading.BoundedSemaphore(running)
        self._lock = threading.Lock()
        self._waiting = 0
        self.max_waiting = waiting
        self.timeout = timeout

    @contextmanager
    def enter(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.max_waiting:
                    raise Busy
                self._waiting += 1
            try:
                acquired = self._slots.acquire(timeout=self.timeout)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not acquired:
                raise Busy
        try:
            yield
        finally:
            self._slots.release()



class AskBody(BaseModel):
    """The JSON body of POST /api/ask; GET /api/ask takes the same fields as query parameters."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"question": "When did Dongguan apply to become a national innovative city?",
                      "k": 5, "retriever": "hybrid"}]})
    question: str = Field(description="the question, plain language", max_length=100_000)
    k: Optional[int] = Field(None, ge=1, le=API_MAX_K, description="passages to return")
    retriever: Optional[Retriever] = None
    history: Optional[list[str]] = Field(None, max_length=MAX_HISTORY,
                                         description="earlier questions, oldest first")
    source: Optional[str] = Field(None, description="only articles from this source")
    since: Optional[str] = Field(None, description="only articles published on or after (YYYY-MM-DD)")
    until: Optional[str] = Field(None, description="only articles published on or before (YYYY-MM-DD)")
    doc: Optional[str] = Field(None, description="only this article (doc_id)")


# The fields /api/ask accepts, in the order the README lists them.
ASK_FIELDS = tuple(AskBody.model_fields)


def unknown_fields(names) -> JSONResponse | None:
    """A 422 naming the fields /api/ask does not take, with the ones it does; None when all known.

    >>> unknown_fields(["question", "k"]) is None
    True
    >>> unknown_fields(["question", "top_k"]).status_code
    422
    """
    unknown = sorted({str(n) for n in names} - set(ASK_FIELDS))
    if not unknown:
        return None
    which = ", ".join(repr(n[:60]) for n in unknown[:10])
    s = "s" if len(unknown) > 1 else ""
    return JSONResponse({"error": f"unknown parameter{s} {which}; /api/ask accepts "
                                  f"{', '.join(ASK_FIELDS)}",
                         "details": [{"field": n[:60], "problem": "unknown parameter",
                                      "type": "extra_forbidden"} for n in unknown[:10]]},
                        status_code=422)



def create_app(engine, config: WebConfig | None = None):
    """The FastAPI app serving the page at /, the JSON API at /api/ask, and the embed helpers.

    Args:
        engine: the loaded QA.
        config: login, embedding origins and concurrency limits.

    Returns:
        A FastAPI (ASGI) app; run it with uvicorn.
    """
    config = config or WebConfig()
    gate = Gate(config.max_running, config.max_waiting, config.wait_seconds)
    users = dict(config.users)
    app = FastAPI(
        # No Swagger/ReDoc pages: they load their scripts from a CDN and would be blank offline.
        docs_url=None, redoc_url=None,
        title="qa: ask the articles", version=__version__,
        description="Questions answered from a folder of news articles, with exact citations. "
                    "`/api/ask` returns the object that `qa ask --json` prints; errors are "
                    "`{\"error\": message}` with a 4xx status (503 when busy or a shard is down). The page is at `/`.")

    # --- policy: embedding origins, security headers, body size
    origins = config.allowed_origins
    if "*" in origins:
        app.add_middleware(CORSMiddleware, allow_origin_regex=".*", allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
        frame_ancestors = "*"
    elif origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
        frame_ancestors = " ".join(("'self'",) + origins)
    else:
        app.add_middleware(CORSMiddleware, allow_origin_regex=LOCAL_ORIGINS, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
        frame_ancestors = " ".join(("'self'",) + LOCAL_FRAME_ANCESTORS)

    @app.middleware("http")
    async def policy(request: Request, call_next):
        if "\x00" in request.url.path:  # no file has one; Gradio's proxy route fails with a 500
            return JSONResponse({"error": "the path contains a NUL character"}, status_code=400)
        if request.url.path.startswith("/api/") and request.method not in STANDARD_METHODS:
            return JSONResponse({"error": f"method {request.method[:20]} is not allowed; use GET "
                                          f"or POST"}, status_code=405, headers={"Allow": "GET, POST"})
        if request.url.path.startswith("/api/"):
            size = request.headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
                return JSONResponse({"error": f"the request body is larger than {MAX_BODY_BYTES:,} "
                                              f"bytes; send only the question and its options"},
                                    status_code=413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = f"frame-ancestors {frame_ancestors}"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    # --- errors: always JSON with a message that says what to do
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        extra = [err["loc"][-1] for err in errors
                 if err.get("type") == "extra_forbidden" and err.get("loc")]
        if request.method == "GET" and request.url.path == "/api/ask":
            extra += [n for n in request.query_params.keys() if n not in ASK_FIELDS]
        if extra:  # the most useful thing to say first: which field is not ours
            return unknown_fields(extra)
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse({"error": "the body is not valid JSON; send an object such as "
                                          "{\"question\": \"When did Dongguan apply?\", \"k\": 5}"},
                                status_code=400)
        details = [{"field": ".".join(str(x) for x in err.get("loc", ())[1:]) or "body",
                    "problem": err.get("msg", "invalid"), "type": err.get("type", "")}
                   for err in errors]
        message = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
        return JSONResponse({"error": f"invalid request: {message}", "details": details},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    # --- login: HTTP Basic, or the session cookie of the page's login form
    basic = HTTPBasic(auto_error=False)

    async def require_user(request: Request,
                           creds: Optional[HTTPBasicCredentials] = Depends(basic)):
        if not users:
            return None
        if creds is not None:
            password = users.get(creds.username)
            if password is not None and secrets.compare_digest(password.encode(),
                                                               creds.password.encode()):
                return creds.username
        cookie = request.headers.get("cookie")
        if cookie:
            # The page's login is Gradio's: ask Gradio who the session cookie belongs to, through
            # its own public route (GET /gradio_api/user), served in-process.
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://qa.local") as client:
                got = await client.get("/gradio_api/user", headers={"cookie": cookie})
            user = got.json() if got.status_code == 200 else None
            if isinstance(user, str) and user in users:
                return user
        raise HTTPException(401, "login required: send HTTP Basic credentials (curl -u user:pass) "
                                 "or log in on the page first", headers={"WWW-Authenticate": "Basic"})

    # --- the JSON API
    def answer(body: AskBody) -> JSONResponse:
        try:
            filters = Filters(source=body.source or None, since=body.since, until=body.until,
                              doc=body.doc or None)
            with gate.enter():
                result = engine.ask(body.question, k=body.k, retriever=body.retriever,
                                    filters=filters, history=body.history)
                return JSONResponse(engine.to_json(result))
        except Unavailable as e:  # a shard or the Ray Serve app is down (app.py --ray)
            return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": "5"})
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=422)
        except Busy:
            return JSONResponse({"error": "the server is busy answering other questions; retry "
                                          "in a few seconds"}, status_code=503,
                                headers={"Retry-After": "2"})
        except Exception as e:  # never a bare 500 page: say what failed, in JSON
            log.exception("answering %r failed", body.question[:200])
            return JSONResponse({"error": f"internal error while answering ({type(e).__name__}); "
                                          f"the server log has the details"}, status_code=500)

    responses: dict[int | str, dict[str, Any]] = {400: {"description": "malformed JSON"}, 401: {"description": "login required"},
                 413: {"description": "body too large"},
                 422: {"description": "invalid question, k, retriever or filter, or an unknown "
                                       "parameter"},
                 503: {"description": "busy, or (under --ray) a shard of the index is down; "
                                       "retry later"}}

    @app.get("/api/ask", responses=responses, summary="Answer a question (query parameters)")
    def ask_get(request: Request, question: str = Query(description="the question", max_length=100_000),
                k: Optional[int] = Query(None, ge=1, le=API_MAX_K),
                retriever: Optional[Retriever] = None,
                history: Optional[list[str]] = Query(None, max_length=MAX_HISTORY),
                source: Optional[str] = None, since: Optional[str] = None,
                until: Optional[str] = None, doc: Optional[str] = None,
                user=Depends(require_user)):
        refused = unknown_fields(request.query_params.keys())
        if refused is not None:
            return refused
        return answer(AskBody.model_construct(question=question, k=k, retriever=retriever,
                                              history=history, source=source, since=since,
                                              until=until, doc=doc))

    @app.post("/api/ask", responses=responses, summary="Answer a question (JSON body)")
    def ask_post(body: AskBody, user=Depends(require_user)):
        return answer(body)

    @app.get("/api/health", summary="Index and model the server answers from",
             responses={401: {"description": "login required"}})
    def health(user=Depends(require_user)):
        m = engine.index.manifest
        return {"status": "ok", "documents": len(engine.index.articles),
                "passages": len(engine.index.passages), "model": m.model,
                "built_at": m.built_at or None, "stale": bool(engine.index.stale)}

    # Every other method gets a JSON 405, not the page's 404 (CORS preflights never reach here).
    other = ["PUT", "PATCH", "DELETE", "TRACE", "OPTIONS"]

    @app.api_route("/api/ask", methods=other, include_in_schema=False)
    def wrong_method():
        raise HTTPException(405, "use GET /api/ask?question=... or POST /api/ask with a JSON body",
                            headers={"Allow": "GET, POST"})

    @app.api_route("/api/health", methods=["POST", *other], include_in_schema=False)
    def wrong_method_health():
        raise HTTPException(405, "use GET /api/health", headers={"Allow": "GET"})

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", *other],
                   include_in_schema=False)
    def unknown(rest: str):
        raise HTTPException(404, f"no API route /api/{rest}; see /openapi.json")

    # --- embedding helpers: Gradio's web component loader, and the example page
    frontend = Path(gr.__file__).parent / "templates" / "frontend"

    @app.get("/gradio.js", include_in_schema=False)
    def gradio_js():
        # A one-line loader importing ./assets/index-<hash>.js, which Gradio serves at /assets/.
        return FileResponse(frontend / "gradio.js", media_type="text/javascript")

    @app.get("/embed.html", include_in_schema=False)
    def embed_page(request: Request):
        if not EMBED_PAGE.is_file():
            raise HTTPException(404, "examples/embed.html is not installed with this copy of qa")
        base = str(request.base_url).rstrip("/")
        return HTMLResponse(EMBED_PAGE.read_text(encoding="utf-8").replace(EMBED_DEFAULT_URL, base))

    demo = build_demo(engine, config)
    app = gr.mount_gradio_app(app, demo, path="/", auth=list(config.users) or None,
                              auth_message="Log in to ask the articles." if users else None,
                              ssr_mode=False, css=CSS, footer_links=["api"],
                              theme=gr.themes.Default(font=FONT, font_mono=FONT))
    app.state.demo = demo
    return app
