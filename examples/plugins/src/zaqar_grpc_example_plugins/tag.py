"""A message filter that marks each JSON object posted to a queue: ``"tagged_by":
"example_tag"`` is added to it, unless it has that key already."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from services.message_svc.filters import FilterContext, Message, MessageFilter

KEY, VALUE = "tagged_by", "example_tag"


class TagFilter(MessageFilter):
    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        return [self._tag(message) for message in messages]

    @staticmethod
    def _tag(message: Message) -> Message:
        body = json.loads(message.body)
        if not isinstance(body, dict) or KEY in body:
            return message
        return dataclasses.replace(message, body=json.dumps({**body, KEY: VALUE}).encode())
