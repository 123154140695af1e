"""spec.runPolicy.managedBy: a job another controller runs (MultiKueue's dispatcher) is left alone."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from jobs import ALLREDUCE_CPU
from test_job_reconciler import FakeKube
from torchyard.api.trainingjob import CONTROLLER_NAME, managed_elsewhere, parse_training_job
from torchyard.jobs import JobReconciler
from torchyard.settings import Settings

ROOT_DIR = pathlib.Path(__file__).resolve().parents[2]


def with_manager(manager):
    obj = copy.deepcopy(ALLREDUCE_CPU)
    obj["spec"]["runPolicy"] = {"managedBy": manager}
    return obj


@pytest.mark.parametrize("obj, elsewhere", [
    pytest.param(ALLREDUCE_CPU, None, id="unset"),
    pytest.param(with_manager(CONTROLLER_NAME), None, id="this-operator"),
    pytest.param(with_manager("kueue.x-k8s.io/multikueue"), "kueue.x-k8s.io/multikueue", id="multikueue"),
    pytest.param({**with_manager("kueue.x-k8s.io/multikueue"), "spec": {"runPolicy": {"managedBy": "x/y"},
                                                                        "worker": "not an object"}},
                 "x/y", id="malformed-but-not-ours"),
])
def test_managed_elsewhere_names_another_controller_only(obj, elsewhere):
    assert managed_elsewhere(obj) == elsewhere


def test_the_field_is_parsed():
    assert parse_training_job(with_manager("kueue.x-k8s.io/multikueue")).spec.run_policy.managed_by == \
        "kueue.x-k8s.io/multikueue"
    assert parse_training_job(ALLREDUCE_CPU).spec.run_policy.managed_by is None


def test_the_reconciler_makes_no_pods_and_writes_no_status_for_a_job_managed_elsewhere():
    kube = FakeKube({}, [])
    kube.job["spec"]["runPolicy"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    JobReconciler(kube, Settings()).reconcile("ml", "digits")
    assert kube.writes == []
    kube.job["spec"]["runPolicy"]["managedBy"] = CONTROLLER_NAME
    JobReconciler(kube, Settings()).reconcile("ml", "digits")
    assert [w[0] for w in kube.writes if w[0] == "create_pod"] == ["create_pod", "create_pod"]


def test_the_crd_and_its_chart_copy_declare_it_immutable():
    for path in ("crds/trainingjob.yaml", "charts/torchyard/crds/trainingjob.yaml"):
        crd = yaml.safe_load((ROOT_DIR / path).read_text())
        run_policy = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
            "runPolicy"]
        assert run_policy["properties"]["managedBy"]["type"] == "string"
        [rule] = [r for r in run_policy["x-kubernetes-validations"] if r["fieldPath"] == ".managedBy"]
        assert "oldSelf.managedBy" in rule["rule"]
