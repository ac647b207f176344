"""The adapter interface: what the gateway needs from a backend protocol.

An adapter owns one backend's base URL and one pooled HTTP client. Every method
raises only gateway.errors.BackendError subclasses (or Unsupported for an
operation the protocol lacks); transport and decoding failures are translated
once, here at the boundary, chaining the original exception.
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol


from gateway.domain import BackendKind, ChatRequest, EmbedRequest, Embeddings, ModelInfo, PullProgress, StreamEvent


class Adapter(Protocol):
    kind: BackendKind

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yields Delta events then exactly one Finish. Raises BackendError on any
        failure, including a stream that ends without its terminator. Closing
        the iterator early (aclose, or cancellation) closes the upstream HTTP
        request at once."""
        ...

    async def embed(self, request: EmbedRequest) -> Embeddings:
        """One vector per input, in input order. Raises BackendError on any
        failure, including a response without one vector per input."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models the backend serves now."""
        ...

    async def probe(self) -> None:
        """Returns when the backend answers its health endpoint; raises BackendError."""
        ...

    def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Streams pull progress; raises Unsupported where the protocol has no pull."""
        ...

    async def delete(self, model: str) -> None:
        """Deletes a model; raises Unsupported where the protocol cannot."""
        ...

    async def aclose(self) -> None:
        """Closes the HTTP client and its pooled connections."""
        ...
