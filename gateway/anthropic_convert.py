"""Anthropic Messages requests -> the Runner's chat, and its answers -> Anthropic messages and errors.

Blocks map onto the contract's chat: a system prompt is a system message, `tool_use` blocks are an
assistant message's tool calls, each `tool_result` a tool message answering one of them. Images and
documents are refused: the Runner serves text-only models.
"""

from __future__ import annotations

import json
import uuid

from modelrunner.gateway import forced_tools
from modelrunner.gateway.anthropic_models import ContentBlock, CountTokensRequest, MessagesRequest, Tool
from modelrunner.gateway.errors import APIError
from modelrunner.gateway.openai_convert import Collected, ModelName
from modelrunner.gateway.responses_convert import renamed
from modelrunner.v1 import runner_pb2

# The Runner's finish_reason -> Anthropic's stop_reason.
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "stop": "end_turn"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param)


def _text_of(blocks: str | list[ContentBlock] | None, param: str) -> str:
    """The text of a string or a list of text blocks (a system prompt, a tool result)."""
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    texts = []
    for j, block in enumerate(blocks):
        if block.type == "text" and block.text is None:
            raise _invalid(f"{param}[{j}].text", "a text block needs its text")
        if block.type != "text":
            raise _invalid(f"{param}[{j}]", f"only text blocks are supported here, got {block.type!r}")
        texts.append(block.text)
    return "\n".join(texts)


def _unsupported(block: ContentBlock, param: str) -> APIError:
    if block.type in ("image", "document"):
        return _invalid(param, f"{block.type} blocks are not supported: this server runs text-only models")
    return _invalid(param, f"unsupported content block type {block.type!r}")


def _tool_call(block: ContentBlock, param: str) -> runner_pb2.ToolCall:
    if not block.id or not block.name:
        raise _invalid(param, "a tool_use block needs an id and a name")
    arguments = json.dumps(block.input or {}, ensure_ascii=False)
    return runner_pb2.ToolCall(id=block.id, type="function", name=block.name, arguments=arguments)


def _messages(body: CountTokensRequest) -> list[runner_pb2.ChatMessage]:
    out = []
    if body.system:
        out.append(runner_pb2.ChatMessage(role="system", content=_text_of(body.system, "system")))
    tool_names: dict[str, str] = {}  # tool_use id -> tool name, for the tool messages answering them
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            out.append(runner_pb2.ChatMessage(role=message.role, content=message.content))
            continue
        texts, calls, results = [], [], []
        for j, block in enumerate(message.content):
            param = f"messages[{i}].content[{j}]"
            if block.type == "text" and block.text is not None:
                texts.append(block.text)
            elif block.type == "tool_use" and message.role == "assistant":
                calls.append(_tool_call(block, param))
                tool_names[block.id] = block.name
            elif block.type == "tool_result" and message.role == "user":
                if not block.tool_use_id:
                    raise _invalid(param, "a tool_result block needs the tool_use_id it answers")
                content = _text_of(block.content, f"{param}.content")
                results.append(runner_pb2.ChatMessage(
                    role="tool", content=f"Error: {content}" if block.is_error else content,
                    tool_call_id=block.tool_use_id, name=tool_names.get(block.tool_use_id, ""),
                ))
            elif block.type in ("thinking", "redacted_thinking"):
                continue  # earlier reasoning is not part of the prompt
            elif block.type == "text":
                raise _invalid(f"{param}.text", "a text block needs its text")
            elif block.type in ("tool_use", "tool_result"):
                raise _invalid(param, f"a {block.type} block belongs in an "
                                      f"{'assistant' if block.type == 'tool_use' else 'user'} message")
            else:
                raise _unsupported(block, param)
        out.extend(results)
        if texts or calls or not results:
            out.append(runner_pb2.ChatMessage(role=message.role, content="\n".join(texts), tool_calls=calls))
    return out


def _tools(tools: list[Tool]) -> list[dict]:
    out = []
    for i, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            raise _invalid(f"tools[{i}].type", f"server tool {tool.type!r} is not supported: define a custom tool "
                                               "with a name and an input_schema")
        function = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def chat(body: CountTokensRequest) -> tuple[runner_pb2.Chat, str | None]:
    """The contract's chat, and the tool a call is forced to ("" for any tool, None when none is)."""
    chat = runner_pb2.Chat(messages=_messages(body))
    tools = _tools(body.tools or [])
    choice = body.tool_choice
    forced = None
    if choice is not None and choice.type == "none":
        chat.tool_choice_json = json.dumps("none")
    elif tools and choice is not None and choice.type in ("any", "tool"):
        if choice.type == "tool":
            if not any(t["function"]["name"] == choice.name for t in tools):
                raise _invalid("tool_choice.name", f"no tool named {choice.name!r} in tools")
        forced = choice.name if choice.type == "tool" else ""
    elif choice is not None and choice.type in ("any", "tool"):
        raise _invalid("tool_choice", f"tool_choice {choice.type!r} needs tools")
    if tools:
        chat.tools_json = json.dumps(tools)
    return chat, forced


def generate_request(body: MessagesRequest, model: ModelName) -> runner_pb2.GenerateRequest:
    chat_, forced = chat(body)
    stops = [s for s in body.stop_sequences or () if s]  # an empty one would end every answer at once
    sampling = runner_pb2.SamplingParams(max_tokens=body.max_tokens, stop=stops)
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(body, name)
        if value is not None:
            setattr(sampling, name, value)
    request = runner_pb2.GenerateRequest(model=model.qualified, chat=chat_, sampling=sampling)
    output_format = body.output_config.format if body.output_config else None
    if forced is not None:
        if output_format is not None:
            raise _invalid("output_config.format", "a structured output cannot be combined with a forced tool_choice")
        forced_tools.force(request, json.loads(chat_.tools_json), forced or None, field="tools[{}].input_schema")
    elif output_format is not None:
        request.response_format.type = "json_schema"
        request.response_format.json_schema = json.dumps(output_format.schema_)
    return request


def blame_format(error: APIError) -> APIError:
    """The refusal of a schema names OpenAI's response_format.json_schema.schema (openai_convert.blame
    reworded the contract's field for every route sharing _start): name the
    field the client sent, output_config.format.schema (a forced call's refusal already names its tool)."""
    return renamed(error, "response_format.json_schema.schema", "output_config.format.schema")


def stop_reason(c: Collected) -> str:
    if c.finish_reason == "stop" and c.stop_sequence:
        return "stop_sequence"
    return _STOP_REASONS.get(c.finish_reason, "end_turn")


def usage(u: runner_pb2.Usage) -> dict:
    """Anthropic counts cache reads apart: input_tokens are the prompt tokens that were prefilled."""
    return {
        "input_tokens": u.prompt_tokens - u.cached_prompt_tokens,
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_prompt_tokens,
    }


def tool_use_block(call: runner_pb2.ToolCall) -> dict:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = {"arguments": call.arguments}  # the model wrote no JSON: keep its text
    if not isinstance(arguments, dict):
        arguments = {"arguments": arguments}
    return {"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name, "input": arguments}


def message(c: Collected, model: str, message_id: str | None = None) -> dict:
    content: list[dict] = []
    if c.text or not c.tool_calls:
        content.append({"type": "text", "text": c.text})
    content.extend(tool_use_block(call) for call in c.tool_calls)
    return {
        "id": message_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(c),
        "stop_sequence": c.stop_sequence or None,
        "usage": usage(c.usage),
    }
