"""The deployment, run for real without Docker: each service a process started from its Dockerfile's
ENTRYPOINT with exactly the environment docker-compose.yml (over the image's ENV) gives it, its hostnames
mapped to 127.0.0.1 and free ports, its volumes to temporary directories; then the real Envoy with
deploy/envoy/envoy.yaml (addresses rendered for this machine) in front of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelrunner.distribution import credentials
from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc, runner_pb2, runner_pb2_grpc, store_pb2, store_pb2_grpc
from tests.conftest import free_port
from modelrunner.store.upload import package_files
from tests.support.deploy_scripts import build_descriptors, render
from tests.support.packaging import upload as upload_blob
from tests.support.registry import REGISTRY_BIN, Registry, dmr_artifact, upload

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("store", "distribution", "runner", "gateway")  # envoy runs last, from its rendered config
ADDRESS = re.compile(r"\b([a-z][a-z0-9-]*|0\.0\.0\.0):(\d{2,5})\b")
DEFAULTED = re.compile(r"\$\{\w+:-([^}]*)\}")  # compose's ${VAR:-default}, with VAR unset here
MODEL = "ai/tiny:latest"
TRANSCODE = {"x-modelrunner-transcode": "1"}
START_TIMEOUT_S = 60


def image_env(dockerfile: Path) -> tuple[dict[str, str], list[str]]:
    """The final stage's MODELRUNNER_* ENV and its ENTRYPOINT."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    for line in text.splitlines():
        keyword, _, args = line.strip().partition(" ")
        if keyword == "FROM":
            env = {}
        elif keyword == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                if name.startswith("MODELRUNNER_"):
                    env[name] = value
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(args)
    return env, entrypoint


def compose_services() -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it (anchors and merge keys included)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MODELRUNNER_")}
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(self.argv, env={**base, **self.env}, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.popen.returncode}:\n{self.log.read_text()[-4000:]}")


@dataclass
class LocalCompose:
    """The compose services as local processes: compose addresses and paths mapped to this machine."""

    tmp: Path
    services: dict[str, Any] = field(default_factory=compose_services)
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)

    def port(self, service: str, container_port: int) -> int:
        return self.ports.setdefault((service, container_port), free_port())

    def address(self, service: str, container_port: int) -> str:
        return f"127.0.0.1:{self.port(service, container_port)}"

    def path(self, service: str, path: str) -> str:
        """A container path: under one of the service's volumes, or in its own private filesystem."""
        for volume in self.volumes(service):
            target = volume["target"]
            if path == target or path.startswith(target + "/"):
                return str(self.tmp / "volumes" / volume["source"]) + path[len(target):]
        return str(self.tmp / service) + path

    def volumes(self, service: str) -> list[dict[str, Any]]:
        mounts = []
        for volume in self.services[service].get("volumes", []):
            if isinstance(volume, str):
                source, target, *mode = volume.split(":")
                volume = {"source": source, "target": target, "read_only": mode == ["ro"]}
            mounts.append(volume)
        return sorted(mounts, key=lambda v: -len(v["target"]))

    def _value(self, service: str, value: str) -> str:
        def host_port(match: re.Match) -> str:
            host, port = match.group(1), int(match.group(2))
            if host == "0.0.0.0":
                return self.address(service, port)
            if host in self.services:
                return self.address(host, port)
            return match.group(0)

        value = DEFAULTED.sub(lambda m: m.group(1), value)
        if value.startswith("/"):
            return self.path(service, value)
        return ADDRESS.sub(host_port, value)

    def environment(self, service: str) -> dict[str, str]:
        """The image's ENV overlaid with compose's `environment`, mapped to this machine."""
        spec = self.services[service]
        env, _ = image_env(ROOT / spec["build"]["dockerfile"])
        env.update({k: str(v) for k, v in (spec.get("environment") or {}).items()})
        return {k: self._value(service, v) for k, v in env.items()}

    def start(self, service: str) -> Process:
        spec = self.services[service]
        _, entrypoint = image_env(ROOT / spec["build"]["dockerfile"])
        assert entrypoint[0] == "python", entrypoint
        for volume in self.volumes(service):
            Path(self.path(service, volume["target"])).mkdir(parents=True, exist_ok=True)
        process = Process(service, [sys.executable, *entrypoint[1:]], self.environment(service), self.tmp / f"{service}.log")
        self.processes[service] = process
        process.start()
        return process

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()


def wait_serving(process: Process, address: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            process.check_alive()
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{process.name} not SERVING on {address}:\n{process.log.read_text()[-4000:]}")
            time.sleep(0.2)


def start_order(services: dict[str, Any]) -> list[str]:
    """The backends in the order compose starts them: a service after every service it depends on."""
    order: list[str] = []
    while len(order) < len(BACKENDS):
        for name in BACKENDS:
            if name not in order and set(services[name].get("depends_on", {})) <= set(order):
                order.append(name)
    return order


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[LocalCompose]:
    """The four services, health-gated in compose's order, with the tiny model packaged by the Store."""
    local = LocalCompose(tmp_path_factory.mktemp("compose"))
    try:
        for name in start_order(local.services):
            process = local.start(name)
            wait_serving(process, process.env["MODELRUNNER_LISTEN"])
        with grpc.insecure_channel(local.address("store", 12435)) as channel:
            package_files(store_pb2_grpc.StoreStub(channel), [tiny_gguf], MODEL, timeout=60)
        yield local
    finally:
        local.stop()


@dataclass
class Edge:
    url: str
    grpc: str  # host:port of the raw gRPC listener (loopback, as in the image)
    admin: str
    log: Path


@contextlib.contextmanager
def running_edge(stack: LocalCompose, tmp: Path, ordinary_timeout_s: float | None = None) -> Iterator[Edge]:
    """The real Envoy with envoy.yaml's routes and filters, its upstreams at the stack's ports; with
    `ordinary_timeout_s`, that deadline replaces the (60 s) one of the non-streaming routes."""
    descriptors = build_descriptors.build(tmp / "modelrunner.pb")
    config = render.render(
        render.load(),
        descriptors=descriptors,
        upstreams={
            "gateway": stack.address("gateway", 12434),
            "store": stack.address("store", 12435),
            "distribution": stack.address("distribution", 12436),
            "runner": stack.address("runner", 12437),
        },
        listen=f"127.0.0.1:{free_port()}",
        grpc_listen=f"127.0.0.1:{free_port()}",
        probes_listen=f"127.0.0.1:{free_port()}",
        admin=f"127.0.0.1:{free_port()}",
    )
    if ordinary_timeout_s is not None:
        routes = render.edge_routes(config)
        ordinary = [r["route"] for r in routes if r.get("route", {}).get("timeout") not in (None, "0s")]
        assert ordinary, "envoy.yaml bounds its ordinary routes"
        for route in ordinary:
            route["timeout"] = f"{ordinary_timeout_s:.3f}s"
    (tmp / "envoy.yaml").write_text(yaml.safe_dump(config))
    port = {item["name"]: item["address"]["socket_address"]["port_value"] for item in config["static_resources"]["listeners"]}
    process = Process(
        "envoy",
        [str(Path(sys.executable).parent / "envoy"), "-c", str(tmp / "envoy.yaml"), "--disable-hot-restart",
         "--log-level", "warning", "--concurrency", "1", "--file-flush-interval-msec", "100"],
        {},
        tmp / "envoy.log",
    )
    process.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            process.check_alive()
            try:
                if httpx.get(f"http://127.0.0.1:{port['probes']}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, process.log.read_text()[-4000:]
            time.sleep(0.2)
        admin = config["admin"]["address"]["socket_address"]["port_value"]
        yield Edge(f"http://127.0.0.1:{port['edge']}", f"127.0.0.1:{port['grpc']}", f"http://127.0.0.1:{admin}", process.log)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def edge(stack: LocalCompose, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_edge(stack, tmp_path_factory.mktemp("edge")) as running:
        yield running


EOS = "2"  # tests/support/tiny_gguf.py's end-of-sequence token


@dataclass
class Streamed:
    text: str
    chunks: int
    finish_reason: str | None
    seconds: float


def chat_stream(base_url: str, max_tokens: int) -> Streamed:
    """Streams a greedy chat that cannot end early (EOS banned by logit_bias): `max_tokens` tokens."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    started = time.monotonic()
    text, chunks, finish_reason = "", 0, None
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to one hundred."}],
        stream=True,
        max_tokens=max_tokens,
        temperature=0,
        logit_bias={EOS: -100},
    )
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish_reason = chunk.choices[0].finish_reason or finish_reason
    return Streamed(text, chunks, finish_reason, time.monotonic() - started)


# --- wiring: the compose environment runs the stack --------------------------------------------------


def test_compose_environment_names_only_settings_the_services_read(stack: LocalCompose) -> None:
    helps = {
        name: subprocess.Popen([*stack.processes[name].argv, "--help"], stdout=subprocess.PIPE, text=True)
        for name in BACKENDS
    }
    for name, process in helps.items():
        help_text, _ = process.communicate(timeout=60)
        read = set(re.findall(r"env\s+(MODELRUNNER_\w+)", help_text))
        assert read, f"{name} --help lists no MODELRUNNER_* variables"
        if name == "distribution":  # secrets are read from the environment only, never flags
            read |= {credentials.ENV_USER, credentials.ENV_PASSWORD, credentials.ENV_HOST}
        assert set(stack.processes[name].env) <= read, f"{name} is given settings it never reads"


def test_models_volume_is_shared_at_one_path(stack: LocalCompose, tiny_gguf: Path) -> None:
    models = stack.processes["store"].env["MODELRUNNER_MODELS_DIR"]
    runner_mount = next(v for v in stack.volumes("runner") if v["source"] == "models")
    assert runner_mount["read_only"] and stack.path("runner", runner_mount["target"]) == models
    with grpc.insecure_channel(stack.address("store", 12435)) as channel:
        resolved = store_pb2_grpc.StoreStub(channel).ResolveModel(store_pb2.ResolveModelRequest(name=MODEL), timeout=10)
    (gguf,) = resolved.gguf_paths
    assert Path(gguf).is_relative_to(models)
    assert Path(gguf).read_bytes() == tiny_gguf.read_bytes()


def test_chat_through_the_gateway(stack: LocalCompose) -> None:
    gateway = stack.processes["gateway"].env["MODELRUNNER_HTTP_LISTEN"]
    assert httpx.get(f"http://{gateway}/healthz", timeout=10).status_code == 200
    streamed = chat_stream(f"http://{gateway}", max_tokens=16)
    assert streamed.chunks >= 2 and streamed.text and streamed.finish_reason == "length"


# --- the edge: Envoy in front of the same processes --------------------------------------------------


def test_envoy_health_checks_find_every_upstream_healthy(edge: Edge) -> None:
    """Active checks pass (grpc.health.v1 per service name, the gateway's /healthz): no panic routing."""
    deadline = time.monotonic() + 20
    while True:
        clusters = httpx.get(f"{edge.admin}/clusters?format=json", timeout=5).json()["cluster_statuses"]
        health = {
            c["name"]: [h["health_status"] for h in c.get("host_statuses", [])]
            for c in clusters
            if c["name"] in ("gateway", "store", "distribution", "runner")
        }
        # A host failing (or not yet passing) its active check carries a flag beside eds_health_status.
        if all(statuses == [{"eds_health_status": "HEALTHY"}] for statuses in health.values()):
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.5)


def test_openai_client_streams_a_chat_through_envoy(edge: Edge) -> None:
    streamed = chat_stream(edge.url, max_tokens=16)
    assert streamed.chunks >= 2 and streamed.text and streamed.finish_reason == "length"


def test_a_stream_outlasts_the_ordinary_route_deadline(stack: LocalCompose, tmp_path: Path) -> None:
    """An Envoy whose ordinary routes allow a quarter of the time this stream takes (timed straight
    from the gateway first, once the model is loaded, so the check holds on fast and slow hosts) lets
    the whole stream through."""
    gateway = stack.processes["gateway"].env["MODELRUNNER_HTTP_LISTEN"]
    chat_stream(f"http://{gateway}", max_tokens=4)  # loads the model: its first stream is not timed
    direct = chat_stream(f"http://{gateway}", max_tokens=400)
    deadline_s = max(direct.seconds / 4, 0.01)
    with running_edge(stack, tmp_path, ordinary_timeout_s=deadline_s) as short:
        through = chat_stream(short.url, max_tokens=400)
        # Ran to max_tokens (a cut stream ends without a finish_reason), and outlived the deadline.
        assert through.finish_reason == "length" and through.text, through
        assert through.seconds > deadline_s, (through.seconds, deadline_s)
        entries = [json.loads(line) for line in short.log.read_text().splitlines() if line.startswith("{")]
        # No timeout cut it: UT (upstream request timeout) or SI (stream idle timeout). A DC (the client
        # hanging up once it has read [DONE], before Envoy saw the upstream's end) is not a cut.
        timed_out = [e for e in entries if {"UT", "SI"} & set((e["flags"] or "-").split(","))]
        assert not timed_out, entries


def test_models_through_the_transcoder_match_the_gateway(edge: Edge) -> None:
    listed = httpx.get(f"{edge.url}/models", timeout=10)
    transcoded = httpx.get(f"{edge.url}/models", headers=TRANSCODE, timeout=10)
    assert listed.status_code == transcoded.status_code == 200
    assert "x-envoy-upstream-service-time" in transcoded.headers
    # Envoy answers the whole ListModelsResponse where the gateway answers its `models` field.
    assert transcoded.json()["models"] == listed.json()

    name = listed.json()[0]["tags"][0]
    one = httpx.get(f"{edge.url}/models/{name}", timeout=10)
    one_transcoded = httpx.get(f"{edge.url}/models/{name}", headers=TRANSCODE, timeout=10)
    assert one.status_code == one_transcoded.status_code == 200
    assert one_transcoded.json() == one.json()
    assert one.json()["tags"] == [name]

    missing = httpx.get(f"{edge.url}/models/ai/nope:latest", headers=TRANSCODE, timeout=10)
    assert missing.status_code == 404


def test_grpc_reaches_each_service_through_envoy(edge: Edge) -> None:
    """Through the edge's raw gRPC listener (loopback unless the operator opens it)."""
    with grpc.insecure_channel(edge.grpc) as channel:
        models = store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest(), timeout=10)
        assert [t for m in models.models for t in m.tags] == [f"docker.io/{MODEL}"]
        status = runner_pb2_grpc.RunnerStub(channel).Status(runner_pb2.StatusRequest(), timeout=10)
        assert status.backends
        with pytest.raises(grpc.RpcError) as failed:
            distribution_pb2_grpc.DistributionStub(channel).GetRemoteModel(
                distribution_pb2.GetRemoteModelRequest(reference="Not A Name!"), timeout=10
            )
        # The Distribution's own answer (Envoy never says INVALID_ARGUMENT).
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
        chunks = list(
            runner_pb2_grpc.RunnerStub(channel).Generate(
                runner_pb2.GenerateRequest(
                    model=MODEL, prompt="hello", sampling=runner_pb2.SamplingParams(max_tokens=8, temperature=0)
                ),
                timeout=30,
            )
        )
        assert chunks[-1].finish_reason


def test_edge_logs_every_request_and_rate_limits(edge: Edge) -> None:
    reply = httpx.get(f"{edge.url}/healthz", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["x-ratelimit-limit"] == "200"
    time.sleep(0.5)  # the access log flushes on a timer (100 ms here)
    entries = [json.loads(line) for line in edge.log.read_text().splitlines() if line.startswith("{")]
    assert any(e["path"] == "/healthz" and e["status"] == 200 and e["upstream"] == "gateway" for e in entries)


def test_gateway_metrics_feed_every_dashboard_panel(stack: LocalCompose) -> None:
    """The gateway's /metrics (with the Runner's appended through the compose-given URL) has every
    series the Grafana dashboard queries, once a chat has run."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "modelrunner.json").read_text())
    queried = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:modelrunner|http_server|process)_\w+)", target["expr"])
    }
    gateway = stack.processes["gateway"].env["MODELRUNNER_HTTP_LISTEN"]
    exposed = httpx.get(f"http://{gateway}/metrics", timeout=10).text
    families = set(re.findall(r"^# TYPE (\w+) ", exposed, re.MULTILINE))
    assert queried - families == set(), f"not exposed: {sorted(queried - families)}"


def test_transcoder_serves_each_services_annotations(edge: Edge, tiny_gguf: Path) -> None:
    """POST with a body, DELETE, and the Runner's and the Distribution's routes, all by Envoy alone."""
    # The upload is the gateway's own route (a byte stream, no proto annotation); packaging is transcoded.
    gguf = upload_blob(edge.url, tiny_gguf)
    packaged = httpx.post(f"{edge.url}/models/package", headers=TRANSCODE, json={"name": "ai/copy:1", "gguf": [gguf]},
                          timeout=30)
    assert packaged.status_code == 200, packaged.text
    assert packaged.json()["tags"] == ["docker.io/ai/copy:1"]
    deleted = httpx.delete(f"{edge.url}/models/ai/copy:1", headers=TRANSCODE, timeout=10)
    assert deleted.status_code == 200, deleted.text
    # Proto field names, where the gateway prints DMR's json_names ("Untagged"): see deploy/README.md.
    assert {"untagged": "docker.io/ai/copy:1", "deleted": ""} in deleted.json()["actions"]
    assert httpx.get(f"{edge.url}/models/ai/copy:1", timeout=10).status_code == 404

    running = httpx.get(f"{edge.url}/engines/ps", headers=TRANSCODE, timeout=10)
    assert running.status_code == 200 and isinstance(running.json()["runners"], list)
    status = httpx.get(f"{edge.url}/engines/status", headers=TRANSCODE, timeout=10)
    assert status.json()["backends"][0]["name"]

    bad_pull = httpx.post(f"{edge.url}/models/create", headers=TRANSCODE, json={"from": "Not A Name!"}, timeout=10)
    assert bad_pull.status_code == 400, bad_pull.text


@pytest.mark.skipif(not Path(REGISTRY_BIN).exists(), reason="needs Debian's docker-registry (tests/support/registry.py)")
def test_pull_progress_streams_through_the_edge(edge: Edge, tiny_gguf: Path) -> None:
    """POST /models/create from a real registry: JSON lines through the gateway's route, and the same
    progress messages newline-delimited from Envoy's transcoding of Distribution.PullModel."""
    manifest, blobs = dmr_artifact(tiny_gguf.read_bytes())
    with Registry() as registry:
        upload(registry.url, "ai/pulled", "v1", manifest, blobs)
        reference = f"{registry.host}/ai/pulled:v1"
        for headers in ({"accept": "application/json"}, TRANSCODE):
            with httpx.stream(
                "POST", f"{edge.url}/models/create", json={"from": reference}, headers=headers, timeout=60
            ) as reply:
                assert reply.status_code == 200, reply.read()
                messages = [json.loads(line) for line in reply.iter_lines() if line.strip()]
            assert messages[-1]["type"] == "success", messages
            assert {m["type"] for m in messages} <= {"progress", "success", "warning"}
