"""The foundation's "done" test: `modelrunner up` with the default model (SmolLM2 135M Instruct), then the
real `openai` client chats with it through the gateway, streaming and not, and it answers.

Prints the figures the issue asks for: cold start-up (with the default model's import), warm
start-up, time to first token and decode tokens/s through the whole stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import free_port

MODELRUNNER = str(Path(sys.executable).parent / "modelrunner")
PROMPT = [{"role": "user", "content": "Say hi"}]


def start(data_dir: Path, port: int) -> tuple[subprocess.Popen, float]:
    """`modelrunner up -f` until it prints that it is up; returns the process and the seconds it took."""
    env = {**os.environ, "MODELRUNNER_SHUTDOWN_GRACE": "5"}
    began = time.monotonic()
    process = subprocess.Popen(
        [MODELRUNNER, "up", "-f", "--data-dir", str(data_dir), "--port", str(port), "--grpc-base-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    while process.poll() is None:
        line = process.stdout.readline()
        output.append(line)
        if "is up" in line:
            return process, time.monotonic() - began
    raise AssertionError(f"`modelrunner up` exited {process.returncode}:\n{''.join(output)}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_model_chats_through_the_stack(tmp_path: Path) -> None:
    port = free_port()
    process, cold = start(tmp_path, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        ids = [m.id for m in client.models.list().data]
        assert any("ai/smollm2" in i for i in ids), ids

        reply = client.chat.completions.create(model="ai/smollm2", messages=PROMPT, max_tokens=32, temperature=0)
        assert reply.choices[0].message.content.strip()
        capital = client.chat.completions.create(model="ai/smollm2", max_tokens=32, temperature=0, messages=[
            {"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in capital.choices[0].message.content  # an instruct model: it answers, not continues
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

        for model in ("ai/smollm2:135M-Q4_1", "ai/smollm2"):  # the second name resolves to the same model
            began = time.monotonic()
            first = None
            pieces, finish, usage = [], None, None
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Tell me about the sea."}],
                max_tokens=128, temperature=0, stream=True, stream_options={"include_usage": True},
            )
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        first = first or time.monotonic()
                        pieces.append(choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
            done = time.monotonic()
            assert "".join(pieces).strip() and finish in ("stop", "length")
            assert first is not None
            tokens = usage.completion_tokens if usage else len(pieces)
            rate = (tokens - 1) / (done - first) if done > first and tokens > 1 else float("nan")
            print(f"\n{model}: first token {1000 * (first - began):.0f} ms; {tokens} tokens at {rate:.1f} tok/s")
        print(f"cold start (with default model import): {cold:.1f}s")
    finally:
        stop(process)

    process, warm = start(tmp_path, port)
    try:
        models = json.loads(subprocess.run([MODELRUNNER, "ls", "--json"], capture_output=True, text=True, check=True,
                                           env={**os.environ, "MODELRUNNER_HOST": f"http://127.0.0.1:{port}"}).stdout)
        tags = {t for m in models for t in m["tags"]}
        assert {"docker.io/ai/smollm2:latest", "docker.io/ai/smollm2:135M-Q4_1"} <= tags
        assert len(models) == 1  # the warm start imported nothing again
        print(f"warm start: {warm:.1f}s")
    finally:
        stop(process)
