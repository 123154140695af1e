"""Every malformed TrainingJob of tests/integration/bad_specs.py gets a clear answer from the real
control plane with the operator running: refused by `kubectl apply` naming the field, or stored
and then Failed (reason InvalidSpec, a Warning Event) with a message naming the field. No case
may leave a job without a phase, and none may leave a pod behind.
"""

from __future__ import annotations

import pytest
import yaml

from bad_specs import APPLY, CASES, OPERATOR, Case
from harness.waits import read_or_none, wait_for
from torchyard.api import trainingjob as tj

pytestmark = pytest.mark.integration

# A bound on waiting, not a timing asserted: the operator answers within one reconcile.
ANSWER_TIMEOUT = 60


def test_the_table_is_wide_and_covers_both_answers():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.where for c in CASES} == {APPLY, OPERATOR}


def manifest(case: Case) -> dict:
    return {"apiVersion": tj.API_VERSION, "kind": tj.KIND, "metadata": {"name": case.name or f"bad-{case.id}"},
            "spec": case.spec}


def get_job(cluster, namespace: str, name: str) -> dict | None:
    return read_or_none(lambda: cluster.custom.get_namespaced_custom_object(
        tj.GROUP, tj.VERSION, namespace, tj.PLURAL, name))


def apply(cluster, namespace: str, case: Case):
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest(case)), check=False)
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else (result.stderr or "")
    return result.returncode, stderr


def refused_at_apply(cluster, namespace: str, case: Case, code: int, stderr: str) -> list[str]:
    problems = []
    if code == 0:
        problems.append("accepted by kubectl apply")
    elif case.field not in stderr:
        problems.append(f"refused without naming {case.field}: {stderr.strip()[-400:]}")
    if get_job(cluster, namespace, manifest(case)["metadata"]["name"]) is not None:
        problems.append("a job was stored anyway")
    return problems


def failed_by_operator(cluster, namespace: str, case: Case, code: int, stderr: str) -> list[str]:
    if code != 0:
        return [f"refused at apply, but only the operator can see this: {stderr.strip()[-400:]}"]
    name = manifest(case)["metadata"]["name"]
    try:
        job = wait_for(lambda: _finished(get_job(cluster, namespace, name)), f"{name} to get a terminal phase",
                       timeout=ANSWER_TIMEOUT)
    except AssertionError as exc:
        return [str(exc)[-400:]]
    status = job["status"]
    failed = next((c for c in status.get("conditions", []) if c["type"] == "Failed"), {})
    problems = []
    if (status.get("phase"), failed.get("reason")) != ("Failed", "InvalidSpec"):
        problems.append(f"phase {status.get('phase')}, Failed reason {failed.get('reason')}: {status.get('message')}")
    missing = [w for w in (case.field, *case.extra) if w not in status.get("message", "")]
    if missing:
        problems.append(f"message does not name {missing}: {status.get('message')}")
    return problems


def _finished(job: dict | None) -> dict | None:
    return job if job and (job.get("status") or {}).get("phase") in ("Failed", "Succeeded") else None


def warning_events(cluster, namespace: str) -> dict[str, set[str]]:
    events = cluster.core.list_namespaced_event(namespace).items
    out: dict[str, set[str]] = {}
    for e in events:
        if e.type == "Warning" and e.involved_object.kind == tj.KIND:
            out.setdefault(e.involved_object.name, set()).add(e.reason)
    return out


def test_every_bad_spec_is_refused_at_apply_or_failed_by_the_operator(cluster, crds, namespace, operator):
    answers = {case.id: apply(cluster, namespace, case) for case in CASES}
    problems = {}
    for case in CASES:
        check = refused_at_apply if case.where == APPLY else failed_by_operator
        found = check(cluster, namespace, case, *answers[case.id])
        if found:
            problems[case.id] = found
    events = warning_events(cluster, namespace)
    for case in (c for c in CASES if c.where == OPERATOR):
        if "InvalidSpec" not in events.get(manifest(case)["metadata"]["name"], set()):
            problems.setdefault(case.id, []).append("no Warning event InvalidSpec")
    assert problems == {}
    # Nothing is left of a spec that was refused: no pod of any case exists. A gang's pods are
    # created at once, so a role's pod the API server accepted before another role's was refused
    # may exist for a moment; the failed job's next pass deletes it.
    wait_for(lambda: all(p.metadata.deletion_timestamp for p in cluster.core.list_namespaced_pod(namespace).items),
             "no pod left of a refused spec (none, or only pods being deleted)")
