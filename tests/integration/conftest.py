"""Fixtures of the integration tests: a real docker-registry process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.registry import Registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A plain-HTTP docker-registry on a free 127.0.0.1 port, removed after the test."""
    with Registry() as reg:
        yield reg
