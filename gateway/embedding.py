"""An Embed request as the dispatcher routes it.

`Dispatcher.run` routes any request whose `open(adapter, target)` gives an
upstream stream of events ending in a Finish. An embedding attempt is a
one-event stream: the Embeddings, then a Finish carrying their usage. So
Embed shares Generate's resolution, plan, retries, backoff, timeouts (the
first-token timeout bounds the whole answer here), ejection and in-flight
accounting without a second attempt loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, ClassVar, Mapping

from adapters.base import Adapter
from gateway.domain import EmbedRequest, Embeddings, Finish, FinishReason, Message
from gateway.routing.state import Target


@dataclass(frozen=True, slots=True)
class Embedding:
    """A validated Embed request, in domain terms. It has no session, and no
    user message for routing rules that `match` text (rules by `task` apply)."""

    request_id: str
    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    truncate: bool | None = None
    backend_options: Mapping[str, object] = field(default_factory=dict)
    task: str = ""
    allowed_routes: frozenset[str] | None = None
    session_id: ClassVar[str] = ""
    messages: ClassVar[tuple[Message, ...]] = ()

    def open(self, adapter: Adapter, target: Target) -> AsyncIterator[Embeddings | Finish]:
        """The request's backend options win key by key over the target's."""
        request = EmbedRequest(
            target.model, self.inputs, self.dimensions, self.truncate, {**target.options, **self.backend_options}
        )
        return _one(adapter, request)


async def _one(adapter: Adapter, request: EmbedRequest) -> AsyncIterator[Embeddings | Finish]:
    embeddings = await adapter.embed(request)
    yield embeddings
    yield Finish(FinishReason.STOP, embeddings.usage)
