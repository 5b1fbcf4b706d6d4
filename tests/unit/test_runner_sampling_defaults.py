"""A model's own sampling defaults: the measured repeat penalty by kind of model, runtime flags in
llama-server's spelling over it, and a request's own values over both."""

from __future__ import annotations

import pytest

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.chat import ChatRenderer, choose_format
from modelrunner.runner.engine import BASE_MODEL_REPEAT_PENALTY, CHAT_MODEL_REPEAT_PENALTY, model_sampling_defaults
from modelrunner.runner.model_settings import ModelConfig, parse_runtime_flags, sampling_defaults
from modelrunner.runner.sampling_params import sampling_options
from modelrunner.v1 import runner_pb2

OWN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def renderer(template: str | None) -> ChatRenderer:
    return ChatRenderer(choose_format(template, None, "llama"), "<s>", "</s>")


def test_a_base_model_gets_the_stronger_repeat_penalty_and_flags_override_it():
    assert model_sampling_defaults(renderer(None), LoadOptions()) == {"repeat_penalty": BASE_MODEL_REPEAT_PENALTY}
    assert model_sampling_defaults(renderer(OWN_TEMPLATE), LoadOptions()) == {"repeat_penalty": CHAT_MODEL_REPEAT_PENALTY}
    flagged = LoadOptions(runtime_flags=("--repeat-penalty", "1.0", "--temp=0.2", "--top-k", "20"))
    assert model_sampling_defaults(renderer(OWN_TEMPLATE), flagged) == {"repeat_penalty": 1.0, "temperature": 0.2,
                                                                        "top_k": 20}


def test_sampling_flags_are_not_load_options_and_load_flags_still_parse():
    flags = ["--ctx-size", "4096", "--temp", "0.3"]
    assert parse_runtime_flags(flags) == {"context_size": 4096}
    assert sampling_defaults(flags) == {"temperature": 0.3}


@pytest.mark.parametrize("flags, message", [
    (["--temp", "hot"], "--temp takes a number"),
    (["--temp", "nan"], "--temp must be in"),
    (["--repeat-penalty", "-1"], "--repeat-penalty must be in"),
    (["--top-k", "1.5"], "--top-k takes a number"),
    (["--typical", "1"], "unsupported runtime flag '--typical'"),
    (["--temp"], "runtime flag --temp needs a value"),
])
def test_bad_sampling_flags_are_refused_when_configured(flags, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(runtime_flags=flags).validate()


def test_a_requests_own_values_win_over_the_models_defaults():
    defaults = {"repeat_penalty": 1.2, "temperature": 0.2}
    unset = sampling_options(runner_pb2.SamplingParams(), logprobs=-1, banned=frozenset(), vocab_size=256,
                             defaults=defaults)
    assert (unset.repeat_penalty, unset.temperature) == (1.2, 0.2)
    own = sampling_options(runner_pb2.SamplingParams(repeat_penalty=1.0, temperature=0.0), logprobs=-1,
                           banned=frozenset(), vocab_size=256, defaults=defaults)
    assert (own.repeat_penalty, own.temperature) == (1.0, 0.0)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999"])
def test_keep_alive_seconds_must_be_finite(text):
    from modelrunner.common.keep_alive import parse_keep_alive

    with pytest.raises(ValueError, match="finite"):
        parse_keep_alive(text)
