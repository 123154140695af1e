"""The operator fixture: the chart's RBAC is what the operator gets, and nothing more."""
from __future__ import annotations

import urllib.request

import pytest
from kubernetes import client

from harness.cluster import Cluster
from harness.operator import install_rbac, token_kubeconfig

pytestmark = pytest.mark.integration

GRANTED = [  # verb, group, resource, subresource
    ("create", "", "pods", ""), ("delete", "", "pods", ""),
    ("watch", "torchyard.dev", "trainingjobs", ""), ("patch", "torchyard.dev", "trainingjobs", "status"),
    ("create", "torchyard.dev", "modelversions", ""), ("patch", "torchyard.dev", "modelversions", "status"),
    ("create", "apps", "deployments", ""), ("delete", "torchyard.dev", "trainingjobs", ""),
    ("create", "", "events", ""), ("list", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("patch", "", "services", ""), ("patch", "torchyard.dev", "modeldeployments", "status"),
]
DENIED = [
    ("get", "", "secrets", ""), ("create", "torchyard.dev", "trainingjobs", ""),
    ("delete", "torchyard.dev", "modelversions", ""), ("update", "", "pods", ""),
    ("patch", "", "pods", "status"), ("create", "", "serviceaccounts", ""),
    ("create", "rbac.authorization.k8s.io", "rolebindings", ""), ("delete", "", "namespaces", ""),
    ("update", "torchyard.dev", "modeldeployments", "status"), ("patch", "torchyard.dev", "modeldeployments", ""),
    ("patch", "kopf.dev", "kopfpeerings", ""), ("list", "discovery.k8s.io", "endpointslices", ""),
]


def allowed(as_operator: Cluster, verb: str, group: str, resource: str, subresource: str) -> bool:
    """Ask the API server, as the operator, whether it may do this in a namespace it has never seen."""
    review = {"spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                              "subresource": subresource, "namespace": "any-namespace"}}}
    answer = client.AuthorizationV1Api(as_operator.api).create_self_subject_access_review(review)
    return answer.status.allowed


def test_operator_token_has_exactly_the_charts_rights(cluster, crds, tmp_path):
    install_rbac(cluster)
    as_operator = Cluster(token_kubeconfig(cluster, tmp_path / "operator.kubeconfig"), local=cluster.local)
    assert [rule for rule in GRANTED if not allowed(as_operator, *rule)] == []
    assert [rule for rule in DENIED if allowed(as_operator, *rule)] == []
    whoami = as_operator.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert whoami == "system:serviceaccount:torchyard-system:torchyard"
    as_operator.close()


def test_operator_fixture_serves_healthz(operator):
    with urllib.request.urlopen(operator.url + "/healthz", timeout=5) as response:
        assert response.status == 200
    assert operator.running
