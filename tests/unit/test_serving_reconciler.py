"""The serving reconciler's own rules, over an in-memory API: the order of writes, golden requests
before a switch, and status patches that delete what the decision dropped."""

from __future__ import annotations

from torchyard.builders.serving import build_deployment
from torchyard.serving import GOLDEN_RETRY_SECONDS, ServingReconciler, status_patch
from torchyard.settings import Settings

from serving import md, version

GOLDEN = {"goldenRequest": {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}}


class FakeKube:
    """The reconciler's API calls over dicts; every write is logged in order."""

    def __init__(self, spec: dict, status: dict, versions, ready: dict[int, bool], selected: int | None):
        self.md = {"apiVersion": "torchyard.dev/v1alpha1", "kind": "ModelDeployment",
                   "metadata": {"name": "digits", "namespace": "ml", "uid": "md-uid", "generation": 1},
                   "spec": {"modelName": "digits", **spec}, "status": status}
        self.versions = [{"metadata": {"name": v.name}, "spec": {
            "modelName": "digits", "version": v.version, "metrics": dict(v.metrics), "metric": v.metric,
            "artifact": {"path": v.artifact.path, "sha256": v.artifact.sha256, "claimName": v.artifact.claim_name}}}
            for v in versions]
        parsed = md(**spec)
        self.deployments = {v: build_deployment(parsed, version(v), 1, Settings()) for v in ready}
        self.pods = [{"metadata": {"name": f"digits-v{v}-x", "labels": {"torchyard.dev/version": str(v)}},
                      "status": {"podIP": f"10.0.0.{v}", "conditions": [{"type": "Ready", "status": str(ok)}]}}
                     for v, ok in ready.items()]
        self.service = None if selected is None else {
            "metadata": {"labels": {"torchyard.dev/model-deployment": "digits"}},
            "spec": {"selector": {"torchyard.dev/version": str(selected)}}}
        self.writes: list[tuple] = []
        self.others: list[dict] = []  # other ModelDeployments in the namespace
        self.fresh_reads = 0  # ModelVersions listed from the API server

    def get_model_deployment(self, namespace, name):
        return self.md

    def list_model_deployments(self, namespace):
        return [self.md, *self.others]

    def list_model_versions(self, namespace, selector):
        return self.versions

    def list_model_versions_now(self, namespace):
        self.fresh_reads += 1
        return self.versions

    def list_deployments(self, namespace, selector):
        return list(self.deployments.values())

    def list_pods(self, namespace, selector):
        return self.pods

    def get_service(self, namespace, name):
        return self.service

    def __getattr__(self, name):  # every other call is a write: record it, without the namespace
        def write(*args):
            self.writes.append((name, *(args[1:] if args and args[0] == "ml" else args)))
        return write


def reconciler(kube, golden=lambda md, v, pod: True):
    return ServingReconciler(kube, Settings(), golden=golden)


def test_failover_patches_the_selector_before_anything_else():
    previous = {"activeVersion": 2, "targetVersion": 2, "promotedVersion": 2, "evaluatedVersion": 2,
                "unhealthySince": "2020-01-01T00:00:00.000000Z", "history": [], "conditions": []}
    kube = FakeKube({}, previous, [version(1), version(2)], {1: True, 2: False}, selected=2)
    reconciler(kube).reconcile("ml", "digits")
    assert kube.writes[0] == ("patch_service", "digits", {"spec": {"selector": {
        "torchyard.dev/model": "digits", "torchyard.dev/model-deployment": "digits", "torchyard.dev/version": "1"}}})
    status = next(w for w in kube.writes if w[0] == "patch_model_deployment_status")[2]
    assert status["activeVersion"] == 1 and status["history"][-1]["reason"] == "failover"
    assert status["unhealthySince"] is None  # merge patch: null deletes the field


def test_a_golden_request_that_fails_sends_failover_to_the_next_standby():
    asked = []

    def golden(deployment, v, pod):
        asked.append((v, pod["status"]["podIP"]))
        return v != 2

    previous = {"activeVersion": 3, "targetVersion": 3, "promotedVersion": 3, "evaluatedVersion": 3,
                "unhealthySince": "2020-01-01T00:00:00.000000Z", "history": [], "conditions": []}
    kube = FakeKube({"standby": 2, "verification": GOLDEN}, previous, [version(1), version(2), version(3)],
                    {1: True, 2: True, 3: False}, selected=3)
    reconciler(kube, golden).reconcile("ml", "digits")
    assert asked == [(2, "10.0.0.2"), (1, "10.0.0.1")]
    assert kube.writes[0][0] == "patch_service" and kube.writes[0][2]["spec"]["selector"]["torchyard.dev/version"] == "1"


def test_a_golden_request_that_reaches_no_pod_fails_the_switch():
    # Fail closed: a check that was asked for and could not be made never counts as verified.
    for unreachable in (False, None):
        kube = FakeKube({"verification": GOLDEN}, {}, [version(1)], {1: True}, selected=None)
        reconciler(kube, golden=lambda md, v, pod: unreachable).reconcile("ml", "digits")
        assert not [w for w in kube.writes if w[0] in ("create_service", "patch_service")], unreachable


def test_a_second_model_deployment_of_a_served_model_only_says_so():
    kube = FakeKube({}, {}, [version(1)], {1: True}, selected=None)
    kube.md["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    kube.others = [{"metadata": {"name": "digits-prod", "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "spec": {"modelName": "digits"}}]
    reconciler(kube).reconcile("ml", "digits")
    assert [w[0] for w in kube.writes] == ["patch_model_deployment_status", "emit_event"]
    degraded = next(c for c in kube.writes[0][2]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "DuplicateModel")
    assert "already served by ModelDeployment digits-prod" in degraded["message"]
    assert kube.writes[1][2:4] == ("Warning", "DuplicateModel")


def test_nothing_is_written_when_nothing_changed():
    kube = FakeKube({}, {}, [version(1)], {1: True}, selected=None)
    reconciler(kube).reconcile("ml", "digits")
    settled = next(w for w in kube.writes if w[0] == "patch_model_deployment_status")[2]
    kube.md["status"] = {k: v for k, v in settled.items() if v is not None}
    kube.service = {"metadata": {"labels": {"torchyard.dev/model-deployment": "digits"}},
                    "spec": {"selector": {"torchyard.dev/version": "1"}}}
    for v in kube.versions:
        v["status"] = next(w[2] for w in kube.writes if w[0] == "patch_model_version_status")
    kube.writes.clear()
    reconciler(kube).reconcile("ml", "digits")
    assert kube.writes == []


def test_status_patch_nulls_dropped_keys_only():
    assert status_patch({"a": 1, "b": 2}, {"a": 3}) == {"a": 3, "b": None}


def test_a_service_of_the_models_name_made_by_someone_else_is_never_taken_over():
    kube = FakeKube({}, {}, [version(1)], {1: True}, selected=None)
    # A TrainingJob's headless Service: named after the job, which a model is named after by default.
    kube.service = {"metadata": {"name": "digits", "ownerReferences": [{"kind": "TrainingJob", "name": "digits"}]},
                    "spec": {"clusterIP": "None", "selector": {"torchyard.dev/job-name": "digits"}}}
    reconciler(kube).reconcile("ml", "digits")
    assert not [w for w in kube.writes if w[0] in ("patch_service", "create_service")]
    (_, _, status), = [w for w in kube.writes if w[0] == "patch_model_deployment_status"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec" and degraded["message"].startswith("spec.modelName")
    assert "TrainingJob digits" in degraded["message"]


def test_a_grace_period_queues_the_next_pass_for_when_it_ends():
    kube = FakeKube({"failover": {"gracePeriodSeconds": 30}}, {"activeVersion": 2, "history": [], "conditions": []},
                    [version(1), version(2)], {1: True, 2: False}, selected=2)
    serving, due = reconciler(kube), []
    serving.on_due = lambda key, delay: due.append((key, delay))
    serving.reconcile("ml", "digits")
    assert not [w for w in kube.writes if w[0] == "patch_service"]
    assert len(due) == 1 and due[0][0] == ("ml", "digits") and 29 < due[0][1] <= 30


def test_a_failed_golden_request_is_asked_again_later_with_no_event():
    kube = FakeKube({"verification": GOLDEN}, {}, [version(1)], {1: True}, selected=None)
    serving, due = reconciler(kube, golden=lambda md, v, pod: False), []
    serving.on_due = lambda key, delay: due.append((key, delay))
    serving.reconcile("ml", "digits")
    assert due == [(("ml", "digits"), GOLDEN_RETRY_SECONDS)]


def test_only_the_first_choice_of_a_version_lists_the_model_versions_from_the_api_server():
    kube = FakeKube({}, {}, [version(1), version(2)], {1: True, 2: True}, selected=None)
    reconciler(kube).reconcile("ml", "digits")
    assert kube.fresh_reads == 1
    kube.md["status"] = {"activeVersion": 2, "promotedVersion": 2, "evaluatedVersion": 2}
    reconciler(kube).reconcile("ml", "digits")
    assert kube.fresh_reads == 1


def test_a_switch_whose_record_failed_is_recorded_by_the_next_pass():
    # The traffic moved, then the API server went away before the status (with the switch in its
    # history) was written; the next pass finds the Service on v1 already and decides no switch.
    import kopf
    import pytest

    class Flaky(FakeKube):
        fail = True

        def patch_model_version_status(self, namespace, name, status):
            if self.fail:
                self.fail = False
                raise kopf.TemporaryError("connection refused")
            self.writes.append(("patch_model_version_status", name, status))

    previous = {"activeVersion": 2, "targetVersion": 2, "promotedVersion": 2, "evaluatedVersion": 2,
                "history": [], "conditions": []}
    kube = Flaky({"activeVersion": 1}, previous, [version(1), version(2)], {1: True, 2: True}, selected=2)
    serving = reconciler(kube)
    with pytest.raises(kopf.TemporaryError):
        serving.reconcile("ml", "digits")
    assert kube.writes[0][0] == "patch_service"
    assert not [w for w in kube.writes if w[0] in ("patch_model_deployment_status", "emit_event")]

    kube.service["spec"]["selector"]["torchyard.dev/version"] = "1"  # what the watch shows next
    kube.writes.clear()
    serving._backoff.succeeded(("ml", "digits"))  # the pass's retry is due
    serving.reconcile("ml", "digits")
    assert not [w for w in kube.writes if w[0] == "patch_service"], "no second switch"
    status = next(w for w in kube.writes if w[0] == "patch_model_deployment_status")[2]
    assert status["activeVersion"] == 1 and status["previousVersion"] == 2
    assert [(e["from"], e["to"], e["reason"]) for e in status["history"]] == [(2, 1, "manual")]
    assert [w[3] for w in kube.writes if w[0] == "emit_event"] == ["RolledOut"]
