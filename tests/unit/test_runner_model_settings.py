"""The Runner's saved settings (settings.json) as an older version may have left them: an entry today's
rules refuse is skipped alone, with a warning naming the model and the field; a keep_alive past today's
bound is clamped to it. The whole file refused to load before (or the refused value failed every load)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from modelrunner.common.keep_alive import MAX_KEEP_ALIVE_S, clamp_keep_alive
from modelrunner.runner.model_settings import ModelConfig, SettingsStore

GOOD = {"context_size": 4096, "runtime_flags": ["--temp", "0.5"], "keep_alive": "10m", "parallel": 2,
        "flash_attention": True, "gpu_layers": -1}
REFUSED = {  # model: (its saved entry, the field the warning names)
    "docker.io/ai/grammar:latest": ({"keep_alive": "5 minutes"}, "keep_alive"),
    "docker.io/ai/nan:latest": ({"keep_alive": "nan"}, "keep_alive"),
    "docker.io/ai/negative:latest": ({"context_size": -1, "keep_alive": "5m"}, "context_size"),
    "docker.io/ai/parallel:latest": ({"parallel": 100000}, "parallel"),
    "docker.io/ai/flag:latest": ({"runtime_flags": ["--mlock", "1"]}, "runtime_flags"),
    "docker.io/ai/sampling:latest": ({"runtime_flags": ["--temp", "9"]}, "runtime_flags"),
    "docker.io/ai/layers:latest": ({"gpu_layers": -5}, "gpu_layers"),
    "docker.io/ai/typed:latest": ({"context_size": "4096"}, "context_size"),
    "docker.io/ai/flags-typed:latest": ({"runtime_flags": [1, 2]}, "runtime_flags"),
    "docker.io/ai/flags-text:latest": ({"runtime_flags": 5}, "runtime_flags"),
    "docker.io/ai/unknown:latest": ({"context_size": 512, "reasoning_budget": 3}, "reasoning_budget"),
    "docker.io/ai/entry:latest": ([1, 2], "(the entry)"),
}


def saved(tmp_path: Path, models: dict[str, object]) -> Path:
    (tmp_path / SettingsStore.FILE).write_text(json.dumps({"models": models}), encoding="utf-8")
    return tmp_path


def warnings(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The model each warning names, and its field."""
    return {r.fields["model"]: r.fields["field"] for r in caplog.records if r.levelno == logging.WARNING}


def test_a_refused_entry_is_skipped_alone_naming_the_model_and_the_field(tmp_path, caplog) -> None:
    models = {"docker.io/ai/good:latest": GOOD, **{name: entry for name, (entry, _) in REFUSED.items()}}
    with caplog.at_level(logging.WARNING):
        store = SettingsStore(saved(tmp_path, models))
    assert store.all() == {"docker.io/ai/good:latest": ModelConfig(**GOOD)}
    assert warnings(caplog) == {name: field for name, (_, field) in REFUSED.items()}


@pytest.mark.parametrize("text", ["1e300", "9999999999h", str(MAX_KEEP_ALIVE_S + 1)])
def test_a_keep_alive_past_ten_years_is_clamped_to_them_keeping_the_entry(tmp_path, caplog, text: str) -> None:
    """An older version took it, and meant "stay loaded": the longest keep-alive today's rules allow."""
    with caplog.at_level(logging.WARNING):
        store = SettingsStore(saved(tmp_path, {"docker.io/ai/long:latest": {**GOOD, "keep_alive": text}}))
    assert store.get("docker.io/ai/long:latest") == ModelConfig(**{**GOOD, "keep_alive": str(MAX_KEEP_ALIVE_S)})
    assert warnings(caplog) == {"docker.io/ai/long:latest": "keep_alive"}


def test_the_next_change_saves_what_was_loaded(tmp_path) -> None:
    store = SettingsStore(saved(tmp_path, {"docker.io/ai/bad:latest": {"keep_alive": "x"},
                                           "docker.io/ai/long:latest": {"keep_alive": "1e300"}}))
    store.put("docker.io/ai/new:latest", ModelConfig(context_size=512))
    assert SettingsStore(tmp_path).all() == {"docker.io/ai/long:latest": ModelConfig(keep_alive=str(MAX_KEEP_ALIVE_S)),
                                             "docker.io/ai/new:latest": ModelConfig(context_size=512)}


@pytest.mark.parametrize(("text", "clamped"), [("5m", "5m"), ("-1", "-1"), (str(MAX_KEEP_ALIVE_S),) * 2,
                                               ("87601h", str(MAX_KEEP_ALIVE_S))])
def test_clamp_keep_alive(text: str, clamped: str) -> None:
    assert clamp_keep_alive(text) == clamped


@pytest.mark.parametrize("text", ["", "5 minutes", "inf"])
def test_clamp_keep_alive_refuses_what_is_no_keep_alive(text: str) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        clamp_keep_alive(text)
