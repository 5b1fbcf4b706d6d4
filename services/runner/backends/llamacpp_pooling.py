"""Pooled outputs of a llama.cpp context made with `embeddings=True`: one vector per input sequence.

Embeddings (mean, CLS or last-token pooling) and reranking (rank pooling: a classifier head's scores)
both read them. Inputs are packed into one decode, up to MAX_SEQUENCES of them, as long as they fit
the context together; the context's memory is cleared before each decode, so every input is pooled
on its own whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp
import numpy as np

from modelrunner.runner.backends.base import InputTooLong

MAX_SEQUENCES = 16


def pooled(ctx, inputs: Sequence[list[int]], width: int) -> list[np.ndarray]:
    """The `width` floats llama.cpp pools for each tokenized input, in order (blocking)."""
    n_ctx = llama_cpp.llama_n_ctx(ctx)
    for i, tokens in enumerate(inputs):
        if len(tokens) > n_ctx:
            raise InputTooLong(i, len(tokens), n_ctx)
    batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
    mem = llama_cpp.llama_get_memory(ctx)
    out: list[np.ndarray] = []
    try:
        start = 0
        while start < len(inputs):
            group = _next_group(inputs, start, n_ctx)
            n = 0
            for seq, tokens in enumerate(group):
                for pos, token in enumerate(tokens):
                    batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
                    batch.seq_id[n][0], batch.logits[n] = seq, 1
                    n += 1
            batch.n_tokens = n
            llama_cpp.llama_memory_clear(mem, True)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed while pooling")
            for seq in range(len(group)):
                ptr = llama_cpp.llama_get_embeddings_seq(ctx, seq)
                out.append(np.ctypeslib.as_array(ptr, shape=(width,)).astype(np.float32))
            start += len(group)
    finally:
        llama_cpp.llama_batch_free(batch)
    return out


def _next_group(inputs: Sequence[list[int]], start: int, n_ctx: int) -> list[list[int]]:
    group: list[list[int]] = []
    used = 0
    while start + len(group) < len(inputs) and len(group) < MAX_SEQUENCES:
        tokens = inputs[start + len(group)]
        if group and used + len(tokens) > n_ctx:
            break
        group.append(tokens)
        used += len(tokens)
    return group
