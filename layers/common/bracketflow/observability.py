"""The one place the Powertools logger, tracer and metrics are created; everything imports them from here.

The tracer only loads the X-Ray SDK when tracing can actually happen (in Lambda, not disabled; Powertools' own rule,
see settings.tracing_wanted). Elsewhere — tests, the local stack, benchmarks, the streamer — it gets a provider that
does nothing, so importing a handler does not pay the ~100+ ms the X-Ray SDK's import costs (the webhook's
cold-start budget). A deployed stack with `Tracing: Active` still imports the SDK and traces as before.

What is traced: the X-Ray SDK patches botocore only (every AWS call is a subsegment). Not `requests`, as Powertools'
default (patch everything) would: the SDK records each request's URL in the trace, and a Telegram URL carries the
bot token in its path. Broker calls are traced by subsegment() instead, named without a URL or a token; and the
webhook, which never calls the broker, no longer imports `requests` at cold start for the patch's sake.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from bracketflow.settings import tracing_wanted


class _NoSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        return None


class _NoTracing(BaseProvider):
    """A tracing provider that records nothing (tracing is off), so the X-Ray SDK is never imported."""

    _segment = _NoSegment()

    @contextlib.contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield self._segment

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name: Any = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield self._segment

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None


PATCHED_MODULES = ("botocore",)


def _make_tracer() -> Tracer:
    if tracing_wanted():
        return Tracer(service="bracketflow", patch_modules=PATCHED_MODULES)
    return Tracer(service="bracketflow", disabled=True, auto_patch=False, provider=_NoTracing())


logger = Logger(service="bracketflow")
tracer = _make_tracer()
metrics = Metrics(namespace="bracketflow", service="bracketflow")


@contextlib.contextmanager
def subsegment(name: str, **annotations: str) -> Iterator[None]:
    """A traced span around a call X-Ray does not patch (an HTTP call through requests), named by the caller: never
    a URL, which may hold a secret. Nothing at all when tracing is off; an exception is recorded on it and re-raised."""
    with tracer.provider.in_subsegment(name=name) as segment:
        if segment is not None:  # the SDK gives None when there is no segment to hang it on (context missing)
            for key, value in annotations.items():
                segment.put_annotation(key, value)
        yield
