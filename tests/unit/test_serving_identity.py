"""One ModelDeployment per model per namespace: which one owns a model, and what the others say."""

from jobs import NOW
from torchyard.reconcile.identity import duplicate_status, serving_owner


def md(name: str, model: str, created: str, deleting: bool = False) -> dict:
    meta = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-03T00:00:00Z"
    return {"metadata": meta, "spec": {"modelName": model}}


def test_the_oldest_model_deployment_of_a_model_owns_it():
    items = [md("b", "digits", "2026-01-02T00:00:00Z"), md("a", "digits", "2026-01-02T00:00:00Z"),
             md("old", "digits", "2026-01-01T00:00:00Z", deleting=True), md("other", "iris", "2025-01-01T00:00:00Z")]
    assert serving_owner(items, "digits") == "a"  # same second: by name; one being deleted owns nothing
    assert serving_owner(items, "iris") == "other"
    assert serving_owner(items, "mnist") is None


def test_a_duplicate_is_degraded_not_available_and_names_the_owner():
    status = duplicate_status({"activeVersion": 3}, "a", "digits", NOW, 2)
    kinds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert kinds == {"Available": ("False", "DuplicateModel"), "Progressing": ("False", "DuplicateModel"),
                     "Degraded": ("True", "DuplicateModel")}
    assert status["observedGeneration"] == 2 and status["activeVersion"] == 3
    assert duplicate_status(status, "a", "digits", NOW, 2) == status  # written once, not on every pass
