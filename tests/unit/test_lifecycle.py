"""kopf's settings as the operator sets them from its options."""

from __future__ import annotations

import itertools

import kopf

from torchyard.cli import OperatorOptions
from torchyard.handlers.lifecycle import WORKER_IDLE_SECONDS, NoDiffBase, configure
from torchyard.settings import Settings


def options(peering: str | None = None, namespaces: list[str] | None = None) -> OperatorOptions:
    return OperatorOptions(namespaces=namespaces, http_host="127.0.0.1", http_port=8080, peering=peering,
                           priority=0, workers=6, settings=Settings())


def configured(**kwargs) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure(settings, options(**kwargs))
    return settings


def test_an_idle_object_worker_ends_sooner_than_kopfs_default():
    # an idle worker holds its object's last event; kopf's default keeps it 5 s
    settings = configured()
    assert settings.queueing.idle_timeout == WORKER_IDLE_SECONDS
    assert WORKER_IDLE_SECONDS < kopf.OperatorSettings().queueing.idle_timeout


def test_workers_and_watch_retries_follow_the_options():
    settings = configured()
    assert settings.execution.max_workers == 6
    assert list(itertools.islice(settings.networking.error_backoffs, 6)) == [1, 2, 5, 10, 10, 10]


def test_without_peering_the_operator_runs_standalone():
    settings = configured()
    assert settings.peering.standalone and not settings.peering.mandatory


def test_with_peering_every_replica_must_join_it_at_the_scope_it_watches():
    cluster = configured(peering="torchyard")
    assert (cluster.peering.name, cluster.peering.mandatory, cluster.peering.clusterwide) == ("torchyard", True, True)
    assert configured(peering="torchyard", namespaces=["team-a"]).peering.clusterwide is False


def test_kopf_keeps_no_diff_base_and_no_handler_needs_one():
    # kopf deep-copies every event's body for change handlers; the operator has only event
    # handlers, so it skips that (NoDiffBase). A change handler, daemon or timer would need it back.
    import importlib

    assert isinstance(configured().persistence.diffbase_storage, NoDiffBase)
    for module in ("lifecycle", "modeldeployment", "nodes", "trainingjob", "kueue"):
        importlib.import_module(f"torchyard.handlers.{module}")
    registry = kopf.get_default_registry()
    assert registry._watching.get_all_handlers(), "the event handlers are registered"
    assert list(registry._changing.get_all_handlers()) == [], "a change handler needs kopf's diff base"
    assert list(registry._spawning.get_all_handlers()) == [], "a daemon or timer needs kopf's diff base"
