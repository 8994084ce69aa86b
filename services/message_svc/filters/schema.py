"""The built-in ``message_schema`` filter: posted bodies must match the queue's
``_message_schema`` (a JSON Schema, draft 2020-12; ``services/common/message_schema.py``).

It is declared through the ``zaqar_grpc.message_filters`` entry point group like any other
filter and is part of every queue's pipeline, first; on a queue without ``_message_schema`` it
is not made at all (:meth:`MessageSchemaFilter.for_queue` answers None), so it costs nothing
there. The schema is compiled once per version of the queue's metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from jsonschema.protocols import Validator

from services.common import message_schema
from services.message_svc.filters import FilterContext, FilterRejected, Message, MessageFilter


class MessageSchemaFilter(MessageFilter):
    """Refuses a post whose message body does not match the queue's schema, naming the index
    of the first such message and the JSON pointer (into its body) of its error."""

    def __init__(self, validator: Validator) -> None:
        self._validator = validator

    @classmethod
    def for_queue(cls, metadata: Mapping[str, Any]) -> MessageSchemaFilter | None:
        schema = metadata.get(message_schema.KEY)
        if schema is None:
            return None
        # queue_svc refuses a schema with an error; one stored before that check existed
        # fails every post here (a failure of this filter), rather than being ignored.
        error = message_schema.schema_error(schema)
        if error is not None:
            raise ValueError(error)
        return cls(message_schema.compile_schema(schema))

    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        for index, message in enumerate(messages):
            found = message_schema.first_error(self._validator, orjson.loads(message.body))
            if found is not None:
                pointer, what = found
                raise FilterRejected(
                    f"the body does not match the queue's {message_schema.KEY} at "
                    f'JSON pointer "{pointer}": {what}',
                    index=index,
                )
        return messages
