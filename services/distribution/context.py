"""What a pull or push needs besides its request: the Store, registry options, shared downloads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from modelrunner.common.names import Reference, parse_reference
from modelrunner.distribution import credentials
from modelrunner.distribution.credentials import Credentials
from modelrunner.distribution.registry import RegistryClient, RegistryOptions
from modelrunner.distribution.shared import SharedDownloads
from modelrunner.distribution.store_client import BlobSink, BlobSource


@dataclass
class Context:
    store: BlobSink | BlobSource
    options: RegistryOptions = RegistryOptions()
    default_registry: str = "docker.io"
    concurrency: int = 4
    upload_chunk: int = 64 << 20  # bytes per PATCH of a push: what a broken upload may have to resend
    downloads: SharedDownloads = field(default_factory=SharedDownloads)
    credentials: Callable[[str], Credentials | None] = credentials.lookup

    def reference(self, name: str) -> Reference:
        return parse_reference(name, default_registry=self.default_registry)

    async def login(self, ref: Reference) -> Credentials | None:
        """`ref`'s registry credentials, looked up off the event loop (a credential helper may run for
        seconds). Once per pull or push: its clients share the answer, so no secret outlives it."""
        return await asyncio.to_thread(self.credentials, ref.registry)

    def client(
        self, ref: Reference, actions: str, insecure: bool, login: Credentials | None, extra_scopes: tuple[str, ...] = ()
    ) -> RegistryClient:
        """A client for `ref`'s repository with a token scope of `actions` ("pull" or "pull,push")."""
        return RegistryClient(
            ref.registry,
            credentials=login,
            scopes=[f"repository:{ref.repository}:{actions}", *extra_scopes],
            options=self.options,
            insecure=insecure,
        )
