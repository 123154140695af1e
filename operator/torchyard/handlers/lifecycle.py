"""Start-up and clean-up: kopf's settings, the API client, the HTTP endpoint, the resync loop."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import kopf

from torchyard.handlers.resync import resync_forever
from torchyard.http import Server, build_app
from torchyard.jobs import JobReconciler
from torchyard.kube.client import Kube, load_config
from torchyard.nodes import NodeHealth
from torchyard.peering import acting
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
    kube = Kube()
    memo.nodes = NodeHealth()
    memo.jobs = JobReconciler(kube, options.settings, memo.nodes)
    memo.serving = ServingReconciler(kube, options.settings)
    memo.server = Server(build_app(memo.jobs.accept_progress), options.http_host, options.http_port)
    await memo.server.start()

    def this_replica_acts() -> bool:
        if not options.peering:
            return True
        scope = options.namespaces[0] if options.namespaces else None
        return acting(kube.peers(options.peering, scope), options.priority, datetime.now(timezone.utc))

    interval = options.settings.resync_seconds
    memo.resync = asyncio.create_task(resync_forever(
        "TrainingJob", kube.list_jobs, memo.jobs.reconcile, options.namespaces, interval, this_replica_acts))
    memo.serving_resync = asyncio.create_task(resync_forever(
        "ModelDeployment", memo.serving.kube.list_model_deployments, memo.serving.reconcile, options.namespaces,
        interval, this_replica_acts))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    memo.resync.cancel()
    memo.serving_resync.cancel()
    memo.serving.stop()
    await memo.server.stop()
