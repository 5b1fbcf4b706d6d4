"""The Kubernetes manifests: `kubectl kustomize` of the base and the GPU overlay, each resource validated
strictly (unknown fields rejected) with kubernetes-validate's offline schemas, then the deployment's
own rules: probes, resources, the shared models volume, network isolation, GPU scheduling."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"base": K8S / "base", "gpu": K8S / "overlays" / "gpu"}
KUBERNETES_VERSION = "1.32.0"


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its `kustomize` renders the manifests)")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in kustomize(VARIANTS[request.param])}


def pod_spec(resources: dict, name: str) -> dict[str, Any]:
    return resources[("Deployment", name)]["spec"]["template"]["spec"]


def containers(resources: dict) -> dict[str, dict[str, Any]]:
    return {
        c["name"]: c
        for (kind, _), r in resources.items()
        if kind == "Deployment"
        for c in r["spec"]["template"]["spec"]["containers"]
    }


def test_every_resource_validates_strictly(rendered: dict) -> None:
    for resource in rendered.values():
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_a_deployment_and_service_per_service(rendered: dict) -> None:
    assert set(containers(rendered)) == {"envoy", "gateway", "store", "distribution", "runner"}
    services = {name for kind, name in rendered if kind == "Service"}
    # The names Envoy's clusters and the services' *_ADDR settings dial, as in docker-compose.yml.
    assert services == {"envoy", "gateway", "store", "distribution", "runner"}
    assert ("ConfigMap", "modelrunner-env") not in rendered  # generated with a content hash suffix
    assert any(kind == "ConfigMap" and name.startswith("modelrunner-env-") for kind, name in rendered)


def test_services_have_native_grpc_probes_and_bounded_resources(rendered: dict) -> None:
    for name, container in containers(rendered).items():
        probe_kind = "httpGet" if name == "envoy" else "grpc"
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe_kind in container[probe], f"{name}: {probe}"
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
        assert "memory" in container["resources"]["limits"], name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_store_and_runner_share_the_models_claim_read_only_for_the_runner(rendered: dict) -> None:
    spec = pod_spec(rendered, "models")
    claim = next(v for v in spec["volumes"] if v["name"] == "models")["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in rendered
    mounts = {c["name"]: next(m for m in c["volumeMounts"] if m["name"] == "models") for c in spec["containers"]}
    assert mounts["runner"]["readOnly"] is True and not mounts["store"].get("readOnly")
    assert mounts["runner"]["mountPath"] == mounts["store"]["mountPath"]
    store = next(c for c in spec["containers"] if c["name"] == "store")
    env = {e["name"]: e.get("value") for e in store["env"]}
    assert env["MODELRUNNER_MODELS_DIR"] == mounts["store"]["mountPath"]


def test_only_envoy_and_the_gateway_reach_the_services(rendered: dict) -> None:
    policies = {name: r["spec"] for (kind, name), r in rendered.items() if kind == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "modelrunner"}},
        "policyTypes": ["Ingress"],
    }

    def allowed(policy: str, port: int) -> set[str]:
        return {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for rule in policies[policy]["ingress"]
            if any(p["port"] == port for p in rule["ports"])
            for peer in rule.get("from", [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "*"}}}])
        }

    assert allowed("gateway", 12434) == {"envoy"}
    assert allowed("distribution", 12436) == {"gateway", "envoy"}
    assert allowed("models", 12437) == {"gateway", "envoy"}
    # The Store also takes blob streams from the Distribution and resolves for the Runner beside it.
    assert allowed("models", 12435) == {"gateway", "envoy", "distribution", "models"}
    for name, resource in rendered.items():
        if name[0] == "Deployment":
            labels = resource["spec"]["template"]["metadata"]["labels"]
            assert labels["app.kubernetes.io/part-of"] == "modelrunner", name


def test_replicated_services_have_disruption_budgets(rendered: dict) -> None:
    budgets = {name for kind, name in rendered if kind == "PodDisruptionBudget"}
    replicated = {name for (kind, name), r in rendered.items() if kind == "Deployment" and r["spec"]["replicas"] > 1}
    assert budgets == replicated == {"envoy", "gateway", "distribution"}


def test_gpu_overlay_schedules_the_runner_on_nvidia_nodes() -> None:
    resources = {(r["kind"], r["metadata"]["name"]): r for r in kustomize(VARIANTS["gpu"])}
    spec = pod_spec(resources, "models")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    runner = next(c for c in spec["containers"] if c["name"] == "runner")
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert runner["image"].endswith("-cuda")
    assert runner["readinessProbe"]["grpc"]["port"] == 12437  # the base's probes survive the patch
    base = {(r["kind"], r["metadata"]["name"]): r for r in kustomize(VARIANTS["base"])}
    assert "nodeSelector" not in pod_spec(base, "models")


def test_every_container_restarts_and_its_probes_hit_its_own_ports(rendered: dict) -> None:
    """Kubernetes restarts a container that exits or fails liveness only where restartPolicy is Always
    (a Deployment's only choice); a probe on a port the container does not open would restart it forever."""
    for (kind, name), resource in rendered.items():
        if kind == "Deployment":
            assert resource["spec"]["template"]["spec"].get("restartPolicy", "Always") == "Always", name
    for name, container in containers(rendered).items():
        ports = {p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                target = container[probe].get("grpc") or container[probe].get("httpGet")
                assert target["port"] in ports, f"{name}: {probe} on {target['port']}, not one of {ports}"
