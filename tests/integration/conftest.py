"""Fixtures of the integration tests: a real docker-registry process, and the real API clients of the
module's `stack` (each module starts its own stack, with the models it needs)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import ollama
import openai
import pytest

from tests.support.registry import Registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A plain-HTTP docker-registry on a free 127.0.0.1 port, removed after the test."""
    with Registry() as reg:
        yield reg


@pytest.fixture
def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def claude(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0)


@pytest.fixture
def ollama_client(stack) -> ollama.Client:
    return ollama.Client(host=stack.url, timeout=120)
