"""The model server: one artifact behind the Open Inference Protocol v2, with Prometheus metrics.

    python -m torchyard_trainer.serve --model-dir DIR --model-name NAME --model-version V

It listens at once (liveness answers while the model loads), waits for the artifact to appear,
loads it, checks its digest and runs a self-check inference; only then does readiness turn true.
An artifact that cannot be loaded or verified ends the process with exit code 1, so the pod
crash-loops visibly instead of sitting unready. SIGTERM turns readiness false, lets requests in
flight finish and exits 0. docs/serving.md describes the endpoints for users.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import torch
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from torchyard_trainer.serve_model import ModelService, RequestError

log = logging.getLogger("torchyard_trainer.serve")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JSON = "application/json"


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self, model_name: str, model_version: str):
        self.labels = {"model_name": model_name, "model_version": model_version}
        self.registry = CollectorRegistry()
        names = list(self.labels)
        self.requests = Counter("torchyard_model_requests", "Inference requests answered, by HTTP status code.",
                                names + ["code"], registry=self.registry)
        self.seconds = Histogram("torchyard_model_request_seconds", "Time to answer an inference request.",
                                 names, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("torchyard_model_errors", "Inference requests that failed, by reason.",
                              names + ["reason"], registry=self.registry)
        self.ready = Gauge("torchyard_model_ready", "1 while the model is loaded, verified and self-checked.",
                           names, registry=self.registry)

    def observe(self, code: int, seconds: float, reason: str | None) -> None:
        self.requests.labels(**self.labels, code=str(code)).inc()
        self.seconds.labels(**self.labels).observe(seconds)
        if reason is not None:
            self.errors.labels(**self.labels, reason=reason).inc()

    def exposition(self, ready: bool) -> bytes:
        self.ready.labels(**self.labels).set(1 if ready else 0)
        return generate_latest(self.registry)


def route(path: str) -> tuple[str, str | None, str | None] | None:
    """(endpoint, model name, version) for a request path, or None for an unknown path."""
    parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
    fixed = {("v2",): "server", ("v2", "health", "live"): "live", ("v2", "health", "ready"): "ready",
             ("metrics",): "metrics"}
    if tuple(parts) in fixed:
        return fixed[tuple(parts)], None, None
    if len(parts) < 3 or parts[:2] != ["v2", "models"] or not parts[2]:
        return None
    name, rest, version = parts[2], parts[3:], None
    if rest[:1] == ["versions"] and len(rest) >= 2:
        version, rest = rest[1], rest[2:]
    kinds = {(): "model", ("ready",): "model_ready", ("infer",): "infer"}
    kind = kinds.get(tuple(rest))
    return (kind, name, version) if kind else None


class ModelServer(ThreadingHTTPServer):
    """HTTP server holding the service; requests in flight are joined on close."""

    daemon_threads = False

    def __init__(self, address, service: ModelService, metrics: ServerMetrics, max_batch: int, max_body: int):
        super().__init__(address, Handler)
        self.service = service
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_body = max_body


class Handler(BaseHTTPRequestHandler):
    """Maps each endpoint to the service; every refusal is a JSON ``{"error": ...}``."""

    server: ModelServer
    server_version = "torchyard-model-server"
    timeout = 30  # an idle or stalled client cannot hold a thread (or shutdown) for long

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self, method: str) -> None:
        target = route(self.path)
        if target is None:
            self._json(404, {"error": f"no endpoint at {urlsplit(self.path).path}"})
            return
        kind, name, version = target
        if (method == "POST") != (kind == "infer"):
            self._json(405, {"error": f"{method} is not allowed on {urlsplit(self.path).path}"})
            return
        if kind == "infer":
            self._infer(name, version)
            return
        try:
            self._get(kind, name, version)
        except RequestError as exc:
            self._json(exc.status, {"error": exc.message})

    def _get(self, kind: str, name: str | None, version: str | None) -> None:
        service = self.server.service
        if kind == "live":
            self._json(200, {"live": True})
        elif kind == "ready":
            self._json(200 if service.ready else 503, {"ready": service.ready, "state": service.state})
        elif kind == "server":
            self._json(200, {"name": "torchyard-model-server", "version": torch.__version__, "extensions": []})
        elif kind == "metrics":
            self._send(200, self.server.metrics.exposition(service.ready), CONTENT_TYPE_LATEST)
        elif kind == "model_ready":
            service.check_target(name, version)
            body = {"name": name, "ready": service.ready, "state": service.state}
            self._json(200 if service.ready else 503, body)
        else:
            service.check_target(name, version)
            self._json(200, service.metadata())

    def _infer(self, name: str, version: str | None) -> None:
        started = time.perf_counter()
        service = self.server.service
        code, reason = 200, None
        try:
            service.check_target(name, version)
            response = service.infer(self._body(), self.server.max_batch)
            self._json(200, response)
        except RequestError as exc:
            code, reason = exc.status, exc.reason
            self._json(exc.status, {"error": exc.message})
        except Exception as exc:  # a fault of the model, not the client: answer, log, keep serving
            code, reason = 500, "internal"
            log.exception("inference failed")
            self._json(500, {"error": f"inference failed: {exc}"})
        self.server.metrics.observe(code, time.perf_counter() - started, reason)

    def _body(self) -> bytes:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(411, "bad_request", "request has no Content-Length header")
        try:
            length = int(raw)
        except ValueError:
            raise RequestError(400, "bad_request", f"Content-Length {raw!r} is not a number") from None
        if length < 0:
            raise RequestError(400, "bad_request", f"Content-Length {length} is negative")
        if length > self.server.max_body:
            self.close_connection = True
            raise RequestError(413, "too_large", f"request body of {length} bytes exceeds {self.server.max_body}")
        return self.rfile.read(length)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), JSON)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _load(service: ModelService, server: ModelServer, wait: float, stop: threading.Event, failed: list) -> None:
    """Background load; a failure is recorded and stops the server (the process exits 1)."""
    try:
        service.wait_for_artifact(wait, stop)
        service.load()
    except Exception as exc:  # any failure to load means this replica must not serve
        if stop.is_set():
            return
        log.error("cannot serve %s version %s: %s", service.name, service.version, exc)
        failed.append(str(exc))
        server.shutdown()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m torchyard_trainer.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="the artifact directory to serve")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (logged)")
    parser.add_argument("--sha256", default=None, help="refuse the artifact unless its digest is this")
    parser.add_argument("--wait-seconds", type=float, default=300.0, help="how long to wait for the artifact")
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--max-request-bytes", type=int, default=64 << 20)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    service = ModelService(args.model_name, args.model_version, args.model_dir, expected_sha256=args.sha256)
    metrics = ServerMetrics(args.model_name, args.model_version)
    server = ModelServer((args.host, args.port), service, metrics, args.max_batch_size, args.max_request_bytes)
    stop, failed = threading.Event(), []

    def on_signal(signum, _frame) -> None:
        log.info("received %s; draining and stopping", signal.Signals(signum).name)
        stop.set()
        service.mark_stopping()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_load, args=(service, server, args.wait_seconds, stop, failed), daemon=True).start()
    log.info("listening on %s:%d", args.host, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
