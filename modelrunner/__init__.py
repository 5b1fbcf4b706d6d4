"""Model Runner: pull models from OCI registries, store them, serve them through the OpenAI API."""

__version__ = "0.1.0"
