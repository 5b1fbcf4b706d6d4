"""Grammar choice: a response_format becomes the grammar that constrains one request's sampling.

A schema is converted to GBNF in a small thread pool, never on the event loop (a large schema takes
a while) nor on the decode thread (every stream of the model would wait), and cached per schema text.
The converter bounds the GBNF's size, which bounds llama.cpp's work compiling it, and the CPU time of
each conversion: a request's own work, never its wait in the pool behind others, so one client's
giant schema cannot fail another's request. The GBNF is compiled for the model in the same pool; the
compiled grammar is per request, since it tracks where the answer is.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from modelrunner.runner.backends.base import Grammar, LoadedModel
from modelrunner.runner.json_schema_gbnf import UnsupportedSchema, schema_to_gbnf
from modelrunner.runner.validation import field_error
from modelrunner.v1 import runner_pb2

JSON_OBJECT_SCHEMA = '{"type": "object"}'
CACHE_SIZE = 128
CONVERT_TIME_LIMIT_S = 10.0
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="grammar")


def gbnf_for_schema(schema_text: str) -> str:
    """The GBNF of a schema (blocking: call it in the pool), cached, refusals included."""
    converted = _converted(schema_text)
    if isinstance(converted, str):
        return converted
    keyword, message = converted
    raise UnsupportedSchema(keyword, message)  # a fresh one: a cached exception raised again keeps every traceback


@functools.lru_cache(maxsize=CACHE_SIZE)
def _converted(schema_text: str) -> str | tuple[str, str]:
    """The GBNF, or the refusal's keyword and message: a schema that took its whole time limit to be
    refused must not cost that again each time a client resends it, in a pool every schema shares."""
    try:
        return schema_to_gbnf(schema_text, CONVERT_TIME_LIMIT_S)
    except UnsupportedSchema as exc:
        return exc.keyword, str(exc).removeprefix(f"{exc.keyword}: ")


async def grammar_for(fmt: runner_pb2.ResponseFormat, model: LoadedModel) -> Grammar | None:
    """The compiled grammar for `fmt` (None: free text); INVALID_ARGUMENT naming what to change."""
    if fmt.type in ("", "text"):
        return None
    schema = JSON_OBJECT_SCHEMA if fmt.type == "json_object" else fmt.json_schema
    field = "response_format.json_schema"
    loop = asyncio.get_running_loop()
    try:
        gbnf = await loop.run_in_executor(_pool, gbnf_for_schema, schema)
    except UnsupportedSchema as exc:
        raise field_error(field, str(exc)) from None
    return await _compile(loop, model, gbnf, field)


async def _compile(loop: asyncio.AbstractEventLoop, model: LoadedModel, gbnf: str, field: str) -> Grammar:
    future = loop.run_in_executor(_pool, model.grammar, gbnf)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The caller went away: the grammar compiled meanwhile must still be freed.
        future.add_done_callback(lambda f: f.exception() is None and f.result().close())
        raise
    except ValueError as exc:
        raise field_error(field, f"the engine refused its grammar ({exc}): simplify the schema") from None

