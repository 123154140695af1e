"""Start-up and clean-up: kopf's settings, the API client, the HTTP endpoint, the resync loop."""

from __future__ import annotations

import asyncio
import logging

import kopf

from torchyard.handlers.modeldeployment import resync_serving
from torchyard.handlers.trainingjob import resync_forever
from torchyard.http import Server, build_app
from torchyard.jobs import JobReconciler
from torchyard.kube.client import Kube, load_config
from torchyard.progress import ProgressStore
from torchyard.serving import ServingReconciler


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    options = memo.options
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = options.workers
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    if options.peering:
        settings.peering.name = options.peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = options.namespaces is None
    else:
        settings.peering.standalone = True

    load_config()
    store = ProgressStore()
    memo.jobs = JobReconciler(Kube(), options.settings, store)
    app = build_app(store, options.settings.progress_key, lambda ns, n: memo.jobs.uids.get((ns, n)))
    memo.server = Server(app, options.http_host, options.http_port)
    await memo.server.start()
    memo.resync = asyncio.create_task(resync_forever(memo.jobs, options.namespaces, options.settings.resync_seconds))
    memo.serving = ServingReconciler(memo.jobs.kube, options.settings)
    memo.serving_resync = asyncio.create_task(
        resync_serving(memo.serving, options.namespaces, options.settings.resync_seconds))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    memo.resync.cancel()
    memo.serving_resync.cancel()
    memo.serving.stop()
    await memo.server.stop()
