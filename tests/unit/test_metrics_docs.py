"""docs/metrics.md lists every Prometheus metric the code declares, with its type and labels.

The catalog of declared metrics is built twice, independently: by reading the source of both
packages for Counter/Gauge/Histogram declarations (so a metric added anywhere is seen), and by
instantiating the registries (which gives the labels). Both must agree, and the docs must list
exactly that catalog. The dashboard test (test_dashboard.py) reuses the catalog.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "operator" / "torchyard", ROOT / "trainer-image" / "torchyard_trainer"]
DOC = ROOT / "docs" / "metrics.md"
METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
DOC_ROW = re.compile(r"^\| `(?P<name>[a-z_:][a-z0-9_:]*)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \|")


@dataclass(frozen=True)
class Metric:
    name: str  # the family name as declared (a counter's without `_total`)
    type: str  # counter, gauge, histogram, ...
    labels: frozenset[str]

    @property
    def documented_name(self) -> str:
        """The name a user queries: counters with their `_total` suffix."""
        return self.name + "_total" if self.type == "counter" else self.name

    @property
    def series_names(self) -> set[str]:
        """Every sample name the exposition format carries for this metric."""
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "summary": ["", "_sum", "_count", "_created"]}.get(self.type, [""])
        return {self.name + suffix for suffix in suffixes}


def declared_in_source() -> dict[str, tuple[str, str]]:
    """{family name: (class name, file)} for every metric constructor call in both packages."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(p for root in SOURCES for p in root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            first = node.args[0]
            if callee in METRIC_CLASSES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                # The client drops a counter's `_total` suffix from the family name and adds it back
                # to the sample, so both spellings declare the same metric.
                name = first.value.removesuffix("_total") if callee == "Counter" else first.value
                found[name] = (callee, str(path.relative_to(ROOT)))
    return found


def _registries():
    from torchyard import metrics as operator_metrics
    from torchyard_trainer.metrics import TrainerMetrics
    from torchyard_trainer.serve_metrics import ServerMetrics

    return [operator_metrics.REGISTRY, TrainerMetrics("job", "worker", 0).registry,
            ServerMetrics("model", "1").registry]


def declared_metrics() -> dict[str, Metric]:
    """Every metric of the operator, the trainer and the model server, by family name."""
    catalog = {}
    for registry in _registries():
        # The client keeps no public list of label names for a metric without samples yet.
        for collector in registry._collector_to_names:  # noqa: SLF001
            catalog[collector._name] = Metric(collector._name, collector._type, frozenset(collector._labelnames))
    return catalog


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = DOC_ROW.match(line)
        if match:
            labels = frozenset(re.findall(r"`([a-z_]+)`", match["labels"]))
            rows[match["name"]] = (match["type"], labels)
    return rows


@pytest.fixture(scope="module")
def catalog() -> dict[str, Metric]:
    return declared_metrics()


def test_source_scan_and_registries_find_the_same_metrics(catalog):
    in_source = declared_in_source()
    assert len(in_source) >= 20, f"the source scan found too little to be trusted: {sorted(in_source)}"
    assert sorted(in_source) == sorted(catalog), (
        "a metric is declared in a registry this test does not instantiate (add it to _registries)")
    for name, (cls, path) in in_source.items():
        assert catalog[name].type == cls.lower(), f"{name} in {path}"


def test_every_declared_metric_is_documented_with_its_type_and_labels(catalog):
    rows = documented()
    missing = sorted(m.documented_name for m in catalog.values() if m.documented_name not in rows)
    assert missing == [], f"docs/metrics.md lacks {missing}"
    for metric in catalog.values():
        doc_type, doc_labels = rows[metric.documented_name]
        assert doc_type == metric.type, f"{metric.documented_name}: documented as {doc_type}"
        assert doc_labels == metric.labels, f"{metric.documented_name}: documented labels {sorted(doc_labels)}"


def test_the_docs_list_no_metric_that_does_not_exist(catalog):
    known = {m.documented_name for m in catalog.values()}
    assert sorted(set(documented()) - known) == []


def test_metric_names_follow_prometheus_conventions(catalog):
    for metric in catalog.values():
        assert metric.name.startswith("torchyard_"), metric.name
        if metric.type == "histogram":
            assert metric.name.endswith("_seconds"), f"{metric.name}: histograms here measure time, in seconds"
        banned = {"pod", "name", "uid", "trainingjob"} & metric.labels
        assert not banned, f"{metric.name} has high-cardinality labels {banned}"
