"""Which filters a queue has (:class:`Filters`), and running them (:class:`Pipeline`).

A queue's filters, in order: the built-in ``message_schema`` (it acts only on a queue whose
metadata has ``_message_schema``), the deployment's (``ZAQAR_MESSAGE_FILTERS``), then the
queue's own (``_filters`` in its metadata), each name once. Each is made for the queue by its
``for_queue`` when message_svc loads the queue's metadata (once per metadata version); a queue
where none has anything to do has no pipeline at all (``None``), so the hot path pays one
``is None`` test.

Failures are kept inside the pipeline. On post, :class:`FilterRejected` refuses the post with
400 (:class:`MessageRejected`); any other failure of a filter (an exception, or a result that
is not as many messages with JSON bodies) refuses it with 400 too (:class:`MessageFilterFailed`,
naming the filter) and is logged: a post a filter could not check is not stored unchecked, and
the answer is never a 5xx that clients would retry in a loop. On the way out a failing filter
is skipped: the messages go out as the filters before it left them, and the failure is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import orjson

from services.common import plugins
from services.common.config import ConfigurationError
from services.common.errors import InvalidArgument
from services.message_svc.filters import (
    FilterContext,
    FilterRejected,
    Message,
    MessageFilter,
)
from services.message_svc.storage.base import NewMessage, StoredMessage

log = logging.getLogger(__name__)

KIND: Final = "message filter"
SCHEMA_FILTER: Final = "message_schema"
"""The built-in filter every queue has; it acts on queues with ``_message_schema``."""
QUEUE_KEY: Final = "_filters"
_DESCRIPTION_MAX: Final = 1000


class MessageRejected(InvalidArgument):
    """A filter refused a post."""

    reason = "MESSAGE_REJECTED"
    title = "Invalid request body"


class MessageFilterFailed(InvalidArgument):
    """A filter failed on a post, which is therefore not stored."""

    reason = "MESSAGE_FILTER_FAILED"
    title = "Message filter failed"
    msg_format = (
        "Message filter {name!r} failed, so the messages were not posted (nothing was "
        "stored). The failure is in the filter, not in the messages; it is logged."
    )


def parse_names(value: str) -> tuple[str, ...]:
    """The filter names of a comma-separated setting, in order, each once."""
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _overrides(cls: type[MessageFilter], method: str) -> bool:
    return getattr(cls, method) is not getattr(MessageFilter, method)


class _Broken(MessageFilter):
    """Stands for a filter that cannot be used on a queue (not installed, not importable, or
    its ``for_queue`` failed): every post to the queue fails as that filter's failure."""

    def __init__(self, why: str) -> None:
        self.why = why

    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        raise RuntimeError(self.why)


class Pipeline:
    """The filters of one queue at one metadata version, in order."""

    __slots__ = ("names", "posts", "reads")

    def __init__(self, filters: Sequence[tuple[str, MessageFilter]]) -> None:
        self.names = tuple(name for name, _ in filters)
        self.posts = tuple(f for f in filters if _overrides(type(f[1]), "on_post"))
        self.reads = tuple(f for f in filters if _overrides(type(f[1]), "on_read"))

    def on_post(self, context: FilterContext, batch: list[NewMessage]) -> list[NewMessage]:
        """The batch as the filters leave it.

        Raises:
            MessageRejected: a filter refused it.
            MessageFilterFailed: a filter failed.
        """
        if not self.posts:
            return batch
        messages: Sequence[Message] = [Message(m.body, m.ttl) for m in batch]
        for name, each in self.posts:
            try:
                changed = each.on_post(context, messages)
                _check(changed, len(messages))
            except FilterRejected as exc:
                raise _rejected(name, exc) from None
            except Exception as exc:
                _log_failure(name, context, exc)
                raise MessageFilterFailed(name=name) from None
            messages = changed
        return [m if m.body is f.body else replace(m, body=f.body)
                for m, f in zip(batch, messages, strict=True)]

    def _on_read(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        for name, each in self.reads:
            try:
                changed = each.on_read(context, messages)
                _check(changed, len(messages))
            except Exception as exc:
                _log_failure(name, context, exc)
                continue
            messages = changed
        return messages

    def on_read(
        self, context: FilterContext, stored: Sequence[StoredMessage]
    ) -> list[StoredMessage]:
        """The stored messages as the filters let them out."""
        if not self.reads or not stored:
            return list(stored)
        out = self._on_read(context, [Message(m.body, m.ttl, m.id) for m in stored])
        return [m if m.body is f.body else replace(m, body=f.body)
                for m, f in zip(stored, out, strict=True)]

    def on_deliver(
        self, context: FilterContext, ids: Sequence[str], batch: Sequence[NewMessage]
    ) -> list[NewMessage]:
        """Posted messages as the filters let them out to subscribers."""
        if not self.reads:
            return list(batch)
        out = self._on_read(
            context, [Message(m.body, m.ttl, i) for i, m in zip(ids, batch, strict=True)]
        )
        return [m if m.body is f.body else replace(m, body=f.body)
                for m, f in zip(batch, out, strict=True)]


def _check(messages: Any, count: int) -> None:
    """A filter's result is as many messages, each with a JSON body."""
    if not isinstance(messages, Sequence) or len(messages) != count:
        raise TypeError(f"returned {type(messages).__name__}, not {count} messages")
    for m in messages:
        if not isinstance(m, Message) or not isinstance(m.body, bytes):
            raise TypeError(f"returned {type(m).__name__}, not a Message with a bytes body")
        try:
            orjson.loads(m.body)
        except orjson.JSONDecodeError:
            raise TypeError("returned a body that is not JSON") from None


def _rejected(name: str, exc: FilterRejected) -> MessageRejected:
    text = str(exc.description)[:_DESCRIPTION_MAX]
    which = "The messages were" if exc.index is None else f"Message {exc.index} was"
    return MessageRejected(f"{which} refused by message filter {name!r}: {text}")


_logged: set[str] = set()


def _log_failure(name: str, context: FilterContext, exc: Exception) -> None:
    # The traceback once per filter and process: a broken filter on a busy queue would
    # otherwise fill the log with copies of it.
    first = name not in _logged
    _logged.add(name)
    log.error(
        "message filter %r failed on %s of %s/%s: %s: %s", name, context.operation,
        context.project, context.queue, type(exc).__name__, exc, exc_info=exc if first else None,
    )


class Filters:
    """The message filters of a deployment: those it enables for every queue, and every
    installed one, which a queue may enable."""

    def __init__(
        self,
        classes: Mapping[str, type[MessageFilter] | str],
        deployment: Sequence[str] = (),
    ) -> None:
        """``classes``: every installed filter by name, as a class, or as why it cannot be
        loaded; ``deployment``: the names enabled for every queue (after the built-in)."""
        self._classes = dict(classes)
        self._deployment = tuple(deployment)
        self.reads = any(
            not isinstance(c, type) or _overrides(c, "on_read") for c in self._classes.values()
        )
        """Whether any queue may have a filter that acts on the way out; when not, reads do
        not look up queue metadata."""

    @classmethod
    def none(cls) -> Filters:
        return cls({})

    @classmethod
    def load(cls, setting: str) -> Filters:
        """Import every installed filter; the built-in one and those named in ``setting``
        (``ZAQAR_MESSAGE_FILTERS``) must load.

        Raises:
            ConfigurationError: one of them is not installed, cannot be imported, or is not a
                MessageFilter class.
        """
        names = parse_names(setting)
        classes: dict[str, type[MessageFilter] | str] = {}
        for name in dict.fromkeys((SCHEMA_FILTER, *names, *plugins.entry_points(KIND))):
            required = name == SCHEMA_FILTER or name in names
            try:
                target = plugins.load(KIND, name)
                if not (isinstance(target, type) and issubclass(target, MessageFilter)):
                    raise ConfigurationError(
                        f"{KIND} {name!r} names {target!r}, which is not a subclass of "
                        "services.message_svc.filters.MessageFilter"
                    )
            except ConfigurationError as exc:
                if required:
                    if name in names:
                        raise ConfigurationError(f"ZAQAR_MESSAGE_FILTERS: {exc}") from None
                    raise
                log.warning("%s; queues that enable it refuse posts", exc)
                classes[name] = str(exc)
                continue
            classes[name] = target
        return cls(classes, [n for n in names if n != SCHEMA_FILTER])

    def for_queue(self, metadata: Mapping[str, Any]) -> Pipeline | None:
        """The pipeline of a queue with ``metadata``; None when no filter acts on it."""
        if not self._classes:
            return None  # Filters.none()
        own = metadata.get(QUEUE_KEY)
        names: tuple[str, ...] = (SCHEMA_FILTER, *self._deployment)
        if isinstance(own, list):
            names = tuple(dict.fromkeys((*names, *(n for n in own if isinstance(n, str)))))
        filters = []
        for name in names:
            made = self._make(name, metadata)
            if made is not None:
                filters.append((name, made))
        return Pipeline(filters) if filters else None

    def _make(self, name: str, metadata: Mapping[str, Any]) -> MessageFilter | None:
        cls = self._classes.get(name)
        if cls is None:
            return _Broken(f"message filter {name!r} is not installed")
        if isinstance(cls, str):
            return _Broken(cls)
        try:
            return cls.for_queue(metadata)
        except Exception as exc:
            return _Broken(f"for_queue failed: {type(exc).__name__}: {exc}")
