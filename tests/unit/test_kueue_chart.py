"""The chart's Kueue switch: `--kueue` and the rights for Kueue's objects only when it is on."""

from __future__ import annotations

from test_chart import container, grants, one, render

KUEUE_NAMESPACED = {("kueue.x-k8s.io", "workloads", v) for v in ("list", "watch", "create", "delete")} | {
    ("kueue.x-k8s.io", "workloads/status", "patch")}
KUEUE_CLUSTER = {("kueue.x-k8s.io", "resourceflavors", "list"), ("kueue.x-k8s.io", "resourceflavors", "watch"),
                 ("kueue.x-k8s.io", "workloadpriorityclasses", "get")}


def test_off_by_default_with_no_right_on_kueue_objects():
    docs = render()
    assert "--kueue" not in container(docs)["args"]
    assert not {g for g in grants(one(docs, "ClusterRole", "torchyard-operator")) if g[0] == "kueue.x-k8s.io"}


def test_on_adds_the_flag_and_exactly_the_rules_the_queueing_code_calls():
    docs = render({"kueue": {"enabled": True}})
    assert "--kueue" in container(docs)["args"]
    kueue = {g for g in grants(one(docs, "ClusterRole", "torchyard-operator")) if g[0] == "kueue.x-k8s.io"}
    assert kueue == KUEUE_NAMESPACED | KUEUE_CLUSTER


def test_watching_namespaces_puts_the_workload_rules_in_each_role():
    docs = render({"kueue": {"enabled": True}, "watchNamespaces": ["ml"]})
    role = {g for g in grants(one(docs, "Role", "torchyard-operator", "ml")) if g[0] == "kueue.x-k8s.io"}
    cluster = {g for g in grants(one(docs, "ClusterRole", "torchyard-operator")) if g[0] == "kueue.x-k8s.io"}
    assert (role, cluster) == (KUEUE_NAMESPACED, KUEUE_CLUSTER)
