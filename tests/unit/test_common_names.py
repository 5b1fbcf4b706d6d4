"""Model names: the OCI reference grammar plus Docker Model Runner's normalisation."""

from __future__ import annotations

import pytest

from modelrunner.common.names import InvalidReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ai/gemma3", "docker.io/ai/gemma3:latest"),
        ("gemma3", "docker.io/ai/gemma3:latest"),
        ("ai/gemma3:270M-Q4_K_M", "docker.io/ai/gemma3:270M-Q4_K_M"),
        ("AI/Gemma3", "docker.io/ai/gemma3:latest"),
        ("localhost:5000/team/model:v2", "localhost:5000/team/model:v2"),
        ("127.0.0.1:5000/model", "127.0.0.1:5000/model:latest"),
        ("registry.example.com/a/b/c", "registry.example.com/a/b/c:latest"),
        (f"ai/gemma3@{DIGEST}", f"docker.io/ai/gemma3@{DIGEST}"),
        (f"ai/gemma3:v1@{DIGEST}", f"docker.io/ai/gemma3:v1@{DIGEST}"),
    ],
)
def test_parse_normalises(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_familiar_form_drops_docker_hub() -> None:
    assert parse_reference("gemma3").familiar == "ai/gemma3:latest"
    assert parse_reference("localhost:5000/x/y:t").familiar == "localhost:5000/x/y:t"


@pytest.mark.parametrize(
    "text",
    ["", " ", "../etc/passwd", "/abs/path", "ai/../x", "ai/x\0y", "a" * 300, "ai/x:bad tag", "ai/x@sha256:zz",
     "ai//x", "ai/x:", "ai\\x", "ai/x:-lead"],
)
def test_rejects_bad_names(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)
