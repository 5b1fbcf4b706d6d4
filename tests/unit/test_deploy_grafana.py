"""The Grafana dashboard is importable: valid JSON, unique panel ids, every query on the templated
Prometheus data source, panels inside the 24-column grid. (Its metrics are checked against a live
gateway's /metrics in tests/integration/test_deploy_stack.py.)"""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "modelrunner.json"


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_dashboard_covers_the_serving_signals() -> None:
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    for metric in (
        "modelrunner_time_to_first_token_seconds",
        "modelrunner_inter_token_latency_seconds",
        "modelrunner_output_tokens_total",
        "modelrunner_cached_prompt_tokens_total",
        "modelrunner_queue_depth",
        "modelrunner_active_sequences",
        "modelrunner_loaded_models",
        "modelrunner_model_memory_bytes",
        "http_server_request_duration_seconds",
    ):
        assert metric in exprs, metric
