"""The model server: one artifact behind the Open Inference Protocol v2, with Prometheus metrics.

    python -m torchyard_trainer.serve --model-dir DIR --model-name NAME --model-version V

It listens at once (liveness answers while the model loads), waits for the artifact to appear,
loads it, checks its digest and runs a self-check inference; only then does readiness turn true.
An artifact that cannot be loaded or verified ends the process with exit code 1, so the pod
crash-loops visibly instead of sitting unready. SIGTERM turns readiness false, stops accepting
connections, lets requests in flight finish and exits 0. docs/serving.md describes the endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import threading

import torch
import uvicorn
import uvloop

from torchyard_trainer.serve_batch import Batcher
from torchyard_trainer.serve_http import SERVER_NAME, App, JsonErrorProtocol, Limits
from torchyard_trainer.serve_metrics import ServerMetrics
from torchyard_trainer.serve_model import ModelService

log = logging.getLogger("torchyard_trainer.serve")


class Server(uvicorn.Server):
    """uvicorn's server, turning readiness false the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, service: ModelService):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame) -> None:
        if not self.should_exit:
            log.info("received %s; draining and stopping", signal.Signals(sig).name)
        self.service.mark_stopping()
        super().handle_exit(sig, frame)


def _load(service: ModelService, server: Server, wait: float, stop: threading.Event, failed: list) -> None:
    """Background load; a failure is recorded and stops the server (the process exits 1)."""
    try:
        service.wait_for_artifact(wait, stop)
        service.load()
    except Exception as exc:  # any failure to load means this replica must not serve
        if stop.is_set():
            return
        log.error("cannot serve %s version %s: %s", service.name, service.version, exc)
        failed.append(str(exc))
        server.should_exit = True


def listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


async def serve(args: argparse.Namespace, service: ModelService, metrics: ServerMetrics) -> int:
    batcher = None
    if args.batch_max_size > 1:
        batcher = Batcher(service.forward, args.batch_max_size, args.batch_max_wait_ms / 1000, metrics.observe_batch)
        batcher.start()
    app = App(service, metrics, Limits(args.max_batch_size, args.max_request_bytes), batcher)
    config = uvicorn.Config(app, http=JsonErrorProtocol, lifespan="off", log_config=None,
                            access_log=args.log_level.upper() == "DEBUG", server_header=False,
                            headers=[("server", SERVER_NAME)], backlog=args.backlog,
                            timeout_keep_alive=args.keep_alive_seconds,
                            timeout_graceful_shutdown=args.drain_seconds)
    server = Server(config, service)
    sock = listen(args.host, args.port, args.backlog)
    log.info("listening on %s:%d", args.host, sock.getsockname()[1])
    stop, failed = threading.Event(), []
    threading.Thread(target=_load, args=(service, server, args.wait_seconds, stop, failed), daemon=True).start()
    try:
        await server.serve(sockets=[sock])
    finally:
        stop.set()
        if batcher is not None:
            await batcher.stop()
        app.close()
        sock.close()
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m torchyard_trainer.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="the artifact directory to serve")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (logged)")
    parser.add_argument("--sha256", default=None, help="refuse the artifact unless its digest is this")
    parser.add_argument("--wait-seconds", type=float, default=300.0, help="how long to wait for the artifact")
    parser.add_argument("--max-batch-size", type=int, default=1024, help="largest batch one request may carry")
    parser.add_argument("--max-request-bytes", type=int, default=64 << 20)
    parser.add_argument("--batch-max-size", type=_positive, default=1,
                        help="adaptive batching: most rows in one forward pass (1: no batching)")
    parser.add_argument("--batch-max-wait-ms", type=_non_negative, default=0.0,
                        help="adaptive batching: longest wait for a batch to fill")
    parser.add_argument("--backlog", type=_positive, default=2048, help="listen backlog")
    parser.add_argument("--keep-alive-seconds", type=_positive, default=75, help="idle keep-alive timeout")
    parser.add_argument("--drain-seconds", type=_positive, default=25,
                        help="on SIGTERM, how long requests in flight may take before they are cut")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    service = ModelService(args.model_name, args.model_version, args.model_dir, expected_sha256=args.sha256)
    metrics = ServerMetrics(args.model_name, args.model_version)
    # uvicorn restores the handlers it found and raises a caught signal again once drained: the
    # handler found must leave the exit code to this function.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.mark_stopping())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args, service, metrics))


if __name__ == "__main__":
    sys.exit(main())
