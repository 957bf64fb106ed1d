"""The HTTP service: a FastAPI application over :class:`~lavislite.serve.heads.Heads`.

Why FastAPI + uvicorn rather than Gradio: the service is an API first (JSON in and out, bearer tokens,
size limits, 4xx errors a client can act on) and the page is one static file calling that same API, so
the page adds no second code path; FastAPI is a thin, maintained layer over Starlette's ASGI, and the
install stays small (Gradio pulls in a front-end build and dozens of packages).

Every request but the page's passes :class:`Guard` first (bearer token in constant time, then the body-size
limit) before any form parsing or model work. Inputs are checked by :mod:`lavislite.serve.images`;
requests to one head are batched by :class:`~lavislite.serve.batching.DynamicBatcher`. (FastAPI is imported
at the top: it resolves the route annotations from this module's globals; nothing imports this module but
``lavislite serve`` and its callers.)
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lavislite.common.errors import LavisliteError
from lavislite.serve.batching import DynamicBatcher
from lavislite.serve.heads import Heads
from lavislite.serve.images import (
    Limits,
    RequestError,
    check_text,
    decode_image,
    read_path,
)

logger = logging.getLogger(__name__)
TOKEN_ENV = "LAVISLITE_SERVE_TOKEN"
OPERATIONS = ("caption", "vqa", "match", "classify", "search")
PUBLIC = frozenset({"/"})  # the page (it asks for the token); every other path passes the guard


@dataclass
class ServeConfig:
    """Server settings (the ``lavislite serve`` flags)."""

    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    image_roots: tuple[Path, ...] = ()
    max_batch: int = 8
    max_wait_ms: float = 10.0


class Guard:
    """ASGI middleware for every path but the page: 401 unless the bearer token matches (``hmac.compare_digest``), 413 when
    the body is over the limit (by Content-Length, or counted while it streams)."""

    def __init__(self, app: Any, token: str | None, max_body: int) -> None:
        self.app, self.max_body = app, int(max_body)
        self.expected = f"Bearer {token}".encode() if token else None

    async def _reply(self, send: Any, status: int, message: str, extra: list | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (extra or [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.expected is not None:
            given = headers.get(b"authorization", b"")
            # compare_digest takes time independent of where the bytes differ
            if not hmac.compare_digest(given, self.expected):
                return await self._reply(send, 401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                                         [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        limit = self.max_body + 64 * 1024  # room for the multipart framing and form fields
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._reply(send, 413, f"request body is {int(length)} bytes, over the {self.max_body}-byte upload limit (--max-upload-mb)")
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise RequestError(413, f"request body is over the {self.max_body}-byte upload limit (--max-upload-mb)")
            return msg

        await self.app(scope, counted, send)


def create_app(heads: Heads, config: ServeConfig | None = None) -> Any:
    """The FastAPI application serving ``heads`` (see docs/serve.md for the API)."""
    config = config or ServeConfig()
    limits = config.limits
    batchers: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        for b in batchers.values():
            b.close()

    app = FastAPI(title="lavislite", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    batch = lambda fn, name: DynamicBatcher(fn, config.max_batch, config.max_wait_ms, name)
    if heads.caption:
        batchers["caption"] = batch(heads.caption_batch, "caption")
    if heads.vqa:
        batchers["vqa"] = batch(heads.vqa_batch, "vqa")
    if heads.retrieval:
        batchers["match"] = batch(heads.match_batch, "match")
        batchers["classify"] = batch(heads.classify_batch, "classify")
    if heads.searcher:
        batchers["search"] = batch(heads.search_batch, "search")
    app.state.batchers, app.state.heads, app.state.config = batchers, heads, config

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(LavisliteError)
    async def _lavislite_error(request: Request, exc: LavisliteError) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(exc).split())}, status_code=400)

    async def form(request: Request) -> tuple[dict[str, list[str]], dict[str, tuple[str, bytes]]]:
        """Text fields (each a list, for repeated fields) and uploaded files of a multipart/urlencoded or JSON body."""
        ctype = request.headers.get("content-type", "")
        fields: dict[str, list[str]] = {}
        files: dict[str, tuple[str, bytes]] = {}
        if ctype.startswith("application/json"):
            try:
                data = json.loads(await request.body() or b"{}")
            except json.JSONDecodeError as exc:
                raise RequestError(400, f"request body is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise RequestError(400, "JSON body must be an object of fields")
            for k, v in data.items():
                fields[k] = (
                    [json.dumps(v) if isinstance(v, (list, dict)) else str(v)] if k != "labels" or not isinstance(v, list) else [str(x) for x in v]
                )
            return fields, files
        try:
            async with request.form(max_files=2, max_fields=200, max_part_size=limits.max_upload_bytes) as f:
                for k, v in f.multi_items():
                    if hasattr(v, "read"):
                        files[k] = (v.filename or k, await v.read())
                    else:
                        fields.setdefault(k, []).append(v)
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001  (malformed multipart: starlette raises several types)
            raise RequestError(400, f"malformed form body: {' '.join(str(exc).split()) or type(exc).__name__}") from None
        return fields, files

    def one(fields: dict[str, list[str]], name: str) -> str | None:
        vals = fields.get(name)
        return vals[-1] if vals else None

    async def image_of(fields: dict, files: dict, required: bool = True) -> Any:
        if "image" in files:
            name, data = files["image"]
            return await run_in_threadpool(decode_image, data, name, limits)
        path = one(fields, "path")
        if path is not None:
            return await run_in_threadpool(read_path, path, config.image_roots, limits)
        if required:
            raise RequestError(422, "no image: upload a file in the 'image' field or give 'path' (relative to an image root)")
        return None

    def head(op: str) -> DynamicBatcher:
        if op not in batchers:
            raise RequestError(
                404,
                f"head {op!r} is not loaded on this server (serving: {', '.join(batchers) or 'nothing'}); start lavislite serve with a model for it",
            )
        return batchers[op]

    def integer(fields: dict, name: str, default: int, lo: int, hi: int) -> int:
        raw = one(fields, name)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise RequestError(422, f"{name}={raw[:40]!r} is not an integer") from None
        if not lo <= v <= hi:
            raise RequestError(422, f"{name}={v} is out of range; use {lo}..{hi}")
        return v

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("lavislite.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        out: dict[str, Any] = {"heads": list(batchers), "limits": asdict(limits), "models": {}}
        for role in ("caption", "vqa", "retrieval"):
            lm = getattr(heads, role)
            if lm is not None:
                out["models"][role] = {
                    "model": f"{lm.spec.name}:{lm.spec.model_type}" if not lm.spec.folder else lm.spec.name,
                    "dtype": str(lm.dtype).removeprefix("torch."),
                }
        if heads.searcher:
            out["index"] = {"images": len(heads.searcher.index), "texts": len(heads.searcher.index.texts)}
        out["batching"] = {
            "max_batch": config.max_batch,
            "max_wait_ms": config.max_wait_ms,
            "served": {n: {"requests": b.items, "model_calls": b.batches} for n, b in batchers.items()},
        }
        return out

    @app.post("/api/caption")
    async def caption(request: Request) -> dict[str, Any]:
        b = head("caption")
        fields, files = await form(request)
        prompt = check_text(one(fields, "prompt"), "prompt", limits, required=False) or None
        if prompt is not None and not hasattr(heads.caption.model, "prompt"):
            raise RequestError(422, f"the captioner {heads.caption.spec.name} takes no prompt; leave 'prompt' out")
        return {"caption": await b((await image_of(fields, files), prompt))}

    @app.post("/api/vqa")
    async def vqa(request: Request) -> dict[str, Any]:
        b = head("vqa")
        fields, files = await form(request)
        question = check_text(one(fields, "question"), "question", limits)
        return {"question": question, "answer": await b((await image_of(fields, files), question))}

    @app.post("/api/match")
    async def match(request: Request) -> dict[str, Any]:
        b = head("match")
        fields, files = await form(request)
        text = check_text(one(fields, "text"), "text", limits)
        return {"text": text, **await b((await image_of(fields, files), text))}

    @app.post("/api/classify")
    async def classify(request: Request) -> dict[str, Any]:
        b = head("classify")
        fields, files = await form(request)
        raw = fields.get("labels") or []
        if len(raw) == 1 and raw[0].lstrip().startswith("["):
            try:
                raw = [str(x) for x in json.loads(raw[0])]
            except json.JSONDecodeError:
                raise RequestError(422, "labels is not a valid JSON list of strings") from None
        elif len(raw) == 1:
            raw = raw[0].replace("\n", ",").split(",")
        labels = tuple(dict.fromkeys(check_text(x, "label", limits) for x in raw if x.strip()))
        if not labels or len(labels) > limits.max_labels:
            raise RequestError(422, f"give 1 to {limits.max_labels} labels ('labels': a JSON list or comma-separated text)")
        rerank = (one(fields, "rerank") or "false").lower() in ("1", "true", "yes", "on")
        template = check_text(one(fields, "template"), "template", limits, required=False) or "{}"
        if "{}" not in template:
            raise RequestError(422, f"template {template!r} has no '{{}}' where the label goes")
        return {"labels": await b((await image_of(fields, files), labels, rerank, template))}

    @app.post("/api/search")
    async def search(request: Request) -> dict[str, Any]:
        b = head("search")
        fields, files = await form(request)
        k = integer(fields, "k", 10, 1, limits.max_k)
        image = await image_of(fields, files, required=False)
        if image is not None:
            hits = await b(("image", image, k, 0))
        else:
            query = check_text(one(fields, "query"), "query", limits)
            rk = integer(fields, "rerank_k", k, 0, limits.max_k)
            hits = await b(("text", query, k, rk))
        return {"results": hits}

    @app.get("/api/images/{row}")
    async def indexed_image(row: int) -> Response:
        """The bytes of indexed image ``row`` (as a search result names it); no request path is opened."""
        if heads.searcher is None or not 0 <= row < len(heads.searcher.index):
            raise RequestError(404, f"no indexed image {row}")
        import io

        from lavislite.serve.sources import ImageReader

        reader = ImageReader()
        try:
            im = await run_in_threadpool(reader, heads.searcher.index.entries[row].path)
        finally:
            reader.close()
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.api_route("/api/{name}", methods=["GET", "POST"])
    async def unknown(name: str) -> None:
        raise RequestError(404, f"unknown head {name!r}; the API has {', '.join(OPERATIONS)} (POST /api/<head>) and GET /api/info")

    return _with_guard(app, config)


def _with_guard(app: Any, config: ServeConfig) -> Any:
    guarded = Guard(app, config.token, config.limits.max_upload_bytes)
    guarded.state = app.state  # tests and the CLI reach the batchers through the returned app
    return guarded
