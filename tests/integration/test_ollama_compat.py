"""Ollama compatibility found by an audit with the real `ollama` client (and raw HTTP where the client
hides the behaviour) against the real stack and the tiny GGUF: the CLI's heartbeat, JSON nulls read as
Go reads them, and `ollama create` (from a local model, or from uploaded GGUF blobs)."""

from __future__ import annotations

import hashlib
import json

import httpx
import ollama
import pytest

from tests.support.stack import serving
from tests.support.tiny_gguf import write_tiny_gguf

HI = [{"role": "user", "content": "hi"}]
SHORT = {"temperature": 0, "num_predict": 2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("ollama-compat"), {"ai/tiny": tiny_gguf}) as running:
        yield running


@pytest.fixture
def client(stack) -> ollama.Client:
    return ollama.Client(host=stack.url, timeout=120)


def ndjson(reply: httpx.Response) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines() if line]


def test_head_root_is_ollamas_heartbeat(stack):
    """`ollama list`, `ollama run` ... first send `HEAD /`; a 405 there reads as "server not running"."""
    assert httpx.head(f"{stack.url}/").status_code == 200


def test_a_null_field_is_an_absent_one_as_go_reads_it(stack):
    with httpx.Client(base_url=stack.url, timeout=120) as http:
        streamed = ndjson(http.post("/api/chat", json={"model": "tiny", "messages": HI, "stream": None,
                                                       "options": {**SHORT, "stop": None}, "format": None}))
        assert streamed[-1]["done"] is True and streamed[-1]["eval_count"] > 0
        assert all(line["done"] is False for line in streamed[:-1])
        loaded = http.post("/api/chat", json={"model": "tiny", "messages": None, "stream": False})
        assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load"
        message = {"role": "user", "content": None, "images": None, "tool_calls": None}
        answered = http.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False, "system": None,
                                                    "images": None, "keep_alive": None, "options": SHORT})
        assert answered.status_code == 200 and answered.json()["done"] is True
        chat = http.post("/api/chat", json={"model": "tiny", "messages": [message], "stream": False, "options": SHORT})
        assert chat.status_code == 200 and chat.json()["done"] is True


def test_create_names_a_local_model_anew(client):
    statuses = [p.status for p in client.create(model="tiny-copy:v1", from_="tiny", stream=True)]
    assert statuses[-1] == "success"
    assert client.create(model="tiny-copy2", from_="ai/tiny:latest").status == "success"
    names = {m.model for m in client.list().models}
    assert {"ai/tiny-copy:v1", "ai/tiny-copy2:latest"} <= names
    assert client.chat(model="tiny-copy:v1", messages=HI, options=SHORT).done


def test_create_packages_an_uploaded_gguf(client, stack, tmp_path):
    """What `ollama create -f Modelfile` with `FROM ./model.gguf` sends: the blob, then `files`."""
    gguf = write_tiny_gguf(tmp_path / "own.gguf", seed=5)
    digest = client.create_blob(gguf)
    assert httpx.head(f"{stack.url}/api/blobs/{digest}").status_code == 200
    assert httpx.head(f"{stack.url}/api/blobs/sha256-{digest[7:]}").status_code == 200  # Ollama's file naming
    assert httpx.head(f"{stack.url}/api/blobs/sha256:{'0' * 64}").status_code == 404
    statuses = [p.status for p in client.create(model="own", files={"own.gguf": digest}, stream=True)]
    assert statuses[-1] == "success"
    assert any(m.model == "ai/own:latest" for m in client.list().models)
    assert client.show("own").details.family == "llama"
    assert client.generate(model="own", prompt="hi", options=SHORT).done


def test_create_refuses_what_it_cannot_keep_naming_the_field(client, stack):
    def refused(**kwargs) -> ollama.ResponseError:
        with pytest.raises(ollama.ResponseError) as err:
            client.create(**kwargs)
        return err.value

    system = refused(model="x", from_="tiny", system="You are terse.")
    assert system.status_code == 400 and system.error.startswith("system:")
    neither = refused(model="x")
    assert neither.status_code == 400 and "`from`" in neither.error and "`files`" in neither.error
    absent = refused(model="x", from_="never-pulled")
    assert absent.status_code == 404 and "not found" in absent.error
    unuploaded = refused(model="x", files={"m.gguf": f"sha256:{'0' * 64}"})
    assert unuploaded.status_code == 400 and "/api/blobs/" in unuploaded.error
    weights = refused(model="x", files={"model.safetensors": f"sha256:{'0' * 64}"})
    assert weights.status_code == 400 and "GGUF" in weights.error
    with httpx.Client(base_url=stack.url, timeout=60) as http:
        wrong = http.post(f"/api/blobs/sha256:{'1' * 64}", content=b"abc",
                          headers={"content-type": "application/octet-stream"})
        assert wrong.status_code == 400 and isinstance(wrong.json()["error"], str)
        bad = http.post("/api/blobs/not-a-digest", content=b"abc", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "sha256" in bad.json()["error"]
        data = b"not a model"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert http.post(f"/api/blobs/{digest}", content=data,
                         headers={"content-type": "application/octet-stream"}).status_code == 201
        not_gguf = http.post("/api/create", json={"model": "x", "files": {"x.gguf": digest}})
        assert not_gguf.status_code == 400 and "GGUF" in not_gguf.json()["error"]
    assert "ai/x:latest" not in {m.model for m in client.list().models}
