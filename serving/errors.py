"""What serving refuses or cannot do, as exceptions callers can tell apart."""

from __future__ import annotations


class ServingError(RuntimeError):
    """A model request or an adapter operation failed."""


class ModelUnavailable(ServingError):
    """The server is down, restarting or too slow: retryable, try again later."""


class AdapterError(ServingError):
    """An adapter could not be loaded or unloaded (missing path, rank too high, refused by vLLM)."""


class InvalidStructuredOutput(ServingError):
    """The model's answer is not JSON matching the requested schema."""


class EngineStartError(ServingError):
    """The vLLM process exited or did not become ready in time."""
