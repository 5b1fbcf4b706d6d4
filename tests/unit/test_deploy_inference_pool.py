"""The inference-pool overlay (deploy/k8s/overlays/inference-pool, and its gpu variant), rendered with
`kubectl kustomize`: core objects validated strictly offline, the InferencePool, HTTPRoute and Gateway
walked against the schemas of their CRDs (tests/support/crds), the EPP's configuration against the field
lists of its Go structs, then the wiring between them: the pool selects exactly the replicas, the EPP
reads the Runner's gauges, readiness keeps a replica out, only the EPP holds an API token."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.crds import schema
from tests.unit.test_deploy_k8s import K8S, KUBERNETES_VERSION, VARIANTS, kustomize

POOL = K8S / "overlays" / "inference-pool"
POOL_VARIANTS = {"pool": POOL, "pool-gpu": POOL / "gpu"}
CRDS = {
    "InferencePool": "inferencepool.v1.yaml",
    "HTTPRoute": "httproute.v1.yaml",
    "Gateway": "gateway.v1.yaml",
}
INFERENCE_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate"}
RUNNER_GAUGES = {
    "queuedRequestsSpec": "modelrunner_queue_depth",
    "runningRequestsSpec": "modelrunner_active_sequences",
    "kvUsageSpec": "modelrunner_kv_cache_usage_ratio",
}

Resources = dict[tuple[str, str], dict[str, Any]]


def render(path) -> Resources:
    return {(r["kind"], r["metadata"]["name"]): r for r in kustomize(path)}


@pytest.fixture(scope="module", params=sorted(POOL_VARIANTS))
def rendered(request: pytest.FixtureRequest) -> Resources:
    return render(POOL_VARIANTS[request.param])


def of_kind(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for (k, name), r in resources.items() if k == kind}


def pod(resources: Resources, deployment: str) -> dict[str, Any]:
    return resources[("Deployment", deployment)]["spec"]["template"]


def container(resources: Resources, deployment: str, name: str) -> dict[str, Any]:
    return next(c for c in pod(resources, deployment)["spec"]["containers"] if c["name"] == name)


def port(c: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def epp_config(resources: Resources) -> dict[str, Any]:
    volume = next(v for v in pod(resources, "runner-pool-epp")["spec"]["volumes"] if v["name"] == "config")
    config_map = resources[("ConfigMap", volume["configMap"]["name"])]
    return yaml.safe_load(config_map["data"]["epp-config.yaml"])


def test_core_objects_validate_strictly(rendered: Resources) -> None:
    core = [r for r in rendered.values() if r["kind"] not in CRDS]
    assert {r["kind"] for r in core} >= {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"}
    for resource in core:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_custom_resources_carry_exactly_their_crds_fields(rendered: Resources, kind: str) -> None:
    stored = schema.load(CRDS[kind])
    objects = of_kind(rendered, kind)
    assert len(objects) == 1, kind
    for resource in objects.values():
        assert resource["apiVersion"] == stored["apiVersion"]
        assert schema.violations(resource, stored["schema"]) == []


def test_the_schema_walker_refuses_what_the_api_server_would() -> None:
    """The check above means something only if a broken object fails it."""
    stored = schema.load(CRDS["InferencePool"])["schema"]
    good = render(POOL)[("InferencePool", "runner-pool")]
    broken = yaml.safe_load(yaml.safe_dump(good))
    del broken["spec"]["targetPorts"]
    broken["spec"]["appProtocol"] = "grpc"
    broken["spec"]["endpointPickerRef"]["portNumber"] = 9002
    broken["spec"]["selector"]["matchLabels"]["bad"] = "no spaces allowed"
    found = "\n".join(schema.violations(broken, stored))
    for part in ("'targetPorts' missing", "spec.appProtocol", "spec.endpointPickerRef.portNumber: unknown field",
                 "spec.selector.matchLabels.bad"):
        assert part in found
    route = yaml.safe_load(yaml.safe_dump(render(POOL)[("HTTPRoute", "runner-pool")]))
    route["spec"]["rules"][0]["filters"] = [{"type": "RequestHeaderModifier"}]
    assert "not stored" in "\n".join(schema.violations(route, schema.load(CRDS["HTTPRoute"])["schema"]))


def test_the_pool_selects_exactly_the_replicas_on_their_gateway_port(rendered: Resources) -> None:
    spec = rendered[("InferencePool", "runner-pool")]["spec"]
    selector = spec["selector"]["matchLabels"]
    deployments = of_kind(rendered, "Deployment")
    chosen = {name for name in deployments if selects(selector, pod(rendered, name)["metadata"]["labels"])}
    assert chosen == {"runner-replica"}
    gateway_port = port(container(rendered, "runner-replica", "gateway"), "http")
    assert [p["number"] for p in spec["targetPorts"]] == [gateway_port]
    # The CEL rule the stored schema leaves out: a Service reference needs its port.
    ref = spec["endpointPickerRef"]
    assert ref.get("kind", "Service") == "Service" and "port" in ref
    service = rendered[("Service", ref["name"])]["spec"]
    service_port = next(p for p in service["ports"] if p["port"] == ref["port"]["number"])
    assert selects(service["selector"], pod(rendered, "runner-pool-epp")["metadata"]["labels"])
    assert service_port["targetPort"] == port(container(rendered, "runner-pool-epp", "epp"), "grpc") == 9002


def test_the_route_sends_inference_from_the_gateway_to_the_pool(rendered: Resources) -> None:
    spec = rendered[("HTTPRoute", "runner-pool")]["spec"]
    assert [(p["kind"], p["name"]) for p in spec["parentRefs"]] == [("Gateway", "inference-gateway")]
    assert ("Gateway", "inference-gateway") in rendered
    paths = set()
    for rule in spec["rules"]:
        refs = [(b["group"], b["kind"], b["name"]) for b in rule["backendRefs"]]
        assert refs == [("inference.networking.k8s.io", "InferencePool", "runner-pool")]
        paths |= {m["path"]["value"] for m in rule["matches"]}
        assert rule["timeouts"]["request"] == "0s"  # streams are not cut by a total deadline
    assert paths == INFERENCE_PATHS
    gateway = rendered[("Gateway", "inference-gateway")]["spec"]
    assert gateway["gatewayClassName"] and gateway["listeners"][0]["protocol"] == "HTTP"


def test_each_replica_is_a_runner_and_a_gateway_on_the_shared_models(rendered: Resources) -> None:
    deployment = rendered[("Deployment", "runner-replica")]
    template = pod(rendered, "runner-replica")
    assert deployment["spec"]["replicas"] == 2
    assert template["metadata"]["labels"]["llm-d.ai/engine-type"] == "modelrunner"
    assert [c["name"] for c in template["spec"]["containers"]] == ["runner", "gateway"]
    runner, gateway = (container(rendered, "runner-replica", n) for n in ("runner", "gateway"))
    gateway_env = env(gateway)
    assert gateway_env["MODELRUNNER_RUNNER_ADDR"] == f"127.0.0.1:{port(runner, 'grpc')}"
    assert gateway_env["MODELRUNNER_RUNNER_METRICS_URL"] == f"http://127.0.0.1:{port(runner, 'metrics')}/metrics"
    assert gateway_env["MODELRUNNER_HTTP_LISTEN"] == "0.0.0.0:8000"
    assert env(runner)["MODELRUNNER_METRICS_LISTEN"] == "0.0.0.0:9090"
    assert template["spec"]["automountServiceAccountToken"] is False
    # The Store (model lookups) through the shared settings, as every service of the base.
    shared = next(r for (k, n), r in rendered.items() if k == "ConfigMap" and n.startswith("modelrunner-env-"))
    assert gateway["envFrom"] == runner["envFrom"] == [{"configMapRef": {"name": shared["metadata"]["name"]}}]
    assert shared["data"]["MODELRUNNER_STORE_ADDR"] == "store:12435"

    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert rendered[("PersistentVolumeClaim", volume["claimName"])]["spec"]["accessModes"] == ["ReadWriteMany"]
    mount = next(m for m in runner["volumeMounts"] if m["name"] == "models")
    store = container(rendered, "models", "store")
    assert mount["readOnly"] is True and volume["readOnly"] is True
    assert mount["mountPath"] == env(store)["MODELRUNNER_MODELS_DIR"]  # the Store's absolute blob paths hold


def test_readiness_keeps_a_replica_out_until_it_can_serve(rendered: Resources) -> None:
    runner, gateway = (container(rendered, "runner-replica", n) for n in ("runner", "gateway"))
    assert runner["readinessProbe"]["grpc"] == {"port": 12437, "service": "modelrunner.v1.Runner"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}
    # Liveness asks only whether the processes answer: a replica waiting to serve is not restarted.
    assert runner["livenessProbe"]["grpc"] == {"port": 12437}
    assert gateway["livenessProbe"]["grpc"] == {"port": port(gateway, "grpc-health")}
    for c in (runner, gateway):
        ports = {p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c:
                target = c[probe].get("grpc") or c[probe].get("httpGet")
                assert target["port"] in ports, (c["name"], probe)
    budget = rendered[("PodDisruptionBudget", "runner-replica")]["spec"]
    assert selects(budget["selector"]["matchLabels"], pod(rendered, "runner-replica")["metadata"]["labels"])
    assert budget["maxUnavailable"] == 1


def test_the_models_pod_keeps_only_the_store_and_the_runner_service_reaches_the_replicas(rendered: Resources) -> None:
    assert [c["name"] for c in pod(rendered, "models")["spec"]["containers"]] == ["store"]
    assert ("PersistentVolumeClaim", "runner-state") not in rendered
    volumes = pod(rendered, "models")["spec"]["volumes"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    assert claims == {"models"}
    service = rendered[("Service", "runner")]["spec"]
    runner = container(rendered, "runner-replica", "runner")
    assert selects(service["selector"], pod(rendered, "runner-replica")["metadata"]["labels"])
    assert {p["targetPort"] for p in service["ports"]} <= {p["containerPort"] for p in runner["ports"]}


def test_the_epp_configuration_maps_the_runners_gauges(rendered: Resources) -> None:
    config = epp_config(rendered)
    fields = schema.load("endpointpickerconfig.v1alpha1.yaml")
    assert schema.violations(config, fields["schema"]) == []
    plugins = {p.get("name", p["type"]): p for p in config["plugins"]}
    for plugin in plugins.values():
        if plugin["type"] in fields["parameters"]:
            assert schema.violations(plugin.get("parameters", {}), fields["parameters"][plugin["type"]]) == []
    refs = [p["pluginRef"] for profile in config["schedulingProfiles"] for p in profile["plugins"]]
    refs += [p["pluginRef"] for p in config["requestHandler"]["parsers"]]
    for source in config["dataLayer"]["sources"]:
        refs += [source["pluginRef"], *(e["pluginRef"] for e in source["extractors"])]
    assert set(refs) <= set(plugins), set(refs) - set(plugins)

    extractor = next(p for p in plugins.values() if p["type"] == "core-metrics-extractor")["parameters"]
    labels = pod(rendered, "runner-replica")["metadata"]["labels"]
    engine = next(e for e in extractor["engineConfigs"] if e["name"] == labels[extractor["engineLabelKey"]])
    assert {key: engine[key] for key in RUNNER_GAUGES} == RUNNER_GAUGES
    source = next(p for p in plugins.values() if p["type"] == "metrics-data-source")["parameters"]
    assert source["port"] == port(container(rendered, "runner-replica", "runner"), "metrics")
    parsers = [plugins[p["pluginRef"]]["type"] for p in config["requestHandler"]["parsers"]]
    assert parsers == ["openai-parser", "passthrough-parser"]  # OpenAI parsed, Ollama's paths fall through


def test_the_epp_runs_as_its_manifests_say_with_the_only_api_token(rendered: Resources) -> None:
    epp = container(rendered, "runner-pool-epp", "epp")
    template = pod(rendered, "runner-pool-epp")
    assert epp["image"] == "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0"
    assert {p["name"]: p["containerPort"] for p in epp["ports"]} == {"grpc": 9002, "grpc-health": 9003, "metrics": 9090}
    assert epp["readinessProbe"]["grpc"]["port"] == epp["livenessProbe"]["grpc"]["port"] == 9003
    args = dict(a.removeprefix("--").split("=", 1) for a in epp["args"])
    assert args["pool-name"] == "runner-pool" and ("InferencePool", args["pool-name"]) in rendered
    mount = next(m for m in epp["volumeMounts"] if m["name"] == "config")
    assert args["config-file"] == f"{mount['mountPath']}/epp-config.yaml"
    namespace = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in epp["env"]}
    assert namespace == {"NAMESPACE": "metadata.namespace"}

    deployments = of_kind(rendered, "Deployment")
    tokens = {name for name in deployments if pod(rendered, name)["spec"].get("automountServiceAccountToken")}
    assert tokens == {"runner-pool-epp"}
    account = template["spec"]["serviceAccountName"]
    assert rendered[("ServiceAccount", account)]["automountServiceAccountToken"] is False
    binding = rendered[("RoleBinding", "runner-pool-epp")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    rules = rendered[("Role", binding["roleRef"]["name"])]["rules"]
    granted = {(group, resource) for r in rules if set(r["verbs"]) == {"get", "list", "watch"}
               for group in r["apiGroups"] for resource in r["resources"]}
    assert granted == {("", "pods"), ("inference.networking.k8s.io", "inferencepools")}


def test_network_policies_admit_the_gateway_and_the_epp(rendered: Resources) -> None:
    policies = {name: r["spec"] for name, r in of_kind(rendered, "NetworkPolicy").items()}

    def peers(target: str, number: int) -> list[dict[str, str]]:
        labels = pod(rendered, target)["metadata"]["labels"]
        return [
            peer["podSelector"]["matchLabels"]
            for spec in policies.values()
            if "Ingress" in spec["policyTypes"] and selects(spec["podSelector"]["matchLabels"], labels)
            for rule in spec.get("ingress", [])
            if any(p["port"] == number for p in rule["ports"])
            for peer in rule["from"]
        ]

    gateway_proxies = {"gateway.networking.k8s.io/gateway-name": "inference-gateway"}
    assert peers("runner-replica", 8000) == [gateway_proxies]
    assert peers("runner-pool-epp", 9002) == [gateway_proxies]
    assert {"app.kubernetes.io/name": "epp"} in peers("runner-replica", 9090)
    assert {"app.kubernetes.io/name": "runner-replica"} in peers("models", 12435)
    assert {"app.kubernetes.io/name": "runner-replica"} in peers("distribution", 12436)
    for name in ("runner-replica", "runner-pool-epp"):  # under the base's default deny
        assert pod(rendered, name)["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelrunner"


def test_the_gpu_variant_applies_the_gpu_overlays_settings_to_the_replicas() -> None:
    gpu_patch = yaml.safe_load((VARIANTS["gpu"] / "runner-gpu.yaml").read_text())["spec"]["template"]["spec"]
    pool_gpu = render(POOL_VARIANTS["pool-gpu"])
    spec = pod(pool_gpu, "runner-replica")["spec"]
    for key in ("runtimeClassName", "nodeSelector", "tolerations"):
        assert spec[key] == gpu_patch[key], key
    runner = container(pool_gpu, "runner-replica", "runner")
    assert runner["resources"] == next(c for c in gpu_patch["containers"] if c["name"] == "runner")["resources"]
    assert runner["image"] == container(render(VARIANTS["gpu"]), "models", "runner")["image"]
    assert "nodeSelector" not in pod(pool_gpu, "models")["spec"]  # the Store stays off the GPU nodes
    cpu = render(POOL_VARIANTS["pool"])
    assert "nodeSelector" not in pod(cpu, "runner-replica")["spec"]


def test_the_replicas_run_the_bases_images() -> None:
    base, pool = render(VARIANTS["base"]), render(POOL_VARIANTS["pool"])
    assert container(pool, "runner-replica", "runner")["image"] == container(base, "models", "runner")["image"]
    assert container(pool, "runner-replica", "gateway")["image"] == container(base, "gateway", "gateway")["image"]
