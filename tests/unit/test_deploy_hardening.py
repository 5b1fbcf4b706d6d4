"""The containers run with the least they need (issue 16): compose services read-only, without
capabilities or privilege escalation, published on this machine only; Kubernetes pods without a
service-account token, non-root, read-only, and with egress beyond the stack for the Distribution only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_deploy_compose import COMPOSE_FILES, compose_config
from tests.unit.test_deploy_k8s import VARIANTS, kustomize


@pytest.fixture(scope="module", params=sorted(COMPOSE_FILES))
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    return compose_config(COMPOSE_FILES[request.param])["services"]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def cluster(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(VARIANTS[request.param])


def test_compose_services_are_read_only_without_capabilities(compose: dict[str, Any]) -> None:
    for name, service in compose.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"] and not service.get("cap_add"), name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name
        assert not service.get("privileged"), name


def test_compose_publishes_the_edge_on_loopback_and_answers_local_names_only(compose: dict[str, Any]) -> None:
    (port,) = compose["envoy"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 12434
    # The gateway behind it refuses other Host names (DNS rebinding), though it binds the container's 0.0.0.0.
    assert compose["gateway"]["environment"]["MODELRUNNER_ALLOWED_HOSTS"] == "localhost"


def _pods(cluster: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r["spec"]["template"]["spec"] for r in cluster if r["kind"] == "Deployment"}


def test_pods_have_no_token_and_run_non_root_read_only(cluster: list[dict[str, Any]]) -> None:
    for name, pod in _pods(cluster).items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]


def test_only_the_distribution_reaches_beyond_the_stack(cluster: list[dict[str, Any]]) -> None:
    policies = {r["metadata"]["name"]: r["spec"] for r in cluster if r["kind"] == "NetworkPolicy"}
    stack = {"matchLabels": {"app.kubernetes.io/part-of": "modelrunner"}}
    assert policies["default-deny-egress"] == {"podSelector": stack, "policyTypes": ["Egress"]}
    beyond = set()
    for name, policy in policies.items():
        for rule in policy.get("egress", []):
            peers = rule.get("to", [])
            assert peers, f"{name} allows egress to anywhere"
            for peer in peers:
                if "ipBlock" in peer:
                    beyond.add(policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
                elif peer.get("podSelector") != stack:  # DNS: the cluster's resolver, port 53 only
                    assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}, (name, peer)
                    assert {p["port"] for p in rule["ports"]} == {53}, name
    assert beyond == {"distribution"}
