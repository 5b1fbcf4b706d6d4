"""The CLI's only way to the stack: the gateway's REST API (Docker Model Runner's routes + OpenAI /v1).

Every failure becomes a CliError with one line that says what went wrong and, where it can, what to do.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_HOST = "http://127.0.0.1:12434"
HOST_ENV = "MODELRUNNER_HOST"
API_KEY_ENV = "MODELRUNNER_API_KEY"  # the gateway's --api-key, sent as a bearer token
_SURROGATE = re.compile("[\ud800-\udfff]")


class CliError(Exception):
    """A failure the user sees as one line on stderr and a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status  # the HTTP status when the gateway answered with an error


class GatewayUnreachable(CliError):
    """No gateway answers: every further request would fail the same way."""


def gateway_url() -> str:
    return os.environ.get(HOST_ENV, DEFAULT_HOST).rstrip("/")


def _reason(response: httpx.Response) -> str:
    """The message of an OpenAI error body, a DMR plain-text error, or the status line."""
    try:
        body = json.loads(response.read())
    except ValueError:
        text = response.text.strip()
        return text.splitlines()[0] if text else f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    return f"HTTP {response.status_code} {response.reason_phrase}"


def utf8_clean(value: Any) -> Any:
    """`value` with every lone surrogate as U+FFFD: Python decodes argv, stdin and input() bytes that
    are not UTF-8 to surrogates (surrogateescape), which no JSON body can carry. Replaced, as Go's
    encoding/json does for the `docker model` and `ollama` CLIs, rather than failing the request."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {utf8_clean(k): utf8_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [utf8_clean(v) for v in value]
    return value


def model_path(name: str) -> str:
    """A model name as a path segment; '/' stays, as the gateway's `{name:path}` routes expect."""
    return quote(name, safe="/:@")


class Gateway:
    """A thin client of the gateway; `transport` lets unit tests answer with httpx.MockTransport."""

    def __init__(self, base_url: str | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = (base_url or gateway_url()).rstrip("/")
        api_key = os.environ.get(API_KEY_ENV)
        self.http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=httpx.Timeout(30.0, read=None),
        )

    def close(self) -> None:
        self.http.close()

    def _unreachable(self) -> GatewayUnreachable:
        return GatewayUnreachable(
            f"cannot reach the Model Runner gateway at {self.base_url}: start it with `modelrunner up` "
            f"(or set {HOST_ENV} to the gateway's URL)"
        )

    @contextmanager
    def _transport_errors(self, method: str, path: str) -> Iterator[None]:
        """httpx's connection, timeout and protocol failures as one-line CliErrors."""
        try:
            yield
        except httpx.ConnectError:
            raise self._unreachable() from None
        except httpx.TimeoutException:
            raise CliError(f"the gateway at {self.base_url} did not answer in time ({method} {path})") from None
        except httpx.RemoteProtocolError as err:
            raise CliError(f"the gateway closed the connection: {err}") from None
        except httpx.HTTPError as err:
            raise CliError(f"request to {self.base_url}{path} failed: {err}") from None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if "json" in kwargs:
            kwargs["json"] = utf8_clean(kwargs["json"])
        with self._transport_errors(method, path):
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise CliError(_reason(response), status=response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"the gateway answered {method} {path} with something that is not JSON") from None

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose status was checked (an error body is read and raised)."""
        if "json" in kwargs:
            kwargs["json"] = utf8_clean(kwargs["json"])
        with self._transport_errors(method, path), self.http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise CliError(_reason(response), status=response.status_code)
            yield response

    def json_lines(self, method: str, path: str, **kwargs: Any) -> Iterator[dict]:
        """The JSON-lines progress stream of /models/create and /models/{name}/push."""
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
        with self.stream(method, path, headers=headers, **kwargs) as response:
            for line in response.iter_lines():
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        yield {"type": "warning", "message": line}

    def sse(self, path: str, body: dict) -> Iterator[dict]:
        """The `data:` events of an OpenAI streaming response, up to `[DONE]`."""
        with self.stream("POST", path, json=body, headers={"Accept": "text/event-stream"}) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if isinstance(event, dict) and "error" in event:
                    error = event["error"]
                    raise CliError(error.get("message", str(error)) if isinstance(error, dict) else str(error))
                yield event


def connect() -> Gateway:
    """The gateway MODELRUNNER_HOST names (commands call this through the module, so tests can swap it)."""
    return Gateway()
