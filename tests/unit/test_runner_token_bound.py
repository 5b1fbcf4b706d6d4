"""The lower bound on a text's tokens that lets the Runner refuse megabytes which cannot fit the
context without tokenizing them (jobs.py): it must never exceed the real count, whatever the text,
on the tiny byte vocabulary and on Gemma's 262k-token SPM vocabulary with its long runs of U+2581."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.default_model import default_files
from tests.support.tiny_gguf import write_tiny_bpe_gguf

# Pieces that tokenizers treat specially: spaces as U+2581, special-token text, whitespace runs, UTF-8.
PIECES = st.sampled_from(["\u2581", " ", "  ", "\n", "\t", "<start_of_turn>", "<end_of_turn>", "<s>", "</s>",
                          "<0x41>", "a", "the", "\u00e9", "\u4e2d", "\U0001f600", "-" * 16, "=" * 40, "\u2581" * 16])
# Bytes 0-2 are left out: the tiny vocabulary has no byte tokens for them (its ids 0-2 are <unk>, <s> and
# </s>), and llama.cpp's byte fallback aborts on a byte it cannot find (std::out_of_range).
TEXTS = st.lists(st.one_of(PIECES, st.text(st.characters(min_codepoint=3), max_size=20)), max_size=60).map("".join)


def tokens_and_bound(model, text: str) -> tuple[int, int]:
    count = len(model.tokenize(text, add_special=False, parse_special=True))
    return count, model.fewest_tokens(text.encode("utf-8", errors="surrogatepass"))


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    return LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=64, parallel=1, threads=1))


@pytest.fixture(scope="module")
def gemma(gemma_gguf):
    return LlamaCppBackend().load([str(gemma_gguf)], LoadOptions(context_size=256, parallel=1, threads=1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_the_bound_never_exceeds_the_tiny_vocabularys_count(tiny, text):
    count, bound = tokens_and_bound(tiny, text.encode("utf-8", errors="ignore").decode())
    assert bound <= count


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_the_bound_never_exceeds_gemmas_count(gemma, text):
    count, bound = tokens_and_bound(gemma, text.encode("utf-8", errors="ignore").decode())
    assert bound <= count


@pytest.fixture(scope="module")
def smollm2():
    """The bundled default model: byte-level BPE whose vocabulary lacks 21 bytes (0x04, 0xF1, ...)."""
    return LlamaCppBackend().load([str(default_files()[0])], LoadOptions(context_size=256, parallel=1, threads=1))


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(TEXTS, st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200)))
def test_the_bound_never_exceeds_the_default_models_count(smollm2, text):
    count, bound = tokens_and_bound(smollm2, text.encode("utf-8", errors="ignore").decode())
    assert bound <= count


@pytest.mark.slow
def test_the_default_models_bound_refuses_a_4_mib_prompt_unless_it_holds_a_byte_bpe_drops(smollm2):
    assert smollm2.fewest_tokens(b"word " * 800_000) > 8192
    assert smollm2.fewest_tokens(b"word " * 800_000 + "\U00040000".encode()) == 0  # 0xF1: no token


@pytest.mark.slow
def test_gemmas_bound_refuses_a_4_mib_prompt_for_its_default_context(gemma):
    """Gemma's longest token text is 48 bytes (16 x U+2581): 4 MiB is at least 87k tokens, past any
    context the bundled model is configured with by default (8192)."""
    assert gemma.fewest_tokens(b"a" * 4 * 1024 * 1024) > 8192
    assert gemma.fewest_tokens(b"a" * 100) >= 1


MERGES = ["Ġ t", "Ġt h", "Ġth e", "a a", "aa aa", "aaaa aaaa", "Ġ Ġ", "ĠĠ ĠĠ"]


def test_the_bound_never_exceeds_a_byte_level_bpe_vocabularys_count(tmp_path):
    model = LlamaCppBackend().load([str(write_tiny_bpe_gguf(tmp_path / "bpe.gguf", merges=MERGES))],
                                   LoadOptions(context_size=64, parallel=1, threads=1))
    assert model.fewest_tokens(b"a" * 100) >= 1
    for text in ["a" * 1000, " the" * 300, " " * 999, "\u00e9\u4e2d\U0001f600" * 50, "<|endoftext|>" * 40]:
        count, bound = tokens_and_bound(model, text)
        assert 0 < bound <= count, (text[:20], bound, count)


def test_no_bound_for_a_text_with_a_byte_bpe_lacks_and_would_drop(tmp_path):
    """llama.cpp's BPE leaves out a byte its vocabulary has no token for: a text of such bytes has
    fewer tokens than any bound from the token lengths."""
    path = write_tiny_bpe_gguf(tmp_path / "holes.gguf", merges=MERGES, missing_bytes=b"\x01")
    model = LlamaCppBackend().load([str(path)], LoadOptions(context_size=64, parallel=1, threads=1))
    assert model.fewest_tokens(b"a\x01" * 100) == 0
    assert len(model.tokenize("\x01" * 100, add_special=False, parse_special=True)) < 100
    count, bound = tokens_and_bound(model, "a" * 1000)  # a text without that byte keeps its bound
    assert 0 < bound <= count
