"""deploy/envoy's scripts, loaded as modules: they are run as files, not installed as a package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ENVOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "envoy"


def load_deploy_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_envoy_{name}", ENVOY_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_deploy_module("render")
build_descriptors = load_deploy_module("build_descriptors")
