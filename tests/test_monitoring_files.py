"""The alert rules and the Grafana dashboard: valid for Prometheus, firing when they should, and reading only
metrics the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import poindexter_cloud.core.metrics  # noqa: F401  (registers every metric)

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "poindexter-cloud.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) not installed")

# Series every Prometheus has, or every Python process exports through prometheus_client.
STANDARD = {"up", "process_resident_memory_bytes", "process_cpu_seconds_total"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name the registry's metrics export, used or not yet (``_total``, ``_bucket``...)."""
    return {
        family.name + suffix for family in REGISTRY.collect() for suffix in SUFFIXES.get(family.type, ("",))
    } | STANDARD


def series_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are neither functions, keywords, label
    names (inside braces or by/without lists) nor label values."""
    stripped = re.sub(r'"[^"]*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", stripped))
    return {name for name in names if name not in PROMQL_WORDS}


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def test_every_alert_and_panel_reads_an_exported_metric() -> None:
    exported = exported_series()
    expressions = alert_expressions() + dashboard_expressions()
    assert len(expressions) > 20
    for where, expr in expressions:
        read = series_in(expr)
        assert read, (where, expr)
        assert read <= exported, f"{where}: {sorted(read - exported)} not exported"


def test_the_plans_alerts_are_all_there_with_a_runbook() -> None:
    names = {name for name, _ in alert_expressions()}
    assert {
        "HighErrorRate",
        "HighLatencyP99",
        "ProvisioningFailures",
        "PaymentFailures",
        "UsageBufferLag",
        "JobFailures",
        "StripeUsageSyncLag",
    } <= names
    headings = {
        re.sub(r"[^a-z0-9-]", "", line.lstrip("#").strip().lower().replace(" ", "-"))
        for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("#")
    }
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook"]
            assert runbook.startswith("docs/operations.md#"), rule["alert"]
            assert runbook.split("#", 1)[1] in headings, f"{rule['alert']}: no section {runbook}"


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
