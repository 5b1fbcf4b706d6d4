"""A model as the registry describes it, without pulling it: manifest and config only.

The config-to-proto mapping is shared with the Store (`modelrunner.common.artifact_config`), so a
remote model and a pulled one render the same JSON.
"""

from __future__ import annotations

import hashlib
import json

import grpc

from modelrunner.common.errors import ServiceError
from modelrunner.distribution.context import Context
from modelrunner.distribution.pull import resolve
from modelrunner.distribution.bodies import MAX_MANIFEST_BYTES, limit_text
from modelrunner.common.artifact_config import model_config, parse_created
from modelrunner.v1 import types_pb2

async def remote_model(ctx: Context, name: str, insecure: bool) -> types_pb2.Model:
    ref = ctx.reference(name)
    async with ctx.client(ref, "pull", insecure, await ctx.login(ref)) as client:
        manifest = await resolve(client, ref)
        blob = manifest.config
        if blob.size > MAX_MANIFEST_BYTES:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {ref}: its config of {blob.size} bytes is over the limit of {limit_text(MAX_MANIFEST_BYTES)}",
            )
        raw = await client.get_small_blob(ref.repository, blob.digest, f"model {ref}: the config")
    if "sha256:" + hashlib.sha256(raw).hexdigest() != blob.digest:
        raise ServiceError(grpc.StatusCode.DATA_LOSS, f"registry {ref.registry} served a config that does not match {blob.digest}")
    try:
        config = json.loads(raw)
    except ValueError:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"model {ref}: the config is not JSON") from None
    return types_pb2.Model(
        id=manifest.digest,
        tags=[str(ref)],
        created=parse_created(config),
        config=model_config(config),
        size=sum(layer.size for layer in manifest.layers),
    )
