"""Text out of tokens: whole UTF-8 characters across token boundaries, stop strings held back;
sampling on the logits row; chat formats; keep-alive and runtime flags."""

from __future__ import annotations

import numpy as np
import pytest

from modelrunner.runner.chat import ChatRenderer, choose_format
from modelrunner.common.keep_alive import parse_keep_alive
from modelrunner.runner.model_settings import parse_runtime_flags
from modelrunner.runner.sampling import Sampler, SamplingOptions
from modelrunner.runner.textstream import TextStream


def test_multibyte_characters_split_across_tokens_come_out_whole():
    stream = TextStream()
    data = "é😀中".encode()
    out = [stream.push(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) + stream.flush() == "é😀中"
    assert all(piece in ("", "é", "😀", "中") for piece in out)


def test_stop_string_prefix_is_held_back_until_decided():
    stream = TextStream(stop=["<end>"])
    assert stream.push(b"hello <e") == "hello "
    assert stream.push(b"x") == "<ex"
    assert stream.push(b" <en") == " "
    assert stream.push(b"d> tail") == ""
    assert stream.stopped
    assert stream.flush() == ""


def test_held_text_is_released_at_the_end():
    stream = TextStream(stop=["STOP"])
    assert stream.push(b"abc ST") == "abc "
    assert stream.flush() == "ST"


def test_greedy_bias_and_top_k():
    logits = np.array([0.0, 5.0, 1.0, 4.0], dtype=np.float32)
    assert Sampler(SamplingOptions(temperature=0), 4).sample(logits.copy()).token == 1
    biased = Sampler(SamplingOptions(temperature=0, logit_bias={1: -100.0}), 4)
    row = logits.copy()
    biased.prepare(row)
    assert biased.sample(row).token == 3
    top1 = Sampler(SamplingOptions(temperature=1.0, top_k=1, seed=1), 4)
    assert {top1.sample(logits.copy()).token for _ in range(20)} == {1}


def test_a_nan_bias_bans_its_token_instead_of_winning_argmax():
    sampler = Sampler(SamplingOptions(temperature=0, logit_bias={1: float("nan")}), 4)
    row = np.array([0.0, 5.0, 1.0, 4.0], dtype=np.float32)
    sampler.prepare(row)
    assert row[1] == -np.inf and sampler.sample(row).token == 3


def test_seeded_sampling_is_reproducible_and_penalties_apply():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(1000).astype(np.float32)
    a = Sampler(SamplingOptions(temperature=1.0, top_k=50, seed=7), 1000)
    b = Sampler(SamplingOptions(temperature=1.0, top_k=50, seed=7), 1000)
    assert [a.sample(logits.copy()).token for _ in range(10)] == [b.sample(logits.copy()).token for _ in range(10)]
    pen = Sampler(SamplingOptions(temperature=0, presence_penalty=100.0), 1000)
    best = int(np.argmax(logits))
    pen.accept(best)
    row = logits.copy()
    pen.prepare(row)
    assert pen.sample(row).token != best


def test_logprobs_are_normalised():
    logits = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    s = Sampler(SamplingOptions(temperature=0, logprobs=2), 3).sample(logits)
    assert s.token == 2
    assert np.isclose(np.exp([lp for _, lp in s.top]).sum() + np.exp(logits[0] - np.log(np.exp(logits).sum())), 1.0)


def test_gemma_without_template_gets_its_turn_format_with_system_folded_in():
    fmt = choose_format(None, None, "gemma3")
    assert fmt.stop == ("<end_of_turn>",)
    text = ChatRenderer(fmt, "<bos>", "<eos>").render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    )
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nSay hi<end_of_turn>\n<start_of_turn>model\n"


def test_template_order_gguf_then_artifact():
    assert choose_format("{{ x }}", "{{ y }}", "gemma3").source == "gguf"
    assert choose_format(None, "{{ y }}", "gemma3").source == "artifact"
    assert choose_format(None, None, "llama").source == "builtin:chatml"


@pytest.mark.parametrize(
    "text,seconds", [("5m", 300), ("30s", 30), ("1h30m", 5400), ("0", 0), ("120", 120), ("-1", None), ("-1s", None)]
)
def test_keep_alive(text, seconds):
    assert parse_keep_alive(text) == seconds


def test_bad_keep_alive_and_flags_say_what_to_use():
    with pytest.raises(ValueError, match="use a duration like"):
        parse_keep_alive("soon")
    with pytest.raises(ValueError, match="supported flags are"):
        parse_runtime_flags(["--mystery", "1"])
    assert parse_runtime_flags(["--threads", "2", "--flash-attn=on"]) == {"threads": 2, "flash_attention": True}


def test_the_stop_string_that_ended_the_text_is_named():
    from modelrunner.runner.textstream import TextStream

    stream = TextStream(["END", "ST"])
    assert stream.push(b"a STEND") == "a "
    assert stream.stopped and stream.stop_sequence == "ST"
