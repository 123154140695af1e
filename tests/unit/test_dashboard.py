"""The Grafana dashboard shipped with the chart queries only metrics and labels the code exports.

A dashboard that names a metric nobody exports shows "No data" forever and nobody notices; this
test reads every PromQL expression (panels and variables), takes out what is not a metric name
(functions, keywords, label matchers, ranges, grouping clauses) and checks what remains against
the metrics declared in the code (test_metrics_docs.declared_metrics).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_metrics_docs import declared_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "torchyard" / "files" / "dashboards" / "torchyard.json"

FUNCTIONS = {
    "abs", "absent", "ceil", "changes", "clamp_max", "clamp_min", "delta", "deriv", "exp", "floor",
    "histogram_quantile", "idelta", "increase", "irate", "label_replace", "ln", "log2", "rate",
    "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "label_values",
}
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
                "count_values", "group"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset"}
# Labels Prometheus attaches to every scraped series (target labels), beside the metric's own.
TARGET_LABELS = {"namespace", "pod", "container", "instance", "job", "endpoint", "service"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found.append((f"variable {var['name']}", query))
    return found


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression refers to."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors, $__rate_interval included
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels.update(re.findall(r"[a-zA-Z_]\w*", clause))
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    value = re.match(r"\s*label_values\s*\(\s*([a-zA-Z_:][\w:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)", text)
    if value:
        return {value[1]}, labels | {value[2]}
    text = re.sub(r"(?<![\w:])\d[\w.]*", " ", text)  # numbers and durations (0.9, 60, 5m)
    tokens = set(re.findall(r"[a-zA-Z_:][\w:]*", text))
    return tokens - FUNCTIONS - AGGREGATIONS - KEYWORDS, labels


@pytest.fixture(scope="module")
def catalog():
    return declared_metrics()


def series_index(catalog) -> dict[str, object]:
    return {series: metric for metric in catalog.values() for series in metric.series_names}


def test_the_parser_sees_metrics_labels_and_nothing_else():
    names, labels = parse('histogram_quantile(0.9, sum by (le, kind) (rate(a_seconds_bucket{x=~"$v"}[$__rate_interval]))) '
                          '/ on (kind) sum(b_total offset 5m) * 60')
    assert names == {"a_seconds_bucket", "b_total"}
    assert labels == {"le", "kind", "x"}
    assert parse("label_values(torchyard_trainingjobs, namespace)") == ({"torchyard_trainingjobs"}, {"namespace"})


def test_every_expression_refers_only_to_exported_metrics(catalog):
    known = series_index(catalog)
    unknown = {(where, name) for where, expr in expressions(dashboard()) for name in parse(expr)[0]
               if name not in known}
    assert unknown == set(), "the dashboard queries series that no code exports"


def test_every_label_in_an_expression_exists_on_its_metrics(catalog):
    known = series_index(catalog)
    for where, expr in expressions(dashboard()):
        names, labels = parse(expr)
        allowed = set(TARGET_LABELS)
        for name in names:
            allowed |= known[name].labels | ({"le"} if name.endswith("_bucket") else set())
        assert labels <= allowed, f"{where}: {expr} uses labels {sorted(labels - allowed)}"


def test_every_exported_metric_has_a_panel(catalog):
    used = {name for _, expr in expressions(dashboard()) for name in parse(expr)[0]}
    unused = sorted(m.documented_name for m in catalog.values() if not m.series_names & used)
    assert unused == [], "metrics with no panel"


def test_panels_are_titled_laid_out_and_use_the_datasource_variable():
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "trainingjob", "model"} <= variables
    for panel in panels(board):
        assert panel["title"] and "gridPos" in panel
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], f"{panel['title']} has no query"
            for var in re.findall(r"\$(\w+)", json.dumps(panel["targets"])):
                assert var in variables | {"__rate_interval"}, f"{panel['title']}: unknown variable ${var}"


def test_the_dashboard_covers_the_questions_operators_ask():
    titles = {p["title"] for p in panels(dashboard())}
    assert {"Jobs by phase", "Phase transitions", "Time to running", "Reconcile latency", "Reconciles and errors",
            "Restarts by cause", "Model switches by reason", "Active version", "Loss", "Samples per second",
            "Step time", "Communication time", "Progress", "Requests by code", "Latency",
            "Errors and ready servers", "Versions side by side"} <= titles
