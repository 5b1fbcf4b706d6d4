"""What a GGUF file says about its model, read from the header (mmap: no weights are loaded).

The Store fills a model's config from it; the Runner takes the chat template, the trained context
length and the sizes it needs to estimate memory before loading. The header is parsed with struct,
skipping arrays: gguf.GGUFReader builds numpy views for every array element, which takes 24-52 s on
Gemma 3's 262k-token vocabulary where this takes 0.14 s.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

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
    data_end: int = 0  # the size the file must have to hold every tensor the header declares

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


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Arrays of arrays deeper than this are refused: a hostile header nesting them 100k deep made the
# recursive skip raise RecursionError (a 500) where it must be a clear "not a valid GGUF file".
_MAX_ARRAY_DEPTH = 8
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_KEY_BYTES = 65535  # the GGUF spec's limit
_MAX_VALUE_BYTES = 1 << 20  # chat templates are tens of kB; longer strings are skipped, never decoded
_MAX_STRINGS = 1 << 24  # vocabularies and merges are under a million entries


class _Cursor:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value[0]

    def string(self, limit: int = _MAX_VALUE_BYTES) -> str | None:
        """The string here; None (skipped) past `limit` bytes, so a hostile length costs no memory."""
        n = self.take("Q")
        text = None if n > limit else bytes(self.data[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def key(self) -> str:
        text = self.string(_MAX_KEY_BYTES)
        if text is None:
            raise ValueError(f"a key longer than {_MAX_KEY_BYTES} bytes")
        return text

    def value(self, vtype: int, depth: int = 0):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:  # skipped: vocabularies and the like are never needed here
            item_type, count = self.take("I"), self.take("Q")
            if item_type == _STRING:
                if count > _MAX_STRINGS:  # each is skipped in Python: a hostile count would take minutes
                    raise ValueError(f"an array of {count} strings (at most {_MAX_STRINGS})")
                for _ in range(count):
                    n = self.take("Q")
                    self.pos += n
            elif item_type == _ARRAY:
                if depth >= _MAX_ARRAY_DEPTH:
                    raise ValueError(f"arrays nested deeper than {_MAX_ARRAY_DEPTH}")
                for _ in range(count):
                    self.value(_ARRAY, depth + 1)
            else:
                self.pos += struct.calcsize("<" + _SCALARS[item_type]) * count
            return None
        return self.take(_SCALARS[vtype])


def read_header(path: str | Path) -> tuple[dict[str, object], list[tuple[int, int]], int]:
    """(key -> value, arrays as None), [(n_elements, n_bytes) per tensor], the size the file must have
    to hold the tensors' data; ValueError if not GGUF."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        c = _Cursor(view)
        try:
            if c.take("I") != 0x46554747:
                raise ValueError("GGUF magic invalid")
            version = c.take("I")
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version} is not supported")
            n_tensors, n_kv = c.take("Q"), c.take("Q")
            fields: dict[str, object] = {}
            for _ in range(n_kv):
                key = c.key()
                fields[key] = c.value(c.take("I"))
            tensors = []
            data_end = 0
            for _ in range(n_tensors):
                c.key()  # the tensor's name
                n_dims = c.take("I")
                if n_dims > _MAX_DIMS:  # else a hostile count reads the rest of the file as dimensions
                    raise ValueError(f"a tensor with {n_dims} dimensions (GGML has at most {_MAX_DIMS})")
                dims = [c.take("Q") for _ in range(n_dims)]
                ggml_type = c.take("I")
                offset = c.take("Q")  # from the start of the data section
                n = 1
                for d in dims:
                    n *= d
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
                tensors.append((n, n * type_size // block))
                data_end = max(data_end, offset + tensors[-1][1])
            alignment = fields.get("general.alignment")
            alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
            data_start = -(-c.pos // alignment) * alignment
            return fields, tensors, data_start + data_end
        except (struct.error, KeyError, IndexError) as exc:
            raise ValueError(f"truncated or malformed GGUF header: {exc}") from exc
        finally:
            view.release()


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
        fields, tensors, data_end = read_header(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{Path(path).name} is not a valid GGUF file: {exc}") from exc
    arch = str(fields.get("general.architecture") or "")

    def arch_int(name: str, default: int = 0) -> int:
        v = fields.get(f"{arch}.{name}")
        return int(v) if isinstance(v, (int, float)) else default

    head_count = arch_int("attention.head_count")
    embedding = arch_int("embedding_length")
    head_dim = embedding // head_count if head_count else 0
    metadata = {
        k: str(v)
        for k, v in fields.items()
        if v is not None and not k.startswith("tokenizer.") and len(str(v)) <= _MAX_VALUE_CHARS
    }
    template = fields.get("tokenizer.chat_template")
    return GGUFInfo(
        architecture=arch,
        quantization=_quantization(fields.get("general.file_type")),
        parameters=sum(n for n, _ in tensors),
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=embedding,
        head_count=head_count,
        head_count_kv=arch_int("attention.head_count_kv", head_count),
        key_length=arch_int("attention.key_length", head_dim),
        value_length=arch_int("attention.value_length", head_dim),
        sliding_window=arch_int("attention.sliding_window"),
        tensor_bytes=sum(b for _, b in tensors),
        data_end=data_end,
        chat_template=str(template) if template else None,
        metadata=metadata,
    )
