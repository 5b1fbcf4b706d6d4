"""Model configs of any JSON shape: reading never raises (one bad model must not take down a listing), and
`config_problem` refuses exactly the configs that reading would show only in part."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrunner.common.artifact_config import (
    MAX_CONTEXT_SIZE,
    TEXT_FIELDS,
    config_problem,
    model_config,
    parse_created,
)
from modelrunner.v1 import types_pb2

# Lone surrogates are what JSON's "\ud800" escape decodes to; protobuf cannot encode them.
TEXT = st.text(st.characters() | st.sampled_from(["\ud800", "\udfff"]), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=12)
DATES = st.datetimes().map(lambda d: d.isoformat()) | st.sampled_from(["0001-01-01T00:00:00", "yesterday"])
INNER = st.fixed_dictionaries({}, optional={
    **{name: JSON for name in TEXT_FIELDS},
    "context_size": JSON,
    "gguf": st.dictionaries(TEXT, JSON, max_size=4) | JSON,
})
DESCRIPTOR = st.fixed_dictionaries({}, optional={"created": DATES | JSON})
CONFIGS = st.fixed_dictionaries({}, optional={"config": INNER | JSON, "descriptor": DESCRIPTOR | JSON}) | JSON


@given(CONFIGS)
def test_reading_and_checking_any_config_never_raise(doc: object):
    assert isinstance(config_problem(doc), str | None)
    model = types_pb2.Model(created=parse_created(doc), config=model_config(doc))
    assert types_pb2.Model.FromString(model.SerializeToString()) == model
    assert math.isfinite(model.created) and 0 <= model.config.context_size <= MAX_CONTEXT_SIZE


@given(CONFIGS)
def test_a_config_without_problems_reads_in_full(doc: object):
    if config_problem(doc) is not None:
        return
    c = doc.get("config") or {}
    shown = model_config(doc)
    for name in TEXT_FIELDS:
        assert getattr(shown, name) == (c.get(name) or "")
    assert shown.context_size == min(c.get("context_size") or 0, MAX_CONTEXT_SIZE)
    gguf = {k: v for k, v in (c.get("gguf") or {}).items() if v is not None}
    assert dict(shown.gguf) == {k: v if isinstance(v, str) else json.dumps(v) for k, v in gguf.items()}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"config": "x", "descriptor": {"created": "2025-01-01T00:00:00Z"}}', "config must be an object"),
        ('{"config": {"format": "gguf", "gguf": [1, 2]}}', "config.gguf must be an object"),
        ('{"config": {"format": "gguf"}, "descriptor": "yesterday"}', "descriptor must be an object"),
        ('{"descriptor": {"created": 20250101}}', "descriptor.created must be a string"),
        ('{"config": {"gguf": {"general.name": {"x": 1}}}}', 'config.gguf["general.name"] must be a string'),
        ('{"config": {"context_size": -1}}', "config.context_size must be a whole number"),
        ('{"config": {"context_size": "4096"}}', "config.context_size must be a whole number"),
        ('{"config": {"architecture": "\\ud800"}}', "config.architecture must be a string"),
        ('{"config": {"size": 12}}', "config.size must be a string, not 12"),
        ("[1, 2]", "must be a JSON object, not an array"),
    ],
)
def test_wrong_shapes_read_as_empty_and_the_check_names_the_field(raw: str, says: str):
    doc = json.loads(raw)
    assert says in (config_problem(doc) or "")
    assert dict(model_config(doc).gguf) == {} and model_config(doc).context_size == 0


def test_what_can_be_read_is_kept_beside_a_wrong_field():
    doc = {"config": {"format": "gguf", "size": 12, "gguf": {"a": "1", "b": [2], "c": 3}},
           "descriptor": {"created": "2025-01-01T00:00:00Z"}}
    shown = model_config(doc)
    assert (shown.format, shown.size, dict(shown.gguf)) == ("gguf", "", {"a": "1", "c": "3"})
    assert parse_created(doc) == 1735689600
    assert parse_created({"config": "x", "descriptor": {"created": "2025-01-01T00:00:00Z"}}) == 1735689600


def test_a_valid_config_has_no_problem():
    doc = {"config": {"format": "gguf", "quantization": "Q4_K_M", "parameters": "268.10 M", "architecture": "gemma3",
                      "size": "253.36 MB", "context_size": 32768, "gguf": {"general.architecture": "gemma3"}},
           "descriptor": {"created": "2025-01-01T00:00:00Z"}, "rootfs": {"type": "rootfs", "diff_ids": []}}
    assert config_problem(doc) is None and config_problem({}) is None
    assert config_problem({"config": None, "descriptor": {"created": None}}) is None
