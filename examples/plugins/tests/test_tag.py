"""The example_tag filter on its own."""

from __future__ import annotations

import json

from zaqar_grpc_example_plugins.tag import TagFilter

from services.message_svc.filters import FilterContext, Message


def test_json_objects_are_tagged_and_other_bodies_kept() -> None:
    posted = [Message(b'{"n": 1}', 60), Message(b"[1, 2]", 60),
              Message(b'{"tagged_by": "me"}', 60)]
    tagged = TagFilter().on_post(FilterContext("p", "q", "post"), posted)
    assert [json.loads(m.body) for m in tagged] == [
        {"n": 1, "tagged_by": "example_tag"}, [1, 2], {"tagged_by": "me"}]
