"""The operator's /metrics, scraped while it runs a job through its life: the values move as a
user watching a dashboard would expect (docs/metrics.md says what each one means)."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.waits import wait_for

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"


class Scrape:
    """One scrape of the operator's /metrics, with a lookup by sample name and labels."""

    def __init__(self, url: str):
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
        return sum(s.value for s in self.samples
                   if s.name == name and labels.items() <= s.labels.items())


def create(cluster, namespace: str, name: str) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"strategy": "AllReduce", "worker": {"replicas": 2},
                     "runPolicy": {"backoffLimit": 3, "restartPolicy": "OnFailure"},
                     "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def job_status(cluster, namespace: str, name: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


def running_again(cluster, namespace: str, name: str, attempt: int):
    return lambda: (job_status(cluster, namespace, name).get("phase") == "Running"
                    and job_status(cluster, namespace, name).get("attempt") == attempt)


@pytest.mark.timeout(240)
def test_operator_metrics_move_with_the_jobs_life(cluster, crds, namespace, operator, faults):
    ns = {"namespace": namespace}
    before = Scrape(operator.url)
    assert before.value("torchyard_trainingjobs", **ns) == 0

    create(cluster, namespace, "watched")
    wait_for(running_again(cluster, namespace, "watched", 0), "job Running")
    running = wait_for(lambda: (s := Scrape(operator.url)).value("torchyard_trainingjobs", phase="Running", **ns) == 1
                       and s, "the Running gauge at 1")
    assert running.value("torchyard_trainingjobs", **ns) == 1, "one job, in one phase only"
    assert running.value("torchyard_trainingjob_phase_transitions_total", phase="Running", **ns) == 1
    assert running.value("torchyard_trainingjob_time_to_running_seconds_count") == \
        before.value("torchyard_trainingjob_time_to_running_seconds_count") + 1
    reconciles = running.value("torchyard_reconcile_duration_seconds_count", kind="TrainingJob")
    assert reconciles > before.value("torchyard_reconcile_duration_seconds_count", kind="TrainingJob")
    assert running.value("torchyard_reconcile_duration_seconds_sum", kind="TrainingJob") > 0
    queues = {s.labels["queue"] for s in running.samples if s.name == "torchyard_workqueue_depth"}
    assert queues == {"trainingjobs", "modeldeployments"}, "each work queue's depth is exported"

    # The program fails (exit 1): a restart charged to the user.
    faults.terminate_container(namespace, "watched-worker-1", exit_code=1, message="RuntimeError: boom")
    wait_for(running_again(cluster, namespace, "watched", 1), "the gang running again")
    # The operator counts a transition once its status write is answered, a moment after the
    # API server shows the phase: wait for the count, then check that nothing else moved.
    after_user = wait_for(lambda: (s := Scrape(operator.url)).value(
        "torchyard_trainingjob_restarts_total", cause="user", **ns) == 1 and s.value(
        "torchyard_trainingjob_phase_transitions_total", phase="Running", **ns) == 2 and s,
        "a user restart and the second Running counted")
    assert after_user.value("torchyard_trainingjob_restarts_total", cause="infrastructure", **ns) == 0
    assert after_user.value("torchyard_trainingjob_phase_transitions_total", phase="Restarting", **ns) == 1
    assert after_user.value("torchyard_reconcile_duration_seconds_count", kind="TrainingJob") > reconciles
    # Only the first attempt's start-up is a time-to-running observation.
    assert after_user.value("torchyard_trainingjob_time_to_running_seconds_count") == \
        running.value("torchyard_trainingjob_time_to_running_seconds_count")

    # The cluster takes a pod away (an eviction): a restart the user is not charged for.
    faults.evict(namespace, "watched-worker-0")
    wait_for(running_again(cluster, namespace, "watched", 2), "the gang running after the eviction")
    after_eviction = wait_for(lambda: (s := Scrape(operator.url)).value(
        "torchyard_trainingjob_restarts_total", cause="infrastructure", **ns) == 1 and s, "an infrastructure restart")
    assert after_eviction.value("torchyard_trainingjob_restarts_total", cause="user", **ns) == 1

    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "watched")
    wait_for(lambda: Scrape(operator.url).value("torchyard_trainingjobs", **ns) == 0, "the deleted job leaves the gauge")


def test_a_job_the_operator_cannot_run_is_counted_as_failed(cluster, crds, namespace, operator):
    ns = {"namespace": namespace}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": "bad"},
            "spec": {"worker": {"replicas": 1}, "trainer": {"model": {"name": "no-such-model"},
                                                            "dataset": {"name": "digits"}}}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    scrape = wait_for(lambda: (s := Scrape(operator.url)).value("torchyard_trainingjobs", phase="Failed", **ns) == 1
                      and s, "the invalid job counted as Failed")
    assert scrape.value("torchyard_trainingjob_phase_transitions_total", phase="Failed", **ns) == 1
    assert scrape.value("torchyard_trainingjobs", phase="Running", **ns) == 0
