"""The stored Responses: bounded by count and age, and kept across restarts in a JSON-lines log."""

from __future__ import annotations

import pytest

from modelrunner.gateway.responses_store import ResponseStore, Stored


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(clock: Clock, n: int) -> Stored:
    return Stored({"id": f"r{n}"}, [{"id": f"i{n}"}], [{"id": f"i{n}"}, {"id": f"o{n}"}], clock.now)


def test_the_oldest_go_first_past_the_count():
    clock = Clock()
    store = ResponseStore(max_count=2, max_age_s=60, clock=clock)
    for n in range(3):
        store.put(f"r{n}", entry(clock, n))
    assert store.get("r0") is None and store.get("r1") and store.get("r2") and len(store) == 2


def test_entries_expire_by_age():
    clock = Clock()
    store = ResponseStore(max_count=10, max_age_s=60, clock=clock)
    store.put("old", entry(clock, 0))
    clock.now += 30
    store.put("new", entry(clock, 1))
    clock.now += 31
    assert store.get("old") is None and store.get("new") is not None
    clock.now += 30
    assert store.get("new") is None


def test_persisted_entries_survive_a_restart(tmp_path):
    clock = Clock()
    path = tmp_path / "gateway" / "responses.jsonl"
    store = ResponseStore(max_count=3, max_age_s=60, path=path, clock=clock)
    for n in range(3):
        store.put(f"r{n}", entry(clock, n))
    assert store.delete("r1") and not store.delete("r1")
    with path.open("a") as log:
        log.write('{"put": "torn"')  # a crash mid-line
    again = ResponseStore(max_count=3, max_age_s=60, path=path, clock=clock)
    assert again.get("r0") == entry(clock, 0) and again.get("r1") is None and again.get("r2") == entry(clock, 2)
    assert len(path.read_text().splitlines()) == 2  # rewritten with the live entries only
    assert path.stat().st_mode & 0o777 == 0o600  # it holds conversations
    clock.now += 61
    assert len(ResponseStore(max_count=3, max_age_s=60, path=path, clock=clock)) == 0


def test_the_log_is_compacted_as_it_grows(tmp_path):
    clock = Clock()
    path = tmp_path / "responses.jsonl"
    store = ResponseStore(max_count=2, max_age_s=60, path=path, clock=clock)
    for n in range(20):
        store.put(f"r{n}", entry(clock, n))
    assert len(path.read_text().splitlines()) <= 2 * 2 + 1
    assert [k for k in ("r18", "r19") if ResponseStore(2, 60, path, clock).get(k)] == ["r18", "r19"]


def test_a_bound_must_be_positive():
    with pytest.raises(ValueError):
        ResponseStore(max_count=0, max_age_s=60)


def test_the_environment_configures_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELRUNNER_RESPONSES_MAX_STORED", "5")
    monkeypatch.setenv("MODELRUNNER_RESPONSES_PERSIST", "true")
    monkeypatch.setenv("MODELRUNNER_DATA_DIR", str(tmp_path))
    store = ResponseStore.from_settings()
    assert store.max_count == 5 and store.path == tmp_path / "gateway" / "responses.jsonl" and store.path.exists()
    monkeypatch.setenv("MODELRUNNER_RESPONSES_MAX_AGE", "a week")
    with pytest.raises(ValueError, match="MODELRUNNER_RESPONSES_MAX_AGE"):
        ResponseStore.from_settings()
