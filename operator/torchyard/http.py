"""The operator's own HTTP endpoint: health, Prometheus metrics, and progress reports from pods."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from torchyard import metrics
from torchyard.progress import ProgressError, clean_report

log = logging.getLogger(__name__)
MAX_REPORT_BYTES = 4096


def build_app(accept_progress: Callable[[str, str, str, dict], tuple[int, str]]) -> web.Application:
    """`accept_progress(namespace, name, token, report)` checks and records a report (blocking I/O:
    it runs in a thread) and returns an HTTP status and a message."""
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    @routes.get("/metrics")
    async def scrape(_: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @routes.post("/v1/progress/{namespace}/{name}")
    async def report(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            return _error(413, f"progress report larger than {MAX_REPORT_BYTES} bytes")
        try:
            values = clean_report(json.loads(await request.text()))
        except (json.JSONDecodeError, ProgressError) as exc:
            return _error(400, str(exc))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        try:
            status, message = await asyncio.to_thread(accept_progress, namespace, name, token, values)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.warning("progress report for %s/%s: %s", namespace, name, exc)
            return _error(503, "could not record the report; send the next one")
        if status >= 400:
            return _error(status, message)
        return web.json_response({"accepted": True}, status=status)

    app = web.Application(client_max_size=MAX_REPORT_BYTES * 4)
    app.add_routes(routes)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Server:
    def __init__(self, app: web.Application, host: str, port: int):
        self._runner = web.AppRunner(app, access_log=None)
        self.host, self.port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("serving health, metrics and progress on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
