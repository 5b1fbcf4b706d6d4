"""What a GGUF file says about its model, read from the header (mmap: no weights are loaded).

The Store fills a model's config from it; the Runner takes the chat template, the trained context
length and the sizes it needs to estimate memory before loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGUFReader, GGUFValueType, LlamaFileType

# Metadata kept in the model config's `gguf` map: small scalar facts, never the vocabulary.
_MAX_VALUE_CHARS = 256


@dataclass
class GGUFInfo:
    architecture: str
    quantization: str
    parameters: int
    context_length: int
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    sliding_window: int
    tensor_bytes: int
    chat_template: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def parameters_text(self) -> str:
        """Docker Model Runner's form: "268.10 M"."""
        for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if self.parameters >= scale:
                return f"{self.parameters / scale:.2f} {unit}"
        return str(self.parameters)


def human_size(num_bytes: float) -> str:
    """Docker Model Runner's form: "253.36 MB" (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{int(num_bytes)} B"


def _value(reader: GGUFReader, key: str):
    fld = reader.fields.get(key)
    if fld is None or not fld.types:
        return None
    if fld.types[0] == GGUFValueType.ARRAY:
        return None
    return fld.contents()


def _quantization(file_type: int | None) -> str:
    if file_type is None:
        return ""
    try:
        return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type {file_type}"


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Reads a GGUF header; raises ValueError when the file is not GGUF."""
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # gguf raises bare ValueError/AssertionError/struct errors on bad files
        raise ValueError(f"{Path(path).name} is not a valid GGUF file: {exc}") from exc
    arch = str(_value(reader, "general.architecture") or "")

    def arch_int(name: str, default: int = 0) -> int:
        v = _value(reader, f"{arch}.{name}")
        return int(v) if isinstance(v, (int, float)) else default

    head_count = arch_int("attention.head_count")
    embedding = arch_int("embedding_length")
    head_dim = embedding // head_count if head_count else 0
    metadata: dict[str, str] = {}
    for key, fld in reader.fields.items():
        if key.startswith("tokenizer.") or key.startswith("GGUF.") or not fld.types:
            continue
        if fld.types[0] == GGUFValueType.ARRAY:
            continue
        text = str(fld.contents())
        if len(text) <= _MAX_VALUE_CHARS:
            metadata[key] = text
    template = _value(reader, "tokenizer.chat_template")
    return GGUFInfo(
        architecture=arch,
        quantization=_quantization(_value(reader, "general.file_type")),
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=embedding,
        head_count=head_count,
        head_count_kv=arch_int("attention.head_count_kv", head_count),
        key_length=arch_int("attention.key_length", head_dim),
        value_length=arch_int("attention.value_length", head_dim),
        sliding_window=arch_int("attention.sliding_window"),
        tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        chat_template=str(template) if template else None,
        metadata=metadata,
    )
