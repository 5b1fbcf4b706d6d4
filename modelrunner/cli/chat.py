"""`modelrunner run`: one answer, or an interactive chat that keeps the conversation for the session.

Tokens are written to stdout as they stream (never through rich: model output is not markup).
Input lines go through `input()`, so readline gives line editing and history within the session.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from modelrunner.cli.client import CliError, Gateway
from modelrunner.cli.output import error

CHAT_PATH = "/v1/chat/completions"
HELP = """Commands:
  /bye     exit (also Ctrl-D)
  /clear   forget the conversation so far
  /?       this help
Use \"\"\" to begin and end a message of several lines."""


def stream_answer(
    gateway: Gateway, model: str, messages: list[dict], write: Callable[[str], None], max_tokens: int = 0
) -> str:
    """Streams one assistant reply to `write`; returns its text."""
    parts: list[str] = []
    body: dict = {"model": model, "messages": messages, "stream": True}
    if max_tokens:
        body["max_tokens"] = max_tokens
    for event in gateway.sse(CHAT_PATH, body):
        for choice in event.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                parts.append(delta)
                write(delta)
    return "".join(parts)


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def answer_once(gateway: Gateway, model: str, prompt: str, max_tokens: int = 0) -> None:
    text = stream_answer(gateway, model, [{"role": "user", "content": prompt}], _stdout, max_tokens)
    if not text.endswith("\n"):
        _stdout("\n")


def read_message(read: Callable[[str], str]) -> str | None:
    """One user message; a line starting with \"\"\" opens a block closed by a line ending with it."""
    line = read(">>> ")
    if not line.lstrip().startswith('"""'):
        return line
    text = line.lstrip()[3:]
    if text.rstrip().endswith('"""') and text.strip():
        return text.rstrip()[:-3]
    lines = [text] if text else []
    while True:
        line = read("... ")
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip("\n")
        lines.append(line)


def repl(
    gateway: Gateway,
    model: str,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = _stdout,
    max_tokens: int = 0,
) -> None:
    """The interactive chat; returns on /bye or end of input."""
    write(f'Chatting with {model}. Send a message (/? for help, /bye to exit, """ for several lines).\n')
    messages: list[dict] = []
    while True:
        try:
            text = read_message(read)
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:
            write("\nUse /bye or Ctrl-D to exit.\n")
            continue
        command = text.strip()
        if not command:
            continue
        if command == "/bye":
            return
        if command == "/clear":
            messages.clear()
            write("Cleared the conversation.\n")
            continue
        if command in ("/?", "/help"):
            write(HELP + "\n")
            continue
        messages.append({"role": "user", "content": text})
        try:
            reply = stream_answer(gateway, model, messages, write, max_tokens)
        except KeyboardInterrupt:
            write("\n(interrupted)\n")
            messages.pop()
            continue
        except CliError as err:  # the conversation goes on; the user may retry or /bye
            messages.pop()
            error(str(err))
            continue
        messages.append({"role": "assistant", "content": reply})
        write("\n\n" if not reply.endswith("\n") else "\n")
