"""The llama.cpp backend as the Runner's parent process sees it: facts and memory estimates, no library.

Estimates read the GGUF header in Python (modelrunner.common.gguf_info, a fraction of a second, arrays
skipped), so the parent never maps llama.cpp nor a vocabulary: before, a vocab-only load per estimate
left about 100 MiB in the parent beside the engine process's own copy. `load` (engine processes only)
imports the llama.cpp module (llamacpp_model.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata

from modelrunner.common.gguf_info import read_gguf_info
from modelrunner.runner.backends.base import Backend, LoadedModel, LoadOptions, MemoryEstimate

DEFAULT_MAX_CONTEXT = 8192
CONTEXT_PADDING = 256  # llama.cpp rounds a context up to a multiple of this


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def context_for(trained: int, options: LoadOptions) -> int:
    """The KV cache's tokens: the configured size, else the trained context capped at 8192."""
    return options.context_size or min(trained or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)


def _byte_level_chars() -> dict[int, str]:
    """GPT-2's byte-to-character table: byte-level BPE stores each byte as the token of this character."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 256)]
    moved = (b for b in range(256) if b not in kept)
    return dict(sorted(({b: chr(b) for b in kept} | {b: chr(256 + i) for i, b in enumerate(moved)}).items()))


BYTE_LEVEL_CHARS = _byte_level_chars()


def kv_cache_bytes(n_layers: int, context: int, n_head_kv: int, key_len: int, value_len: int) -> int:
    """f16 K and V for every layer and cell (an upper bound for sliding-window layers)."""
    return n_layers * context * n_head_kv * (key_len + value_len) * 2


@functools.lru_cache(maxsize=256)
def _trained_context(path: str) -> int:
    """The GGUF's trained context (its header read once: a model's blobs never change)."""
    return read_gguf_info(path).context_length


@functools.cache
def _gpu_offload() -> bool:
    """Asks llama.cpp in a child process (once, about a second), so that this one never maps it."""
    probe = "from modelrunner.runner.backends.llamacpp_model import supports_gpu_offload as s; print(int(s()))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and done.stdout.strip().endswith("1")


class LlamaCppBackend(Backend):
    name = "llama.cpp"

    def version(self) -> str:
        return metadata.version("llama_cpp_python")

    def gpu_available(self) -> bool:
        return _gpu_offload()

    def estimate_memory(self, gguf_paths: Sequence[str], options: LoadOptions) -> MemoryEstimate:
        """Weights (the files' sizes, which mmap maps) + the f16 KV cache for the context."""
        info = read_gguf_info(gguf_paths[0])  # ValueError when it is not GGUF
        kv = kv_cache_bytes(
            info.block_count,
            context_for(info.context_length, options),
            info.head_count_kv or 1,
            info.key_length,
            info.value_length,
        )
        weights = sum(os.path.getsize(p) for p in gguf_paths)
        return MemoryEstimate(weights_bytes=weights, kv_cache_bytes=kv)

    def request_options(self, gguf_paths: Sequence[str], options: LoadOptions, context_size: int) -> LoadOptions:
        """Rounded up as llama.cpp pads it, and at most the trained context, as Ollama clamps num_ctx
        (past it a RoPE model's answers degrade)."""
        if not gguf_paths:
            return options  # load() refuses it
        trained = _trained_context(gguf_paths[0])
        wanted = -(-context_size // CONTEXT_PADDING) * CONTEXT_PADDING
        wanted = min(wanted, trained) if trained else wanted
        return options if wanted == context_for(trained, options) else replace(options, context_size=wanted)

    def load(self, gguf_paths: Sequence[str], options: LoadOptions) -> LoadedModel:
        if not gguf_paths:
            raise ValueError("the model has no GGUF layer")
        from modelrunner.runner.backends.llamacpp_model import load_model

        return load_model(gguf_paths, options, self.estimate_memory(gguf_paths, options))
