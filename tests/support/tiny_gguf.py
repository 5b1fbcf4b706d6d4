"""Tiny random-weight GGUFs written at test time (about 0.5 MB; llama.cpp loads them in ms).

Their output is gibberish but deterministic under greedy sampling, which is what scheduler and API
tests need. A 256-token byte vocabulary makes every byte string tokenizable. `write_tiny_gguf` writes a
llama; `write_tiny_reranker` a Qwen3 reranker as llama.cpp's converter writes one (rank pooling, a
yes/no classifier head `cls.output`, a `rerank` prompt template), which llama.cpp scores pairs with;
`write_tiny_bert_reranker` a BERT cross-encoder (BGE's kind: no template, a `cls` + `cls.output` head).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, PoolingType, TokenType

from modelrunner.runner.backends.llamacpp import BYTE_LEVEL_CHARS

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
VOCAB = 256
RERANK_TEMPLATE = "<s>query: {query}\ndocument: {document}\nrelevant:"


def write_tiny_gguf(
    path: str | Path,
    *,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
    context_length: int = 512,
    n_embd: int = 64,
    n_layers: int = 2,
    n_head: int = 4,
) -> Path:
    return _write(path, "llama", "tiny-llama", seed, chat_template, context_length, n_embd, n_layers, n_head)


def write_tiny_bpe_gguf(path: str | Path, *, merges: list[str], missing_bytes: bytes = b"") -> Path:
    """A llama with a byte-level BPE vocabulary (GPT-2's kind: each byte a character, then `merges`,
    such as "h e"), less the byte tokens of `missing_bytes`, to test what depends on the tokenizer."""
    tokens = [c for b, c in BYTE_LEVEL_CHARS.items() if b not in missing_bytes]
    tokens += ["".join(m.split(" ")) for m in merges]
    tokens += ["<|endoftext|>"]

    def vocab(writer: GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([TokenType.NORMAL] * (len(tokens) - 1) + [TokenType.CONTROL])
        writer.add_token_merges(merges)
        writer.add_bos_token_id(len(tokens) - 1)
        writer.add_eos_token_id(len(tokens) - 1)

    return _write(path, "llama", "tiny-bpe", 0, None, 512, 64, 2, 4, vocab=(vocab, len(tokens)))


def write_tiny_reranker(path: str | Path, *, seed: int = 0, context_length: int = 512) -> Path:
    """A Qwen3 reranker: llama.cpp scores a pair by P("yes") from `cls.output` at its last token."""
    return _write(path, "qwen3", "tiny-reranker", seed, None, context_length, 64, 2, 4, reranker=True)


def write_tiny_bert_reranker(path: str | Path, *, seed: int = 0, context_length: int = 512) -> Path:
    """A BERT cross-encoder: llama.cpp scores a pair by the logit its head gives the first token."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_embd, n_ff, n_layers = 64, 128, 2
    writer = GGUFWriter(str(path), "bert")
    writer.add_name("tiny-bert-reranker")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(4)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(PoolingType.RANK)
    writer.add_file_type(0)
    writer.add_uint32("tokenizer.ggml.token_type_count", 2)
    _add_byte_vocab(writer)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    def norm(name: str, n: int) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(n, dtype=np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(n, dtype=np.float32))

    tensor("token_embd.weight", VOCAB, n_embd)
    tensor("token_types.weight", 2, n_embd)
    tensor("position_embd.weight", context_length, n_embd)
    norm("token_embd_norm", n_embd)
    for i in range(n_layers):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{name}.weight", n_embd, n_embd)
        norm(f"blk.{i}.attn_output_norm", n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
        norm(f"blk.{i}.layer_output_norm", n_embd)
    tensor("cls.weight", n_embd, n_embd)
    tensor("cls.output.weight", 1, n_embd)
    return _finish(writer, path)


def _add_byte_vocab(writer: GGUFWriter) -> None:
    writer.add_tokenizer_model("llama")
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(3, VOCAB)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * (VOCAB - 3)
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * VOCAB)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def _finish(writer: GGUFWriter, path: Path) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write(
    path: str | Path,
    arch: str,
    model_name: str,
    seed: int,
    chat_template: str | None,
    context_length: int,
    n_embd: int,
    n_layers: int,
    n_head: int,
    *,
    reranker: bool = False,
    vocab: tuple[Callable[[GGUFWriter], None], int] | None = None,
) -> Path:
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_ff = n_embd * 2
    writer = GGUFWriter(str(path), arch)
    writer.add_name(model_name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)
    add_vocab, vocab_size = vocab or (_add_byte_vocab, VOCAB)
    add_vocab(writer)
    if chat_template:
        writer.add_chat_template(chat_template)
    if reranker:
        writer.add_pooling_type(PoolingType.RANK)
        writer.add_classifier_output_labels(["yes", "no"])
        writer.add_chat_template([{"name": "rerank", "template": RERANK_TEMPLATE}])

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    tensor("token_embd.weight", vocab_size, n_embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    tensor("output.weight", vocab_size, n_embd)
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{name}.weight", n_embd, n_embd)
        if reranker:  # Qwen3 normalises each head's queries and keys
            writer.add_tensor(f"blk.{i}.attn_q_norm.weight", np.ones(n_embd // n_head, dtype=np.float32))
            writer.add_tensor(f"blk.{i}.attn_k_norm.weight", np.ones(n_embd // n_head, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    if reranker:
        tensor("cls.output.weight", 2, n_embd)  # the yes and no rows of the head
    return _finish(writer, path)
