"""llama.cpp through llama-cpp-python's low-level API: one context per model, one unified KV cache.

The context holds `parallel` sequences in ONE unified KV cache (`kv_unified`), so a long request may
use more than context/slots cells while the others are short; llama.cpp's defaults (`n_seq_max=1`,
`kv_unified=False`) would silently cap every sequence at n_ctx/n_seq_max. The batch is allocated once
and reused by every decode step; logits are read as zero-copy numpy views.

Only an engine process imports this module (through LlamaCppBackend.load): the Runner's parent
process never maps llama.cpp, so its memory is its own and not a second copy of the library's.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Sequence

import llama_cpp
import numpy as np

from modelrunner.runner.backends.base import Grammar, LoadedModel, LoadOptions, MemoryEstimate, ModelFacts
from modelrunner.runner.backends.llamacpp import BYTE_LEVEL_CHARS, DEFAULT_MAX_CONTEXT, context_for, usable_cores
from modelrunner.runner.backends.llamacpp_pooling import MAX_SEQUENCES, pooled

# Tokens llama.cpp computes at once (its physical batch, n_ubatch): the compute buffers are sized by it,
# so a larger logical batch (a step's tokens, n_batch) costs no memory; llama.cpp's own default.
UBATCH = 512
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
_GGML_LOG_WARN = 3
_GGML_LOG_ERROR = 4
log = logging.getLogger(__name__)
_backend_lock = threading.Lock()
_backend_ready = False


@llama_cpp.llama_log_callback
def _forward_log(level: int, text: bytes, _user_data) -> None:
    """llama.cpp writes hundreds of lines per load to stderr; keep its warnings and errors only."""
    if level in (_GGML_LOG_WARN, _GGML_LOG_ERROR):
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            log.log(logging.ERROR if level == _GGML_LOG_ERROR else logging.WARNING, "llama.cpp: %s", message)


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_log_set(_forward_log, None)
            llama_cpp.llama_backend_init()
            _backend_ready = True


def supports_gpu_offload() -> bool:
    _init_backend()
    return bool(llama_cpp.llama_supports_gpu_offload())


def load_model(gguf_paths: Sequence[str], options: LoadOptions, memory: MemoryEstimate) -> LlamaCppModel:
    """Loads the weights (mmap) and makes the model's context; ValueError when llama.cpp cannot."""
    _init_backend()
    gpu_layers = options.gpu_layers
    if gpu_layers is None:
        gpu_layers = -1 if supports_gpu_offload() else 0
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = gpu_layers
    mparams.use_mmap = True
    if len(gguf_paths) == 1:
        model = llama_cpp.llama_model_load_from_file(gguf_paths[0].encode(), mparams)
    else:
        paths = (ctypes.c_char_p * len(gguf_paths))(*[p.encode() for p in gguf_paths])
        model = llama_cpp.llama_model_load_from_splits(paths, len(gguf_paths), mparams)
    if not model:
        raise ValueError(f"llama.cpp could not load {gguf_paths[0]}")
    try:
        return LlamaCppModel(model, options, memory, gpu_layers)
    except Exception:
        llama_cpp.llama_model_free(model)
        raise


def _meta(model, key: str) -> str | None:
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    if n < 0:
        return None
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace")


class LlamaCppModel(LoadedModel):
    def __init__(self, model, options: LoadOptions, memory: MemoryEstimate, gpu_layers: int) -> None:
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._options = options
        self._threads = options.threads or usable_cores()
        trained = llama_cpp.llama_model_n_ctx_train(model)
        context = context_for(trained, options)
        batch = max(options.batch_size, options.parallel)
        cparams = self._context_params(context, batch, min(batch, UBATCH), options.parallel)
        # One logits row per sequence and step: without this cap llama.cpp reserves n_batch rows
        # (512 x 262k floats = 512 MiB for Gemma 3).
        cparams.n_outputs_max = options.parallel
        if options.flash_attention is not None:
            cparams.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if options.flash_attention
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        self._ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not self._ctx:
            raise ValueError(f"llama.cpp could not create a context of {context} tokens")
        self._batch_size = llama_cpp.llama_n_batch(self._ctx)  # llama.cpp caps it at the context
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._n_swa = llama_cpp.llama_model_n_swa(model)
        self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(self._batch_size,))
        self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(self._batch_size,))
        self._out = np.ctypeslib.as_array(self._batch.logits, shape=(self._batch_size,))
        self._n_seq = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(self._batch_size,))
        self._n_seq[:] = 1
        self._seq_ids = [self._batch.seq_id[i] for i in range(self._batch_size)]
        self._n = 0
        self._n_out = 0
        self._step_logits = np.empty((0, self._n_vocab), dtype=np.float32)
        self._pieces: dict[int, bytes] = {}
        self._bound: tuple[int, re.Pattern[bytes] | None] | None = None
        self._pool_ctx: dict[bool, object] = {}  # rank pooling? -> context
        self._embed_lock = threading.Lock()
        arch = _meta(model, "general.architecture") or ""
        stop = {t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)}
        self.memory = memory
        self.facts = ModelFacts(
            architecture=arch,
            context_size=llama_cpp.llama_n_ctx(self._ctx),
            trained_context=trained,
            parallel=options.parallel,
            gpu_layers=gpu_layers,
            vocab_size=self._n_vocab,
            chat_template=_meta(model, "tokenizer.chat_template"),
            bos_text=self._special_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_text=self._special_text(llama_cpp.llama_vocab_eos(self._vocab)),
            stop_tokens=frozenset(stop),
            reranker=llama_cpp.llama_pooling_type(self._ctx) == llama_cpp.LLAMA_POOLING_TYPE_RANK,
        )

    def _context_params(self, context: int, batch: int, ubatch: int, parallel: int):
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = context
        cparams.n_batch = batch
        cparams.n_ubatch = ubatch
        cparams.n_seq_max = parallel
        cparams.kv_unified = True
        cparams.swa_full = False
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        cparams.no_perf = True
        return cparams

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    # Vocabulary.
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def fewest_tokens(self, data: bytes) -> int:
        """SPM and BPE vocabularies keep every byte of a text in some token, whose stored text is at
        least as long as what it covers (SPM stores a space as the 3 bytes of U+2581, byte-level BPE
        each byte as a character of 1 or 2 bytes; a character the vocabulary lacks is one token of at
        most 4 bytes), so a text has at least len(data) / (the longest stored text) tokens. WordPiece
        and Unigram drop or normalise whitespace, a special token that strips the whitespace beside it
        can swallow any run of it, and llama.cpp's BPE drops a byte its vocabulary lacks (SmolLM2's has
        no token for 21 bytes, 0x04 and 0xF1 among them): no bound then, or for a text with such a byte."""
        if self._bound is None:  # read once, on first need: 262k texts take a fraction of a second
            self._bound = self._survey_vocabulary()
        longest, dropped = self._bound
        if not longest or (dropped is not None and dropped.search(data)):
            return 0
        return -(-len(data) // longest)

    def _survey_vocabulary(self) -> tuple[int, re.Pattern[bytes] | None]:
        """(the longest stored text, or 0 for no bound; a pattern of the bytes BPE would drop)."""
        vocab = self._vocab
        if llama_cpp.llama_vocab_type(vocab) not in (llama_cpp.LLAMA_VOCAB_TYPE_SPM, llama_cpp.LLAMA_VOCAB_TYPE_BPE):
            return 0, None
        strips = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP | llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP
        longest, short = 4, set()
        for token in range(self._n_vocab):
            if llama_cpp.llama_vocab_get_attr(vocab, token) & strips:
                return 0, None
            text = llama_cpp.llama_vocab_get_text(vocab, token) or b""
            longest = max(longest, len(text))
            if len(text) <= 2:
                short.add(text)
        # SPM emits an unknown symbol byte by byte (and aborts on a byte token it lacks): never fewer.
        if llama_cpp.llama_vocab_type(vocab) != llama_cpp.LLAMA_VOCAB_TYPE_BPE:
            return longest, None
        dropped = bytes(b for b, char in BYTE_LEVEL_CHARS.items() if char.encode() not in short)
        return longest, re.compile(b"[" + re.escape(dropped) + b"]") if dropped else None

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            cached = self._pieces[token] = buf.raw[:n]
        return cached

    def token_for_text(self, text: str) -> int | None:
        tokens = self.tokenize(text, add_special=False, parse_special=True)
        return tokens[0] if len(tokens) == 1 else None

    # Decode steps.
    @property
    def batch_capacity(self) -> int:
        return self._batch_size

    @property
    def batch_tokens(self) -> int:
        return self._n

    def batch_clear(self) -> None:
        self._n = 0
        self._n_out = 0

    def _output_row(self, want_logits: bool) -> int:
        if not want_logits:
            return -1
        self._n_out += 1
        return self._n_out - 1

    def batch_add(self, token: int, pos: int, seq: int, want_logits: bool) -> int:
        i = self._n
        self._tokens[i] = token
        self._pos[i] = pos
        self._seq_ids[i][0] = seq
        self._out[i] = want_logits
        self._n = i + 1
        return self._output_row(want_logits)

    def batch_add_many(self, tokens: Sequence[int], start_pos: int, seq: int, logits_last: bool) -> int:
        """Appends a prompt chunk; returns the logits row of its last token (-1 unless `logits_last`)."""
        i, n = self._n, len(tokens)
        self._tokens[i : i + n] = tokens
        self._pos[i : i + n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self._out[i : i + n] = 0
        self._out[i + n - 1] = logits_last
        ids = self._seq_ids
        for j in range(i, i + n):
            ids[j][0] = seq
        self._n = i + n
        return self._output_row(logits_last)

    def decode(self) -> int:
        """One llama_decode; then ONE call for all of the step's logits rows (llama.cpp keeps them
        contiguous, in batch order) instead of a foreign call per sequence, each of which releases and
        retakes the GIL."""
        self._batch.n_tokens = self._n
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc == 0 and self._n_out:
            ptr = llama_cpp.llama_get_logits(self._ctx)
            self._step_logits = np.ctypeslib.as_array(ptr, shape=(self._n_out, self._n_vocab))
        return rc

    def logits(self, row: int) -> np.ndarray:
        return self._step_logits[row]

    def clear_sequence(self, seq: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def keep_prefix(self, seq: int, n: int) -> bool:
        return self._window_kept(seq, n) and bool(llama_cpp.llama_memory_seq_rm(self._mem, seq, n, -1))

    def share_prefix(self, source: int, seq: int, n: int) -> bool:
        if not self._window_kept(source, n):
            return False
        llama_cpp.llama_memory_seq_cp(self._mem, source, seq, 0, n)
        return True

    def _window_kept(self, seq: int, n: int) -> bool:
        """Whether the sequence's cells can carry on at position n. In sliding-window layers that
        token attends to the positions after n - n_swa, and the cache drops cells older than the
        window: llama-server's test, stricter by one position."""
        return not self._n_swa or llama_cpp.llama_memory_seq_pos_min(self._mem, seq) <= max(0, n - self._n_swa)

    def grammar(self, gbnf: str) -> LlamaCppGrammar:
        return LlamaCppGrammar(self._vocab, gbnf, self._n_vocab)

    # Embeddings and reranking: contexts of their own (embeddings=True), made on first use.
    def embed(self, inputs: Sequence[list[int]]) -> list[np.ndarray]:
        with self._embed_lock:
            vectors = pooled(self._pooling_context(rank=False), inputs, llama_cpp.llama_model_n_embd(self._model))
        norms = [float(np.linalg.norm(v)) for v in vectors]
        return [v / norm if norm > 0 else v for v, norm in zip(vectors, norms)]

    def rank_prompt(self, query: str, document: str) -> list[int]:
        """As llama.cpp's server lays a pair out: the GGUF's `rerank` template with {query} and
        {document} filled in (in one pass, so neither text can inject the other's placeholder), else
        [BOS] query [EOS] [SEP] document [EOS], each special token where the vocabulary adds it."""
        template = llama_cpp.llama_model_chat_template(self._model, b"rerank")
        if template:
            fill = {"{query}": query, "{document}": document}
            text = re.sub(r"\{query\}|\{document\}", lambda m: fill[m.group(0)], template.decode("utf-8"))
            return self.tokenize(text, add_special=False, parse_special=True)
        vocab = self._vocab
        eos = llama_cpp.llama_vocab_eos(vocab)
        if eos < 0:
            eos = llama_cpp.llama_vocab_sep(vocab)
        add_eos = llama_cpp.llama_vocab_get_add_eos(vocab)
        out = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
        out += self.tokenize(query, add_special=False, parse_special=False)
        out += [eos] if add_eos else []
        out += [llama_cpp.llama_vocab_sep(vocab)] if llama_cpp.llama_vocab_get_add_sep(vocab) else []
        out += self.tokenize(document, add_special=False, parse_special=False)
        out += [eos] if add_eos else []
        return out

    def rank(self, inputs: Sequence[list[int]]) -> list[float]:
        """The first of the classifier's outputs per pair, as llama.cpp's server scores: a logit for
        BERT-style heads, P("yes") for Qwen3 rerankers (llama.cpp softmaxes their yes/no head)."""
        if not self.facts.reranker:
            raise ValueError("the model does not pool by rank")
        width = max(llama_cpp.llama_model_n_cls_out(self._model), 1)
        with self._embed_lock:
            scores = pooled(self._pooling_context(rank=True), inputs, width)
        return [float(s[0]) for s in scores]

    def _pooling_context(self, *, rank: bool):
        """Rank pooling for rank(); for embed(), the model's own pooling (an embedding model's) or mean
        pooling (a generative model's, or a reranker's, whose own pooling yields scores, not vectors)."""
        if self._pool_ctx.get(rank) is None:
            context = min(self.facts.context_size, DEFAULT_MAX_CONTEXT)
            cparams = self._context_params(context, context, context, MAX_SEQUENCES)  # inputs in one ubatch
            cparams.embeddings = True
            has_pooling = _meta(self._model, f"{self.facts.architecture}.pooling_type") is not None
            if rank:
                cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_RANK
            elif has_pooling and not self.facts.reranker:
                cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
            else:
                cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if not ctx:
                raise RuntimeError(f"llama.cpp could not create a{' rank' if rank else 'n embedding'} context")
            self._pool_ctx[rank] = ctx
        return self._pool_ctx[rank]

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        for ctx in self._pool_ctx.values():
            llama_cpp.llama_free(ctx)
        self._pool_ctx.clear()
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None


class LlamaCppGrammar(Grammar):
    """A llama.cpp grammar sampler applied to one sequence's logits through a candidates array."""

    def __init__(self, vocab, gbnf: str, n_vocab: int) -> None:
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._sampler:
            raise ValueError("invalid grammar")
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._data["id"] = np.arange(n_vocab, dtype=np.int32)
        self._array = llama_cpp.llama_token_data_array(
            data=self._data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._one_array = llama_cpp.llama_token_data_array(
            data=self._one.ctypes.data_as(llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False
        )

    def apply(self, logits: np.ndarray) -> None:
        self._data["logit"] = logits
        self._array.size = len(self._data)
        self._array.selected = -1
        self._array.sorted = False
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._array))
        logits[:] = self._data["logit"]

    def allows(self, token: int) -> bool:
        self._one[0] = (token, 0.0, 0.0)
        self._one_array.size = 1
        self._one_array.selected = -1
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._one_array))
        return bool(np.isfinite(self._one["logit"][0]))

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None
