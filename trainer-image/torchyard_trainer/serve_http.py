"""The model server's HTTP face: Open Inference Protocol v2 routes as one ASGI application.

uvicorn (httptools parser, uvloop) carries the connections: HTTP/1.1 keep-alive, a real listen
backlog, one event loop. Everything here is cheap and non-blocking except the model's forward
pass, which runs on the loop itself (a few microseconds for the models this server is built for;
a thread hand-off would cost more than it saves) or, with adaptive batching, once per batch.
Explanations, which cost many passes, run on a thread of their own so inference keeps flowing.
Every refusal is a JSON ``{"error": ...}``, including requests the HTTP parser rejects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

import torch
from prometheus_client import CONTENT_TYPE_LATEST
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from torchyard_trainer.serve_batch import Batcher
from torchyard_trainer.serve_explain import explain
from torchyard_trainer.serve_metrics import ServerMetrics
from torchyard_trainer.serve_model import ModelService, RequestError

log = logging.getLogger("torchyard_trainer.serve")

SERVER_NAME = "torchyard-model-server"
JSON = b"application/json"
POSTS = ("infer", "explain")


def route(path: str) -> tuple[str, str | None, str | None] | None:
    """(endpoint, model name, version) for a request path, or None for an unknown path."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    fixed = {("v2",): "server", ("v2", "health", "live"): "live", ("v2", "health", "ready"): "ready",
             ("metrics",): "metrics"}
    if tuple(parts) in fixed:
        return fixed[tuple(parts)], None, None
    if len(parts) < 3 or parts[:2] != ["v2", "models"] or not parts[2]:
        return None
    name, rest, version = parts[2], parts[3:], None
    if rest[:1] == ["versions"] and len(rest) >= 2:
        version, rest = rest[1], rest[2:]
    kinds = {(): "model", ("ready",): "model_ready", ("infer",): "infer", ("explain",): "explain"}
    kind = kinds.get(tuple(rest))
    return (kind, name, version) if kind else None


class BodyError(RequestError):
    """A request whose body cannot be read safely; the connection closes after the answer."""


class Disconnected(Exception):
    """The client went away before its request body arrived."""


@dataclass(frozen=True)
class Limits:
    max_batch: int
    max_body: int


class App:
    """The ASGI application: routes, request bodies, answers and their metrics."""

    def __init__(self, service: ModelService, metrics: ServerMetrics, limits: Limits, batcher: Batcher | None = None):
        self.service = service
        self.metrics = metrics
        self.limits = limits
        self.batcher = batcher
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")

    def close(self) -> None:
        self._explainer.shutdown(wait=True, cancel_futures=True)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["raw_path"].decode("latin-1")
        target = route(path)
        if target is None:
            await answer(send, 404, {"error": f"no endpoint at {path}"})
            return
        kind, name, version = target
        method = scope["method"]
        if (method == "POST") != (kind in POSTS):
            await answer(send, 405, {"error": f"{method} is not allowed on {path}"})
            return
        if kind == "infer":
            await self._infer(scope, receive, send, name, version)
        elif kind == "explain":
            await self._explain(scope, receive, send, name, version)
        else:
            await self._get(send, kind, name, version)

    async def _get(self, send, kind: str, name: str | None, version: str | None) -> None:
        service = self.service
        try:
            if kind == "live":
                await answer(send, 200, {"live": True})
            elif kind == "ready":
                await answer(send, 200 if service.ready else 503, {"ready": service.ready, "state": service.state})
            elif kind == "server":
                await answer(send, 200, {"name": SERVER_NAME, "version": torch.__version__, "extensions": []})
            elif kind == "metrics":
                await reply(send, 200, self.metrics.exposition(service.ready), CONTENT_TYPE_LATEST.encode())
            elif kind == "model_ready":
                service.check_target(name, version)
                body = {"name": name, "ready": service.ready, "state": service.state}
                await answer(send, 200 if service.ready else 503, body)
            else:
                service.check_target(name, version)
                await answer(send, 200, service.metadata())
        except RequestError as exc:
            await answer(send, exc.status, {"error": exc.message})

    async def _infer(self, scope, receive, send, name: str, version: str | None) -> None:
        started, close = time.perf_counter(), False
        try:
            self.service.check_target(name, version)
            prepared = self.service.prepare(await read_body(scope, receive, self.limits.max_body),
                                            self.limits.max_batch)
            if self.batcher is not None:
                output = await self.batcher.submit(prepared.batch)
            else:
                output = self.service.forward(prepared.batch)
            code, reason, payload = 200, None, self.service.respond(prepared, output)
        except Disconnected:
            return
        except RequestError as exc:
            code, reason, payload, close = exc.status, exc.reason, {"error": exc.message}, isinstance(exc, BodyError)
        except Exception as exc:  # a fault of the model, not the client: answer, log, keep serving
            log.exception("inference failed")
            code, reason, payload = 500, "internal", {"error": f"inference failed: {exc}"}
        await answer(send, code, payload, close)
        self.metrics.observe(code, time.perf_counter() - started, reason)

    async def _explain(self, scope, receive, send, name: str, version: str | None) -> None:
        started, close = time.perf_counter(), False
        try:
            self.service.check_target(name, version)
            body = await read_body(scope, receive, self.limits.max_body)
            loop = asyncio.get_running_loop()
            code, payload = 200, await loop.run_in_executor(
                self._explainer, explain, self.service, body, self.limits.max_batch)
        except Disconnected:
            return
        except RequestError as exc:
            code, payload, close = exc.status, {"error": exc.message}, isinstance(exc, BodyError)
        except Exception as exc:
            log.exception("explanation failed")
            code, payload = 500, {"error": f"explanation failed: {exc}"}
        await answer(send, code, payload, close)
        self.metrics.observe_explanation(code, time.perf_counter() - started)


async def read_body(scope, receive, limit: int) -> bytes:
    """The request body, refused before it is read when its declared length is missing or too large."""
    raw = next((value for key, value in scope["headers"] if key == b"content-length"), None)
    if raw is None:
        raise BodyError(411, "bad_request", "request has no Content-Length header")
    length = content_length(raw.decode("latin-1"))
    if length > limit:
        raise BodyError(413, "too_large", f"request body of {length} bytes exceeds {limit}")
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def content_length(raw: str) -> int:
    try:
        length = int(raw)
    except ValueError:
        raise BodyError(400, "bad_request", f"Content-Length {raw!r} is not a number") from None
    if length < 0:
        raise BodyError(400, "bad_request", f"Content-Length {length} is negative")
    return length


async def answer(send, status: int, payload: dict, close: bool = False) -> None:
    await reply(send, status, json.dumps(payload).encode(), JSON, close)


async def reply(send, status: int, body: bytes, content_type: bytes, close: bool = False) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


class JsonErrorProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering requests its parser refuses in this server's JSON shape.

    The parser refuses, for example, a Content-Length that is not a number before any application
    code runs; the answer names that header the way the application's own checks would.
    """

    def data_received(self, data: bytes) -> None:
        self._received = data
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": describe_unparsable(getattr(self, "_received", b""))}).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def describe_unparsable(data: bytes) -> str:
    """What is wrong with a request the HTTP parser refused, as far as its bytes tell."""
    match = _CONTENT_LENGTH.search(data.partition(b"\r\n\r\n")[0])
    if match:
        try:
            content_length(match.group(1).decode("latin-1").strip())
        except RequestError as exc:
            return exc.message
    return "malformed HTTP request"
