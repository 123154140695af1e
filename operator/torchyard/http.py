"""The operator's own HTTP endpoint: health, Prometheus metrics, and progress reports from pods."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from torchyard import metrics
from torchyard.progress import ProgressError, ProgressStore, clean_report, job_token

log = logging.getLogger(__name__)
MAX_REPORT_BYTES = 4096


def build_app(
    store: ProgressStore,
    key: bytes,
    uid_of: Callable[[str, str], str | None],
    on_report: Callable[[str, str], None] | None = None,
) -> web.Application:
    """`uid_of(namespace, name)` returns the uid of a job the operator knows, else None."""
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
        uid = uid_of(namespace, name)
        if uid is None:
            return _error(404, f"no TrainingJob {namespace}/{name} is known to this operator")
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied, job_token(key, namespace, name, uid)):
            return _error(403, "bearer token does not belong to this job")
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            return _error(413, f"progress report larger than {MAX_REPORT_BYTES} bytes")
        try:
            values = clean_report(json.loads(await request.text()))
        except (json.JSONDecodeError, ProgressError) as exc:
            return _error(400, str(exc))
        store.put(namespace, name, uid, values)
        if on_report is not None:
            on_report(namespace, name)
        return web.json_response({"accepted": True}, status=202)

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
