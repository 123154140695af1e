"""The alerting rules (charts/torchyard/files/alerts.yaml), checked and unit-tested by the real
promtool: each rule has a test file in tests/unit/alerts/ where it fires and where it does not.
The chart's PrometheusRule renders the same file (tests/unit/test_chart.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "torchyard" / "files" / "alerts.yaml"
TESTS = sorted((Path(__file__).parent / "alerts").glob("*.yaml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool of the pinned Prometheus, as hack/build-control-plane.sh builds it."""
    found = subprocess.run([sys.executable, str(ROOT / "hack" / "local-cluster.py"), "which", "promtool"],
                           capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        pytest.fail(f"promtool not built ({found.stdout.strip()}): run `bash hack/build-control-plane.sh`",
                    pytrace=False)
    return found.stdout.strip()


def alerts() -> list[str]:
    return [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts_tested_in(path: Path) -> set[str]:
    return {case["alertname"] for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", [])}


def test_the_rules_file_passes_promtool_check(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_rule_has_its_own_test_file_that_sees_it_fire_and_stay_quiet():
    by_file = {path.name: alerts_tested_in(path) for path in TESTS}
    assert sorted(name for names in by_file.values() for name in names) == sorted(alerts())
    for path in TESTS:
        cases = [case for test in yaml.safe_load(path.read_text())["tests"] for case in test["alert_rule_test"]]
        assert any(case["exp_alerts"] for case in cases), f"{path.name}: no case where the alert fires"
        assert any(not case["exp_alerts"] for case in cases), f"{path.name}: no case where it stays quiet"


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.stem)
def test_rule_unit_tests_pass(promtool, path):
    result = subprocess.run([promtool, "test", "rules", path.name], cwd=path.parent, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
