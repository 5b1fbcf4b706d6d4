"""Chat prompts: the model's own template, else the artifact's template layer, else the known format
of the architecture.

Templates are rendered in jinja2's immutable sandbox the way Hugging Face's transformers (and
llama-cpp-python's Jinja2ChatFormatter) render them. The base Gemma 3 GGUF has no template at all;
llama-cpp-python falls back to the llama-2 format there and Gemma answers with an empty string, so
Gemma's turn format is built in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

GEMMA_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})
GEMMA_END_OF_TURN = "<end_of_turn>"

# Gemma's turn format: no system role, so a system message is folded into the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n"
    "{% if role == 'user' and ns.system %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# ChatML, the most common format, for architectures without a better-known one.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TemplateError(ValueError):
    """The chat template could not render these messages (the message says why)."""


@dataclass(frozen=True)
class ChatFormat:
    template: str
    stop: tuple[str, ...]  # special tokens or strings that end the assistant's turn
    source: str            # "gguf" | "artifact" | "builtin:<name>"


def choose_format(gguf_template: str | None, artifact_template: str | None, architecture: str) -> ChatFormat:
    if gguf_template:
        return ChatFormat(gguf_template, _stops_of(gguf_template), "gguf")
    if artifact_template:
        return ChatFormat(artifact_template, _stops_of(artifact_template), "artifact")
    if architecture in GEMMA_ARCHITECTURES:
        return ChatFormat(GEMMA_TEMPLATE, (GEMMA_END_OF_TURN,), "builtin:gemma")
    return ChatFormat(CHATML_TEMPLATE, ("<|im_end|>",), "builtin:chatml")


def _stops_of(template: str) -> tuple[str, ...]:
    """End-of-turn markers a template uses, which some GGUFs do not flag as end of generation."""
    return tuple(s for s in (GEMMA_END_OF_TURN, "<|im_end|>", "<|eot_id|>", "<|end|>") if s in template)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatRenderer:
    """A compiled chat template."""

    def __init__(self, fmt: ChatFormat, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)
        try:
            self._template = env.from_string(fmt.template)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the chat template ({fmt.source}) does not compile: {exc}") from exc
        self.format = fmt
        self._bos = bos_token
        self._eos = eos_token

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        try:
            return self._template.render(
                messages=messages,
                tools=tools or None,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except TemplateError:
            raise
        except Exception as exc:  # the template is the model's code: whatever it raises is its failure
            raise TemplateError(f"the chat template ({self.format.source}) failed: {exc}") from exc
