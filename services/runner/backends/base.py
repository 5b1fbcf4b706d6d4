"""The engine interface the Runner schedules on: a backend loads a model into a `LoadedModel`.

The scheduler and the lifecycle manager only speak to these types, so another engine (vLLM on GPU
nodes) can plug in without touching them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LoadOptions:
    """How to load one model; zero/None fields take the backend's default."""

    context_size: int = 0      # tokens of the unified KV cache shared by all slots; 0: min(trained, 8192)
    parallel: int = 16         # sequences decoded together (slots): 16 users without a queue; cells are shared
    gpu_layers: int | None = None  # None: all when the backend can offload, else 0
    flash_attention: bool | None = None  # None: the backend decides
    # Tokens per decode step (prompt chunks + one per running sequence), llama-server's n_batch: a long
    # prompt stalls running streams in few long steps rather than many (bench/long_arrival.py).
    batch_size: int = 2048
    threads: int = 0           # 0: the CPU cores this process may use
    # A step carrying prompt tokens lasts at most this many plain decode steps while sequences decode
    # (step_budget.py); 0: no limit, the whole batch (llama-server's way). Off by default: at 8-16 it cut
    # the running streams' longest stall 4-7x but raised their whole-stream p99 3-6x and a long prompt's
    # TTFT up to 2x (bench/long_arrival.py, bench/RESULTS.md).
    prefill_step_factor: float = 0.0
    runtime_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes


@dataclass
class ModelFacts:
    """What the loaded model says about itself, read once at load time."""

    architecture: str
    context_size: int          # the context actually allocated
    trained_context: int
    parallel: int
    gpu_layers: int
    vocab_size: int
    chat_template: str | None  # from the GGUF metadata
    bos_text: str
    eos_text: str
    stop_tokens: frozenset[int] = field(default_factory=frozenset)  # end of generation
    reranker: bool = False     # pools by rank: a classifier head scores (query, document) pairs


class InputTooLong(ValueError):
    """One input of an embed or rank call does not fit the context; `index` says which."""

    def __init__(self, index: int, n_tokens: int, n_ctx: int) -> None:
        super().__init__(f"input of {n_tokens} tokens exceeds the context of {n_ctx} tokens")
        self.index = index
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


class LoadedModel(ABC):
    """A model in memory with its decode context. Only the scheduler's thread calls the decode
    methods; tokenize/piece are safe from any thread (they only read the vocabulary)."""

    facts: ModelFacts
    memory: MemoryEstimate

    @abstractmethod
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    @abstractmethod
    def fewest_tokens(self, data: bytes) -> int:
        """A lower bound on the tokens of the UTF-8 text `data` (0 where none is known), so that
        a text that cannot fit the context is refused before tokenizing it: seconds of CPU for
        megabytes, which nothing can cancel."""

    @abstractmethod
    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as empty)."""

    @abstractmethod
    def token_for_text(self, text: str) -> int | None:
        """The single special token spelt `text` (e.g. "<end_of_turn>"), if the vocabulary has one."""

    # Decode-step API, used by the scheduler's thread only.
    @property
    @abstractmethod
    def batch_capacity(self) -> int:
        """Tokens one step may carry (prompt chunks and running sequences together)."""

    @property
    @abstractmethod
    def batch_tokens(self) -> int:
        """Tokens in the step's batch so far."""

    @abstractmethod
    def batch_clear(self) -> None: ...

    @abstractmethod
    def batch_add(self, token: int, pos: int, seq: int, want_logits: bool) -> int:
        """Appends a token to the step's batch; returns its row in the step's logits (-1: none)."""

    @abstractmethod
    def batch_add_many(self, tokens: Sequence[int], start_pos: int, seq: int, logits_last: bool) -> int:
        """Appends a prompt chunk; returns the logits row of its last token (-1 unless `logits_last`)."""

    @abstractmethod
    def decode(self) -> int:
        """Runs the batch: 0 on success, 1 when the KV cache has no room, <0 on error."""

    @abstractmethod
    def logits(self, row: int) -> np.ndarray:
        """A writable zero-copy view of one row of the step's logits (valid until the next decode)."""

    @abstractmethod
    def clear_sequence(self, seq: int) -> None:
        """Frees the KV cells of a sequence."""

    @abstractmethod
    def keep_prefix(self, seq: int, n: int) -> bool:
        """Frees the KV cells of a sequence from position `n` on, keeping its first `n` tokens for the
        next request that starts with them. False when they cannot serve as a prefix (the cache of a
        sliding-window model no longer holds the window before `n`); the sequence is then unchanged."""

    @abstractmethod
    def share_prefix(self, source: int, seq: int, n: int) -> bool:
        """Gives the empty sequence `seq` the KV cells of `source`'s first `n` tokens, shared rather
        than copied. False, with nothing changed, when they cannot serve as a prefix (as above)."""

    @abstractmethod
    def grammar(self, gbnf: str) -> Grammar: ...

    @abstractmethod
    def embed(self, inputs: Sequence[list[int]]) -> list[np.ndarray]:
        """Pooled, L2-normalised embeddings of tokenized inputs (blocking)."""

    @abstractmethod
    def rank_prompt(self, query: str, document: str) -> list[int]:
        """The tokens of one (query, document) pair laid out as the reranker was trained to read them."""

    @abstractmethod
    def rank(self, inputs: Sequence[list[int]]) -> list[float]:
        """The relevance score of each tokenized pair (blocking); only for `facts.reranker` models."""

    @abstractmethod
    def close(self) -> None: ...


class Grammar(ABC):
    """A grammar constraint for one sequence."""

    @abstractmethod
    def apply(self, logits: np.ndarray) -> None:
        """Sets the logits of tokens the grammar forbids here to -inf, in place."""

    @abstractmethod
    def allows(self, token: int) -> bool:
        """Whether the grammar allows `token` here: one token checked, not the whole vocabulary."""

    @abstractmethod
    def accept(self, token: int) -> None:
        """Advances past `token`, which the grammar must allow (llama.cpp aborts on any other)."""

    @abstractmethod
    def close(self) -> None: ...


class Backend(ABC):
    name: str

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def gpu_available(self) -> bool: ...

    @abstractmethod
    def estimate_memory(self, gguf_paths: Sequence[str], options: LoadOptions) -> MemoryEstimate:
        """What loading would take, before loading (blocking, fast)."""

    @abstractmethod
    def request_options(self, gguf_paths: Sequence[str], options: LoadOptions, context_size: int) -> LoadOptions:
        """The options for a request that asks for a context of its own (Ollama's num_ctx), as the
        engine would really run it; `options` themselves when that is the context they give anyway, so
        that such requests share the configured engine (blocking, fast)."""

    @abstractmethod
    def load(self, gguf_paths: Sequence[str], options: LoadOptions) -> LoadedModel:
        """Loads a model (blocking, seconds); raises ValueError when the file cannot be loaded."""
