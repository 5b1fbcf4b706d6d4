"""OpenAI Responses requests -> the Runner's chat, and its answers -> Response objects. Pure functions.

Input is normalised into the items `GET /v1/responses/{id}/input_items` lists (messages with typed
content parts, function_call, function_call_output, each with an id); a stored response keeps its
conversation as such items, and a chat is rebuilt from them for the next turn.
"""

from __future__ import annotations

import json

from modelrunner.gateway import forced_tools
from modelrunner.gateway.errors import APIError
from modelrunner.gateway.openai_convert import Collected, ModelName, new_id
from modelrunner.gateway.responses_models import ContentPart, FunctionTool, InputItem, ResponsesRequest
from modelrunner.v1 import runner_pb2

_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code="invalid_value")


def _part_texts(content: str | list[ContentPart] | None, param: str) -> list[str]:
    if content is None or isinstance(content, str):
        return [content or ""]
    texts = []
    for j, part in enumerate(content):
        if part.type in _TEXT_PARTS and part.text is None:
            raise _invalid(f"{param}[{j}].text", f"a part of type {part.type!r} needs its text")
        if part.type not in _TEXT_PARTS:
            kind = "image, file and audio" if part.type.startswith("input_") else f"{part.type!r}"
            raise _invalid(f"{param}[{j}]", f"{kind} content is not supported: this server runs text-only models")
        texts.append(part.text)
    return texts


def output_text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, role: str, texts: list[str], status: str = "completed") -> dict:
    if role == "assistant":
        content = [output_text_part(t) for t in texts]
    else:
        content = [{"type": "input_text", "text": t} for t in texts]
    return {"id": item_id, "type": "message", "role": role, "content": content, "status": status}


def _item(item: InputItem, param: str) -> dict | None:
    if item.type == "message":
        if item.role is None:
            raise _invalid(f"{param}.role", "a message needs a role: user, assistant, system or developer")
        return message_item(item.id or new_id("msg"), item.role, _part_texts(item.content, f"{param}.content"))
    if item.type == "function_call":
        if not item.call_id or not item.name:
            raise _invalid(param, "a function_call item needs a call_id and a name")
        return {"id": item.id or new_id("fc"), "type": "function_call", "call_id": item.call_id, "name": item.name,
                "arguments": item.arguments or "{}", "status": "completed"}
    if item.type == "function_call_output":
        if not item.call_id or item.output is None:
            raise _invalid(param, "a function_call_output item needs a call_id and an output")
        output = "\n".join(_part_texts(item.output, f"{param}.output"))
        return {"id": item.id or new_id("fco"), "type": "function_call_output", "call_id": item.call_id,
                "output": output, "status": "completed"}
    if item.type == "reasoning":
        return None  # earlier reasoning is not part of the prompt
    raise _invalid(f"{param}.type", f"unsupported input item type {item.type!r}: use message, function_call or "
                                    "function_call_output")


def input_items(body: ResponsesRequest) -> list[dict]:
    if isinstance(body.input, str):
        return [message_item(new_id("msg"), "user", [body.input])]
    items = (_item(item, f"input[{i}]") for i, item in enumerate(body.input))
    return [item for item in items if item is not None]


def chat_messages(items: list[dict]) -> list[runner_pb2.ChatMessage]:
    """The contract's chat messages of a conversation's items (consecutive calls join one assistant turn)."""
    out: list[runner_pb2.ChatMessage] = []
    names: dict[str, str] = {}  # call_id -> function name, for the tool messages answering them
    for item in items:
        if item["type"] == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            out.append(runner_pb2.ChatMessage(role=role, content="\n".join(p["text"] for p in item["content"])))
        elif item["type"] == "function_call":
            names[item["call_id"]] = item["name"]
            call = runner_pb2.ToolCall(id=item["call_id"], type="function", name=item["name"],
                                       arguments=item["arguments"])
            if not out or out[-1].role != "assistant":
                out.append(runner_pb2.ChatMessage(role="assistant"))
            out[-1].tool_calls.append(call)
        else:
            out.append(runner_pb2.ChatMessage(role="tool", content=item["output"], tool_call_id=item["call_id"],
                                              name=names.get(item["call_id"], "")))
    return out


def _tools(tools: list[FunctionTool]) -> list[dict]:
    out = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise _invalid(f"tools[{i}].type", f"built-in tool {tool.type!r} is not supported: define a function tool")
        if not tool.name:
            raise _invalid(f"tools[{i}].name", "a function tool needs a name")
        function = {"name": tool.name, "parameters": tool.parameters or {"type": "object"}}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def _forced(body: ResponsesRequest, tools: list[dict]) -> str | None:
    """The function a call is forced to ("" for any), or None when the model may answer in text."""
    choice = body.tool_choice
    if choice is None or choice in ("auto", "none"):
        return None
    if not tools:
        raise _invalid("tool_choice", "a required or named tool_choice needs tools")
    if choice == "required":
        return ""
    if not any(t["function"]["name"] == choice.name for t in tools):
        raise _invalid("tool_choice.name", f"no function named {choice.name!r} in tools")
    return choice.name


def generate_request(body: ResponsesRequest, model: ModelName, conversation: list[dict]) -> runner_pb2.GenerateRequest:
    """The Runner request for `conversation` (earlier turns' items, then this request's input)."""
    messages = chat_messages(conversation)
    if body.instructions:
        messages.insert(0, runner_pb2.ChatMessage(role="system", content=body.instructions))
    chat = runner_pb2.Chat(messages=messages)
    tools = _tools(body.tools or [])
    if tools:
        chat.tools_json = json.dumps(tools)
    if body.tool_choice == "none":
        chat.tool_choice_json = json.dumps("none")
    sampling = runner_pb2.SamplingParams(max_tokens=body.max_output_tokens or 0)
    for name in ("temperature", "top_p"):
        value = getattr(body, name)
        if value is not None:
            setattr(sampling, name, value)
    request = runner_pb2.GenerateRequest(model=model.qualified, chat=chat, sampling=sampling)
    forced = _forced(body, tools)
    fmt = body.text.format if body.text else None
    if forced is not None:
        if fmt is not None and fmt.type != "text":
            raise _invalid("text.format", "a JSON text.format cannot be combined with a required or named tool_choice")
        forced_tools.force(request, tools, forced or None, field="tools[{}].parameters")
    elif fmt is not None and fmt.type != "text":
        request.response_format.type = fmt.type
        if fmt.type == "json_schema":
            if fmt.schema_ is None:
                raise _invalid("text.format.schema", "a json_schema format needs a schema")
            request.response_format.json_schema = json.dumps(fmt.schema_)
    return request


def blame_format(error: APIError) -> APIError:
    """The refusal of a schema names OpenAI's response_format.json_schema.schema (openai_convert.blame
    reworded the contract's field for every route sharing _start): name the
    field the client sent, text.format.schema (a forced call's refusal already names its tool)."""
    return renamed(error, "response_format.json_schema.schema", "text.format.schema")


def renamed(error: APIError, field: str, sent: str) -> APIError:
    """`error` about the contract's `field`, reworded to name `sent`, the client's own field."""
    if not error.message.startswith(f"{field}:"):
        return error
    return APIError(error.status, sent + error.message.removeprefix(field), type=error.type, param=sent,
                    code=error.code, headers=error.headers)


def output_items(c: Collected, message_id: str) -> list[dict]:
    """The answer as output items: its text as a message (unless it is only tool calls), then each call."""
    items = []
    if c.text or not c.tool_calls:
        status = "incomplete" if c.finish_reason == "length" else "completed"
        items.append(message_item(message_id, "assistant", [c.text], status))
    items.extend(
        {"id": new_id("fc"), "type": "function_call", "call_id": call.id or new_id("call"), "name": call.name,
         "arguments": call.arguments, "status": "completed"}
        for call in c.tool_calls
    )
    return items


def usage(u: runner_pb2.Usage) -> dict:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def response(body: ResponsesRequest, response_id: str, created_at: int, model: str, *,
             output: list[dict] | None = None, finish_reason: str = "", usage_: dict | None = None,
             status: str | None = None) -> dict:
    """A Response object; its status follows finish_reason unless given ("in_progress", "failed")."""
    incomplete = finish_reason == "length"
    choice = body.tool_choice or "auto"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status or ("incomplete" if incomplete else "completed"),
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": model,
        "output": output or [],
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tool_choice": choice if isinstance(choice, str) else _dump(choice),
        "tools": [{**_dump(t), "strict": bool(t.strict), "parameters": t.parameters or {"type": "object"}}
                  for t in body.tools or ()],
        "text": {"format": _dump(body.text.format) if body.text and body.text.format else {"type": "text"}},
        "truncation": "disabled",
        "usage": usage_,
        "store": body.store,
        "metadata": body.metadata or {},
    }
