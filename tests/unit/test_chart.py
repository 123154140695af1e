"""The Helm chart, rendered with `helm template` and checked object by object.

What a cluster administrator relies on: the RBAC is exactly what the operator calls and never a
wildcard; the operator pod meets the `restricted` Pod Security level; the environment it gets
parses into the settings the values asked for; namespaced mode and peering change the arguments
and the rules together; the CRDs are the repository's own. Installing, upgrading and uninstalling
on a real API server is tests/integration/test_helm.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "torchyard"
RELEASE, NAMESPACE = "torchyard", "torchyard-system"


def helm_binary() -> str:
    """$HELM, the one hack/build-control-plane.sh built, or helm on PATH."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    cached = subprocess.run([sys.executable, str(ROOT / "hack" / "local-cluster.py"), "which", "helm"],
                            capture_output=True, text=True, timeout=60)
    found = cached.stdout.strip() if cached.returncode == 0 else shutil.which("helm")
    if not found:
        pytest.fail("helm not found: run `bash hack/build-control-plane.sh` (or set HELM)", pytrace=False)
    return found


HELM = helm_binary()


def helm(*args: str, values: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [HELM, *args] + (["-f", "-"] if values is not None else [])
    result = subprocess.run(cmd, input=yaml.safe_dump(values) if values is not None else None,
                            capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result


def render(values: dict | None = None) -> list[dict]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values or {}).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
             and (namespace is None or d["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def grants(role: dict) -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every rule of a (Cluster)Role, resourceNames-restricted ones marked."""
    out = set()
    for rule in role["rules"]:
        suffix = "@" + ",".join(rule["resourceNames"]) if rule.get("resourceNames") else ""
        out |= {(g, r + suffix, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


# What the operator calls, and where (kube/client.py unless said otherwise). A rule the chart grants
# beyond this is a right nobody uses; a call missing from it fails the integration tests.
NAMESPACED_NEEDS = {
    ("torchyard.dev", "trainingjobs", "get"),  # get_job
    ("torchyard.dev", "trainingjobs", "list"),  # list_jobs, kopf's initial listing
    ("torchyard.dev", "trainingjobs", "watch"),  # kopf on.event
    ("torchyard.dev", "trainingjobs", "delete"),  # delete_job: ttlSecondsAfterFinished
    ("torchyard.dev", "trainingjobs/status", "patch"),  # patch_job_status
    ("torchyard.dev", "trainingjobs/finalizers", "update"),  # blockOwnerDeletion on pods
    ("torchyard.dev", "modelversions", "get"),  # get_model_version (teacher)
    ("torchyard.dev", "modelversions", "list"),  # list_model_versions
    ("torchyard.dev", "modelversions", "watch"),  # kopf on.event
    ("torchyard.dev", "modelversions", "create"),  # create_model_version
    ("torchyard.dev", "modelversions/status", "patch"),  # patch_model_version_status
    ("torchyard.dev", "modeldeployments", "get"),  # get_model_deployment
    ("torchyard.dev", "modeldeployments", "list"),  # list_model_deployments
    ("torchyard.dev", "modeldeployments", "watch"),  # kopf on.event
    ("torchyard.dev", "modeldeployments/status", "patch"),  # patch_model_deployment_status
    ("torchyard.dev", "modeldeployments/finalizers", "update"),  # blockOwnerDeletion on Deployments
    ("", "pods", "list"), ("", "pods", "watch"), ("", "pods", "create"), ("", "pods", "delete"),
    ("", "services", "get"), ("", "services", "list"), ("", "services", "watch"),
    ("", "services", "create"), ("", "services", "patch"),
    ("", "events", "create"),  # emit_event, kopf's posting
    ("apps", "deployments", "list"), ("apps", "deployments", "watch"), ("apps", "deployments", "create"),
    ("apps", "deployments", "patch"), ("apps", "deployments", "delete"),
    ("", "configmaps", "get"), ("", "configmaps", "create"), ("", "configmaps", "update"),  # registry.py _reserve
    ("scheduling.k8s.io", "workloads", "get"), ("scheduling.k8s.io", "workloads", "create"),  # gang mode
    ("scheduling.k8s.io", "workloads", "delete"),  # jobs.py _gang: create_workload, delete_workload
}
CLUSTER_NEEDS = {  # kopf's resource and namespace observers
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"), ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"), ("", "namespaces", "watch"),
    ("", "nodes", "list"), ("", "nodes", "watch"),  # handlers/nodes.py node_event
}


def test_helm_lint_is_clean_in_every_mode():
    for values in ({}, {"replicaCount": 2, "watchNamespaces": ["a", "b"]},
                   {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
                    "prometheusRule": {"enabled": True}}):
        result = helm("lint", "--strict", str(CHART), values=values)
        assert "0 chart(s) failed" in result.stdout, result.stdout


def test_chart_crds_are_the_repository_crds_byte_for_byte():
    repo = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert repo, "no CRDs in crds/"
    drifted = sorted(name for name in repo if chart.get(name) != repo[name])
    assert drifted == [], f"charts/torchyard/crds/ differs from crds/ for {drifted}: run `make chart-crds`"
    assert set(chart) - set(repo) == {"kopf-peering.yaml"}


def test_kopf_peering_crds_define_both_scopes():
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    assert {(d["spec"]["names"]["plural"], d["spec"]["scope"]) for d in docs} == {
        ("clusterkopfpeerings", "Cluster"), ("kopfpeerings", "Namespaced")}
    assert all(d["spec"]["group"] == "kopf.dev" and "subresources" not in d["spec"]["versions"][0] for d in docs)


def test_default_render_is_a_complete_cluster_wide_install():
    docs = render()
    assert sorted(d["kind"] for d in docs) == sorted([
        "ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRole", "ClusterRole",
        "ClusterRoleBinding", "Service", "Deployment"])
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "torchyard", "namespace": NAMESPACE}]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "torchyard"


@pytest.mark.parametrize("values", [{}, {"replicaCount": 3}, {"watchNamespaces": ["a"], "replicaCount": 2}],
                         ids=["default", "peering", "namespaced-peering"])
def test_no_rule_uses_a_wildcard(values):
    for role in (d for d in render(values) if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in "".join(rule.get(key, [])), f"{role['metadata']['name']}: {rule}"


def test_every_rule_in_the_template_says_which_code_needs_it():
    lines = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            above = next(lines[i].strip() for i in range(number - 1, -1, -1) if not lines[i].strip().startswith("{{"))
            assert above.startswith("#"), f"rbac.yaml:{number + 1}: rule without a comment"


def test_cluster_wide_operator_gets_exactly_what_the_code_calls():
    operator = one(render(), "ClusterRole", "torchyard-operator")
    assert grants(operator) == NAMESPACED_NEEDS | CLUSTER_NEEDS


def test_namespaced_mode_gets_roles_per_namespace_and_namespace_flags():
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    assert [a for a in container(docs)["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a", "--namespace=team-b"]
    cluster_role = one(docs, "ClusterRole", "torchyard-operator")
    assert grants(cluster_role) == CLUSTER_NEEDS
    for namespace in ("team-a", "team-b"):
        assert grants(one(docs, "Role", namespace=namespace)) == NAMESPACED_NEEDS
        binding = one(docs, "RoleBinding", namespace=namespace)
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_one_replica_runs_standalone_and_never_twice():
    docs = render()
    args = container(docs)["args"]
    assert "--standalone" in args and not any(a.startswith("--peering") for a in args)
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [d for d in docs if d["apiVersion"].startswith("kopf.dev")]


def test_replicas_peer_through_a_cluster_peering_they_may_patch():
    docs = render({"replicaCount": 2})
    args = container(docs)["args"]
    assert "--peering=torchyard" in args and "--standalone" not in args
    assert one(docs, "ClusterKopfPeering", "torchyard")
    assert grants(one(docs, "ClusterRole", "torchyard-operator")) == NAMESPACED_NEEDS | CLUSTER_NEEDS | {
        ("kopf.dev", "clusterkopfpeerings", "list"), ("kopf.dev", "clusterkopfpeerings", "watch"),
        ("kopf.dev", "clusterkopfpeerings@torchyard", "patch")}
    assert one(docs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_namespaced_replicas_peer_in_each_namespace():
    docs = render({"replicaCount": 2, "watchNamespaces": ["a", "b"], "peering": {"name": "ty"}})
    assert "--peering=ty" in container(docs)["args"]
    for namespace in ("a", "b"):
        assert one(docs, "KopfPeering", "ty", namespace)
        assert ("kopf.dev", "kopfpeerings@ty", "patch") in grants(one(docs, "Role", namespace=namespace))
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]


def test_operator_pod_meets_the_restricted_pod_security_level():
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    assert next(v for v in pod["volumes"] if v["name"] == "tmp")["emptyDir"]
    assert pod["automountServiceAccountToken"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_probes_resources_and_service_point_at_the_http_port():
    docs = render()
    operator = container(docs)
    assert operator["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert "--http-port=8080" in operator["args"] and operator["args"][0] == "operator"
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert operator["resources"]["requests"]["cpu"] and operator["resources"]["limits"]["memory"]
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()


def settings_of(docs: list[dict]) -> Settings:
    """The operator's Settings as the rendered pod environment produces them."""
    secrets = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "Secret"}
    env = {}
    for var in container(docs)["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
        else:
            env[var["name"]] = var["value"]
    return Settings.from_environ(env)


def test_default_values_reach_the_operator_settings():
    settings = settings_of(render())
    assert settings.trainer_image == "torchyard/trainer:0.1.0"
    assert settings.gpu_node_selector == {"nvidia.com/gpu.present": "true"}
    assert settings.gpu_tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert settings.progress_url_base == f"http://torchyard.{NAMESPACE}.svc:8080"
    assert len(settings.progress_key) == 48
    assert settings.resync_seconds == 300


def test_placement_and_trainer_image_values_reach_the_operator_settings():
    tolerations = [{"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoExecute"}]
    settings = settings_of(render({
        "trainer": {"image": {"repository": "acme/trainer", "tag": "v9", "pullPolicy": "Always"}},
        "gpu": {"nodeSelector": {"pool": "gpu"}, "tolerations": tolerations}, "resyncSeconds": 2.5}))
    assert (settings.trainer_image, settings.image_pull_policy) == ("acme/trainer:v9", "Always")
    # Helm merges maps: a selector given in values adds to the default one ...
    assert settings.gpu_node_selector == {"nvidia.com/gpu.present": "true", "pool": "gpu"}
    assert settings.gpu_tolerations == tuple(tolerations)
    assert settings.resync_seconds == 2.5
    # ... unless the default key is set to null, as docs/install.md says.
    replaced = settings_of(render({"gpu": {"nodeSelector": {"nvidia.com/gpu.present": None, "pool": "gpu"}}}))
    assert replaced.gpu_node_selector == {"pool": "gpu"}
    assert settings_of(render({"gpu": {"nodeSelector": {}, "tolerations": []}})).gpu_tolerations == ()


def test_progress_key_is_random_per_install_and_kept_by_lookup_on_upgrade():
    keys = {one(render(), "Secret")["data"]["progress-key"] for _ in range(2)}
    assert len(keys) == 2, "each fresh install must get its own key"
    # `helm template` cannot reach a cluster; that the key survives an upgrade is shown by
    # tests/integration/test_helm.py. Here: the template does look the Secret up first.
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in (CHART / "templates" / "secret.yaml").read_text()


def test_an_existing_secret_replaces_the_charts_own():
    docs = render({"progress": {"existingSecret": "my-key"}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    ref = next(v for v in container(docs)["env"] if v["name"] == "TORCHYARD_PROGRESS_KEY")["valueFrom"]
    assert ref["secretKeyRef"] == {"name": "my-key", "key": "progress-key"}


def test_monitors_select_what_the_operator_and_its_pods_expose():
    from jobs import ALLREDUCE_CPU, job
    from serving import md, version
    from torchyard.builders.pods import build_pods
    from torchyard.builders.serving import build_deployment

    assert not [d for d in render() if d["apiVersion"].startswith("monitoring.coreos.com")]
    docs = render({"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == one(docs, "Service")["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True

    training_pod = build_pods(job(ALLREDUCE_CPU), 0, Settings())[0]
    served = build_deployment(md(), version(1), 1, Settings())["spec"]["template"]
    for name, pod in (("torchyard-trainers", training_pod), ("torchyard-model-servers", served)):
        spec = one(docs, "PodMonitor", name)["spec"]
        for expr in spec["selector"]["matchExpressions"]:
            value = pod["metadata"]["labels"].get(expr["key"])
            assert value is not None and (expr["operator"] == "Exists" or value in expr["values"]), (name, expr)
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert spec["podMetricsEndpoints"][0]["port"] in ports, name
    assert one(docs, "PodMonitor", "torchyard-trainers")["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True


def test_dashboard_configmap_carries_the_dashboard_json_and_the_sidecar_label():
    configmap = one(render(), "ConfigMap", "torchyard-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "dashboards" / "torchyard.json").read_text())
    assert json.loads(configmap["data"]["torchyard.json"]) == shipped
    assert not [d for d in render({"grafana": {"dashboard": {"enabled": False}}}) if d["kind"] == "ConfigMap"]


def rule_groups(values: dict) -> dict[str, dict]:
    """The PrometheusRule's rules by alert name, rendered with `values` under prometheusRule."""
    rule = one(render({"prometheusRule": {"enabled": True, **values}}), "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_prometheus_rule_renders_the_plain_rules_file_with_its_own_values():
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rule = one(render({"prometheusRule": {"enabled": True, "labels": {"release": "monitoring"}}}), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "monitoring"
    rendered = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    # The chart's default values are the file's own: the default render is the file, bar whitespace.
    for group in shipped["groups"]:
        for expected in group["rules"]:
            got = rendered.pop(expected["alert"])
            assert {**got, "expr": got["expr"].strip()} == {**expected, "expr": expected["expr"].strip()}
    assert not rendered


def test_prometheus_rule_takes_thresholds_durations_and_severities_from_values():
    rules = rule_groups({"rules": {"TorchyardModelLatencyHigh": {"threshold": 0.25, "for": "10m", "severity": "page"},
                                   "TorchyardTrainingJobPending": {"threshold": 3}}})
    latency = rules["TorchyardModelLatencyHigh"]
    assert latency["expr"].rstrip().endswith("> 0.25") and latency["for"] == "10m"
    assert latency["labels"]["severity"] == "page"
    assert rules["TorchyardTrainingJobPending"]["expr"].rstrip().endswith("> 3")
    assert rules["TorchyardModelErrorRatioHigh"]["expr"].rstrip().endswith("> 0.05")  # untouched


@pytest.mark.parametrize("rules, complaint", [
    ({"NoSuchAlert": {"for": "1m"}}, "prometheusRule.rules.NoSuchAlert: no such alert"),
    ({"TorchyardTrainingJobFailed": {"threshold": 1}}, "prometheusRule.rules.TorchyardTrainingJobFailed.threshold"),
    ({"TorchyardModelLatencyHigh": {"for": "five minutes"}}, "/prometheusRule/rules/TorchyardModelLatencyHigh/for"),
    ({"TorchyardModelLatencyHigh": {"threshold": "high"}}, "/prometheusRule/rules/TorchyardModelLatencyHigh/threshold"),
])
def test_bad_alert_values_are_refused_naming_the_value(rules, complaint):
    result = helm("template", RELEASE, str(CHART), values={"prometheusRule": {"enabled": True, "rules": rules}},
                  check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_user_roles_aggregate_into_view_and_edit():
    docs = render()
    view, edit = one(docs, "ClusterRole", "torchyard-view"), one(docs, "ClusterRole", "torchyard-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert {v for _, _, v in grants(view)} == {"get", "list", "watch"}
    assert {r for _, r, _ in grants(edit)} == {"trainingjobs", "modelversions", "modeldeployments"}


@pytest.mark.parametrize("values, complaint", [
    ({"replicaCount": 0}, "replicaCount"),
    ({"logLevel": "LOUD"}, "logLevel"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
    ({"gpu": {"nodeSelector": {"pool": 1}}}, "nodeSelector"),
])
def test_bad_values_are_refused_naming_the_value(values, complaint):
    result = helm("template", RELEASE, str(CHART), values=values, check=False)
    assert result.returncode != 0 and complaint in result.stderr
