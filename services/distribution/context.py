"""What a pull or push needs besides its request: the Store, registry options, shared downloads."""

from __future__ import annotations

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
    downloads: SharedDownloads = field(default_factory=SharedDownloads)
    credentials: Callable[[str], Credentials | None] = credentials.lookup

    def reference(self, name: str) -> Reference:
        return parse_reference(name, default_registry=self.default_registry)

    def client(self, ref: Reference, actions: str, insecure: bool, extra_scopes: tuple[str, ...] = ()) -> RegistryClient:
        """A client for `ref`'s repository with a token scope of `actions` ("pull" or "pull,push")."""
        return RegistryClient(
            ref.registry,
            credentials=self.credentials(ref.registry),
            scopes=[f"repository:{ref.repository}:{actions}", *extra_scopes],
            options=self.options,
            insecure=insecure,
        )
