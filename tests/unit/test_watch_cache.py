"""The watch cache a pass observes: newest version wins, and the operator's own writes make
reads go to the API server until the watch shows them (no pod is ever created twice)."""

from __future__ import annotations

from kubernetes import client

from torchyard import labels as keys
from torchyard.kube.cache import EXPECTATION_SECONDS, CachedKube, WatchCache
from torchyard.kube.client import Kube
from torchyard.reconcile.observe import view_pod


def pod(name, version, job="digits", deleting=False):
    meta = {"namespace": "ml", "name": name, "resourceVersion": str(version), "labels": {keys.JOB_NAME: job}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def names(pods):
    return sorted(p["metadata"]["name"] for p in pods)


def test_an_older_event_does_not_replace_a_newer_one():
    cache = WatchCache()
    cache.seen_pod(pod("digits-worker-0", 7, deleting=True))
    cache.seen_pod(pod("digits-worker-0", 5))
    assert cache.pods("ml", "digits")[0]["metadata"]["resourceVersion"] == "7"


def test_a_create_in_flight_sends_reads_to_the_api_until_the_watch_shows_it():
    cache = WatchCache()
    cache.seen_pod(pod("digits-worker-0", 1))
    cache.expect("ml", "digits", "pod/digits-worker-1", "create")
    cache.settle("ml", "digits", "pod/digits-worker-1")
    assert cache.pods("ml", "digits") is None
    cache.seen_pod(pod("digits-worker-1", 2))
    assert names(cache.pods("ml", "digits")) == ["digits-worker-0", "digits-worker-1"]


def test_a_create_the_watch_showed_first_is_settled_by_the_write():
    cache = WatchCache()
    cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    cache.seen_pod(pod("digits-worker-0", 1))
    cache.settle("ml", "digits", "pod/digits-worker-0")
    assert names(cache.pods("ml", "digits")) == ["digits-worker-0"]


def test_a_delete_is_shown_by_the_pod_terminating_or_gone():
    cache = WatchCache()
    cache.seen_pod(pod("digits-worker-0", 1))
    cache.seen_pod(pod("digits-worker-1", 1))
    cache.expect("ml", "digits", "pod/digits-worker-0", "delete")
    cache.expect("ml", "digits", "pod/digits-worker-1", "delete")
    cache.seen_pod(pod("digits-worker-0", 2, deleting=True))
    assert cache.pods("ml", "digits") is None
    cache.seen_pod(pod("digits-worker-1", 2), deleted=True)
    assert names(cache.pods("ml", "digits")) == ["digits-worker-0"]


def test_an_expectation_the_watch_never_meets_lapses_and_the_next_read_asks_the_api_once():
    clock = Clock()
    cache = WatchCache(clock)
    cache.expect("ml", "digits", "service/digits", "create")
    cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    assert cache.awaits("ml", "digits") and not cache.lapsed("ml", "digits")
    clock.now += EXPECTATION_SECONDS
    # No longer waited for, but the cache may still lack what was created: the watch lags that far.
    assert not cache.awaits("ml", "digits") and cache.lapsed("ml", "digits")
    assert cache.service_exists("ml", "digits") is None and cache.pods("ml", "digits") is None
    # The API server's answer is kept: later passes read it here and create nothing twice.
    cache.reread("ml", "digits", "pod", [pod("digits-worker-0", 3)])
    assert names(cache.pods("ml", "digits")) == ["digits-worker-0"] and cache.lapsed("ml", "digits")
    cache.seen_service({"metadata": {"namespace": "ml", "name": "digits", "resourceVersion": "4"}})
    assert cache.service_exists("ml", "digits") is True, "the watch showing it ends the lapse too"
    assert not cache.lapsed("ml", "digits")


def test_a_failed_write_expects_nothing():
    cache = WatchCache()
    cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    cache.drop("ml", "digits", "pod/digits-worker-0")
    assert cache.pods("ml", "digits") == []


def test_a_relist_drops_what_a_watch_missed_but_keeps_what_it_saw_since():
    cache = WatchCache()
    job = {"metadata": {"namespace": "ml", "name": "digits", "resourceVersion": "3"}}
    cache.seen_job(job)
    cache.seen_pod(pod("digits-worker-0", 4))
    cache.seen_pod(pod("digits-worker-1", 20))
    cache.relist("ml", [job], [], [], (10, 10, 10))
    assert names(cache.pods("ml", "digits")) == ["digits-worker-1"]
    cache.relist("ml", [], [], [], (10, 10, 10))
    assert cache.job("ml", "digits") is None


def test_a_listing_older_than_a_deletion_the_watch_showed_does_not_bring_the_pod_back():
    # The pod was listed Terminating (version 5); the watch showed it deleted (version 6) before the
    # listing was applied. Brought back, it would stay in its gang until the next safety resync.
    cache = WatchCache()
    cache.seen_pod(pod("digits-worker-0", 4))
    cache.seen_pod(pod("digits-worker-0", 6), deleted=True)
    cache.relist("ml", [], [pod("digits-worker-0", 5, deleting=True)], [], (5, 5, 5))
    assert cache.pods("ml", "digits") == []
    # A pod of the same name made again afterwards is a new one, and kept.
    cache.seen_pod(pod("digits-worker-0", 7))
    assert names(cache.pods("ml", "digits")) == ["digits-worker-0"]
    # A listing newer than the deletion ends the guard.
    cache.seen_pod(pod("digits-worker-0", 8), deleted=True)
    cache.relist("ml", [], [], [], (9, 9, 9))
    cache.relist("ml", [], [pod("digits-worker-0", 10)], [], (10, 10, 10))
    assert names(cache.pods("ml", "digits")) == ["digits-worker-0"]


def test_the_cache_keeps_of_a_pod_all_that_a_pass_reads_and_little_else():
    full = {"metadata": {"namespace": "ml", "name": "digits-worker-1", "uid": "u1", "resourceVersion": "9",
                         "labels": {keys.JOB_NAME: "digits", keys.ROLE: "worker", keys.INDEX: "1", keys.ATTEMPT: "2"},
                         "annotations": {"big": "x" * 4096}, "managedFields": [{"manager": "kubelet"}],
                         "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30},
            "spec": {"nodeName": "node-1", "containers": [{"name": "trainer", "env": [{"name": "A", "value": "1"}]}]},
            "status": {"phase": "Failed", "reason": "Evicted", "message": "node low on memory",
                       "conditions": [{"type": "Ready", "status": "False"},
                                      {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": "0/3 nodes"}],
                       "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 3, "image": "t:1",
                                              "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                                       "message": "killed"}}}]}}
    cache = WatchCache()
    cache.seen_pod(full)
    [kept] = cache.pods("ml", "digits")
    assert view_pod(kept) == view_pod(full)
    assert "annotations" not in kept["metadata"] and "containers" not in kept["spec"]


def test_an_event_says_whether_it_changed_what_a_pass_reads():
    cache = WatchCache()
    running = {**pod("digits-worker-0", 1), "status": {"phase": "Running"}}
    assert cache.seen_pod(running)
    assert not cache.seen_pod({**running, "metadata": {**running["metadata"], "resourceVersion": "2"},
                               "status": {"phase": "Running", "podIP": "10.0.0.7"}})  # no pass reads the IP
    initialized = {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"},
                                                      {"type": "Ready", "status": "True", "lastProbeTime": "t1"}]}
    assert cache.seen_pod({**running, "metadata": {**running["metadata"], "resourceVersion": "2"}, "status": initialized})
    assert not cache.seen_pod({**running, "metadata": {**running["metadata"], "resourceVersion": "2"}, "status": {
        "phase": "Running", "conditions": [{"type": "ContainersReady", "status": "True"},  # nor these, nor the times
                                           {"type": "Ready", "status": "True", "lastProbeTime": "t2"}]}})
    assert cache.seen_pod({**running, "metadata": {**running["metadata"], "resourceVersion": "3"},
                           "status": {"phase": "Failed"}})
    assert cache.seen_pod(running, deleted=True) and not cache.seen_pod(running, deleted=True)
    job = {"metadata": {"namespace": "ml", "name": "digits", "resourceVersion": "5"}, "status": {"phase": "Running"}}
    assert cache.seen_job(job) and not cache.seen_job(job)  # the echo of the operator's own status write


def test_a_job_with_writes_in_flight_is_unsettled_until_the_watch_shows_them_or_they_expire():
    clock = Clock()
    cache = WatchCache(clock)
    assert cache.unsettled("ml", "digits") == 0
    cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    clock.now = 10
    assert cache.unsettled("ml", "digits") == EXPECTATION_SECONDS - 10
    cache.seen_pod(pod("digits-worker-0", 1))
    assert cache.unsettled("ml", "digits") == 0


def test_after_a_lapse_a_pass_reads_the_job_pods_from_the_api_once_and_then_from_the_cache(monkeypatch):
    clock, listed = Clock(), []
    monkeypatch.setattr(Kube, "list_job_pods", lambda self, ns, job: listed.append(job) or [pod("digits-worker-0", 3)])
    kube = CachedKube(WatchCache(clock), client.ApiClient())
    kube.cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    clock.now += EXPECTATION_SECONDS  # the watch lags: the pod it created is not in the cache yet
    assert kube.lapsed("ml", "digits") and kube.unsettled("ml", "digits") == 0
    assert names(kube.list_job_pods("ml", "digits")) == ["digits-worker-0"]
    assert names(kube.list_job_pods("ml", "digits")) == ["digits-worker-0"], "a later pass would not create it again"
    assert listed == ["digits"] and not kube.lapsed("ml", "digits")
