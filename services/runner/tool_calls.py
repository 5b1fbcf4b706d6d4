"""Tool calls in a model's answer.

A chat template that takes `tools` teaches the model one of a few output conventions. Like
llama.cpp's server in its generic mode, the Runner recognises the common ones: `<tool_call>{...}
</tool_call>` blocks (Hermes, Qwen), `[TOOL_CALLS] [...]` (Mistral), and an answer that is only a JSON
object, or a list of them, with a "name" and "arguments" (or "parameters") (Llama 3.1 and generic).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_MISTRAL = "[TOOL_CALLS]"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


def _call(obj: object) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str) or not name:
        return None
    text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=text)


def _calls(payload: str) -> list[ToolCall] | None:
    """The calls a JSON payload holds, or None when it is not (only) tool calls."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(item) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return calls  # type: ignore[return-value]


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the answer's remaining content, the tool calls in it); no calls leaves the text as it is."""
    tagged = _TAGGED.findall(text)
    if tagged:
        calls = [c for payload in tagged for c in (_calls(payload) or [])]
        if calls:
            return _TAGGED.sub("", text).strip(), calls
    stripped = text.strip()
    if stripped.startswith(_MISTRAL):
        calls = _calls(stripped[len(_MISTRAL):].strip())
        if calls:
            return "", calls
    if stripped.startswith(("{", "[")):
        calls = _calls(stripped)
        if calls:
            return "", calls
    return text, []
