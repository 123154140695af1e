"""1. The chart installs with the locally built images; the operator runs in its pod under the
chart's own ServiceAccount, with the rights it needs in the namespace it watches."""
from __future__ import annotations

from kubernetes import client

from e2e_kit import GROUP


def operator_pod(installed):
    deployment = installed.apps.read_namespaced_deployment(installed.release, installed.release_namespace)
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    pods = installed.core.list_namespaced_pod(installed.release_namespace, label_selector=selector).items
    return deployment, [p for p in pods if p.metadata.deletion_timestamp is None]


def test_the_operator_runs_restricted_from_its_image(installed):
    deployment, pods = operator_pod(installed)
    assert deployment.status.available_replicas == 1, deployment.status
    assert len(pods) == 1, [p.metadata.name for p in pods]
    pod = pods[0]
    container = pod.spec.containers[0]
    assert container.image == installed.image("operator")
    status = pod.status.container_statuses[0]
    assert status.ready and status.restart_count == 0, status
    assert pod.spec.security_context.run_as_non_root and container.security_context.read_only_root_filesystem
    env = {e.name: e.value for e in container.env or []}
    assert env.get("TORCHYARD_TRAINER_IMAGE") == installed.image("trainer"), "the chart's trainer image is the local one"
    assert "ok" in installed.service_get("/healthz")
    assert "torchyard_reconcile_duration_seconds" in installed.service_get("/metrics")


def test_the_operator_runs_under_the_charts_service_account(installed):
    _, pods = operator_pod(installed)
    account = pods[0].spec.service_account_name
    sa = installed.core.read_namespaced_service_account(account, installed.release_namespace)
    annotations = sa.metadata.annotations or {}
    assert annotations.get("meta.helm.sh/release-name") == installed.release, (
        f"ServiceAccount {account} was not made by release {installed.release}: {annotations}")
    user = f"system:serviceaccount:{installed.release_namespace}:{account}"
    needed = [("", "pods", "create"), ("", "services", "create"), ("apps", "deployments", "create"),
              (GROUP, "trainingjobs", "watch"), (GROUP, "modelversions", "create")]
    refused = [f"{verb} {resource}" for group, resource, verb in needed if not can(installed, user, group, resource, verb)]
    assert refused == [], f"{user} may not do this in {installed.namespace}"
    assert not can(installed, user, "", "secrets", "delete", namespace="kube-system"), (
        "the operator's account may delete Secrets in kube-system: the chart's RBAC is wider than it needs")


def can(installed, user: str, group: str, resource: str, verb: str, namespace: str | None = None) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=["system:serviceaccounts"],
        resource_attributes=client.V1ResourceAttributes(
            group=group, resource=resource, verb=verb, namespace=namespace or installed.namespace)))
    return client.AuthorizationV1Api(installed.api).create_subject_access_review(review).status.allowed
