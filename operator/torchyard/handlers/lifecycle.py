"""Start-up and clean-up: kopf's settings, the API client, the HTTP endpoint, the resync loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import datetime, timezone

import kopf

from torchyard import metrics
from torchyard.fanout import Fanout
from torchyard.http import Server, build_app
from torchyard.jobs import JobReconciler
from torchyard.kube.cache import CachedKube, WatchCache
from torchyard.kube.client import Kube, load_config
from torchyard.kube.serving_cache import MODEL_DEPLOYMENTS, CachedServingKube, ServingCache
from torchyard.nodes import NodeHealth
from torchyard.peering import acting
from torchyard.queueing import start_queueing
from torchyard.relist import Relister
from torchyard.serving import ServingReconciler
from torchyard.workqueue import WorkQueue

log = logging.getLogger(__name__)
# Writes in flight at once from all reconcile workers' passes (kube/client.py keeps a connection
# for each); 8 workers each starting a gang of a Service and three pods fit.
FANOUT_THREADS = 32
# How long kopf keeps an object's event worker after its last event. An idle worker holds that
# event as parsed (a pod's is tens of KB), so in a burst every object with an event in the last
# idle period costs one: kopf's default of 5 s raised the peak RSS of a burst measurably
# (docs/operator.md#memory). A worker costs a task to start again; events of one object that
# arrive together still go to one worker.
WORKER_IDLE_SECONDS = 0.5
# ModelDeployments' passes have workers of their own, so a failover never waits behind a burst of
# TrainingJobs; a pass is a few cache reads and, rarely, a handful of writes.
SERVING_WORKERS = 4


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's store of the last state its change handlers saw, for an operator that has none.

    For every watch event kopf deep-copies the object's body to compare it with that state, before
    it calls any handler; the operator only has event handlers (each feeds its own watch cache), so
    the copies are pure cost: about a third of the operator's CPU in a burst of jobs
    (docs/operator.md#cpu). This store builds and keeps nothing. A change handler (kopf.on.create,
    on.update, a daemon, a timer) needs kopf's own store back: tests/unit/test_lifecycle.py fails
    when one is registered.
    """

    def build(self, *, body, extra_fields=None):
        return None

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


class RetryForever:
    """kopf's backoffs between attempts of one API request: 1, 2, 5, then every 10 s, never
    exhausted. kopf ends a watch whose request ran out of attempts and never starts it again, so an
    API server down (or refusing, while its RBAC loads after a restart) for longer than a finite
    list would leave the operator blind while it looks healthy."""

    def __iter__(self):
        return itertools.chain((1, 2, 5), itertools.repeat(10))


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    options = memo.options
    configure(settings, options)
    load_config()
    kube = Kube()
    memo.cache = WatchCache()
    cached = CachedKube(memo.cache)
    for namespace in options.namespaces or [None]:  # before any watch event: the cache's seed
        await asyncio.to_thread(cached.relist, namespace)
    memo.nodes = NodeHealth()
    memo.fanout = Fanout(FANOUT_THREADS)
    memo.jobs = JobReconciler(cached, options.settings, memo.nodes, memo.fanout)
    if options.kueue:  # seeded before the first pass: a running queued job must find its Workload
        memo.queueing = await asyncio.to_thread(start_queueing, kube, options.settings, options.namespaces)
        memo.jobs.queueing = memo.queueing
    memo.queue = WorkQueue(lambda key: memo.jobs.take(key, memo.queue.add_after), options.workers)
    memo.jobs.on_due = memo.queue.add_after
    metrics.QUEUE_DEPTH.labels(queue="trainingjobs").set_function(memo.queue.depth)
    memo.queue.start()
    memo.relister = Relister(lambda: relist_all(cached, options.namespaces),
                             lambda: queue_all(memo.queue, memo.cache))
    memo.serving_queue, served = await start_serving(memo, options)
    memo.server = Server(build_app(memo.jobs.accept_progress), options.http_host, options.http_port)
    await memo.server.start()

    was_acting = [True]

    def this_replica_acts() -> bool:
        """With peering, a standby's watches pause: on taking over it lists its cache afresh."""
        if not options.peering:
            return True
        scope = options.namespaces[0] if options.namespaces else None
        acts = acting(kube.peers(options.peering, scope), options.priority, datetime.now(timezone.utc))
        if acts and not was_acting[0]:
            relist_all(cached, options.namespaces)
            relist_all(served, options.namespaces)
        was_acting[0] = acts
        return acts

    memo.resync = asyncio.create_task(safety_resync_forever(
        cached, memo.queue, options.namespaces, options.settings.job_resync_seconds, this_replica_acts))
    memo.serving_resync = asyncio.create_task(safety_resync_forever(
        served, memo.serving_queue, options.namespaces, options.settings.resync_seconds, this_replica_acts,
        "ModelDeployments", lambda: served.cache.keys(MODEL_DEPLOYMENTS)))


async def start_serving(memo: kopf.Memo, options) -> tuple[WorkQueue, CachedServingKube]:
    """The ModelDeployments' watch cache, seeded before any watch event, and their work queue."""
    memo.serving_cache = ServingCache()
    served = CachedServingKube(memo.serving_cache)
    for namespace in options.namespaces or [None]:
        await asyncio.to_thread(served.relist, namespace)
    memo.serving = ServingReconciler(served, options.settings)
    queue = WorkQueue(lambda key: memo.serving.take(key, queue.add_after), SERVING_WORKERS)
    memo.serving.on_due = queue.add_after
    metrics.QUEUE_DEPTH.labels(queue="modeldeployments").set_function(queue.depth)
    queue.start()
    memo.serving_relister = Relister(lambda: relist_all(served, options.namespaces),
                                     lambda: [queue.add(key) for key in memo.serving_cache.keys(MODEL_DEPLOYMENTS)])
    return queue, served


def configure(settings: kopf.OperatorSettings, options) -> None:
    """kopf's settings for the operator's options (cli.OperatorOptions)."""
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = options.workers
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = RetryForever()
    settings.persistence.diffbase_storage = NoDiffBase()
    if options.peering:
        settings.peering.name = options.peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = options.namespaces is None
    else:
        settings.peering.standalone = True


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    memo.resync.cancel()
    memo.queue.stop()
    memo.fanout.stop()
    memo.serving_resync.cancel()
    memo.serving_queue.stop()
    await memo.server.stop()


def relist_all(cached: CachedKube | CachedServingKube, namespaces: list[str] | None) -> None:
    for namespace in namespaces or [None]:
        cached.relist(namespace)


def queue_all(queue: WorkQueue, cache: WatchCache) -> None:
    for key in cache.job_keys():
        queue.add(key)


async def safety_resync_forever(cached: CachedKube | CachedServingKube, queue: WorkQueue, namespaces: list[str] | None,
                                interval: float, acts, kind: str = "TrainingJobs", keys=None) -> None:
    """Rarely, list the cache afresh (a watch may have missed a deletion) and queue every object
    of the kind (`keys()`; the TrainingJobs by default)."""
    keys = keys or cached.cache.job_keys
    while True:
        await asyncio.sleep(interval)
        try:
            if not await asyncio.to_thread(acts):
                continue
            for namespace in namespaces or [None]:
                await asyncio.to_thread(cached.relist, namespace)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.warning("safety resync of %s: %s", kind, exc)
        except Exception:  # a connection reset while listing: nothing may end the loop
            log.exception("safety resync of %s failed; queueing from the cache as it is", kind)
        for key in keys():
            queue.add(key)
