"""Queues with ``_enable_encrypt_messages`` over HTTP, when no encryption key is configured."""

from __future__ import annotations

import orjson

from services.common.config import Settings
from tests.gateway.conftest import PATCH_TYPE, GatewayFactory, error_body, new_queue

NO_KEYS = (
    "_enable_encrypt_messages cannot be true: no message encryption key is configured "
    "(ZAQAR_MESSAGE_ENCRYPTION_KEYS)."
)


async def test_encrypted_queues_are_refused_without_a_key(
    services: Settings, gateway_factory: GatewayFactory
) -> None:
    client = await gateway_factory(services)
    queue = new_queue()
    # Creating one is a 400 with Zaqar's body
    created = await client.put(f"/v2/queues/{queue}", json={"_enable_encrypt_messages": True})
    assert created.status_code == 400
    assert created.json() == error_body("Invalid API request", NO_KEYS)
    # and so is a PATCH turning it on
    assert (await client.put(f"/v2/queues/{queue}", json={})).status_code == 201
    patched = await client.patch(
        f"/v2/queues/{queue}",
        content=orjson.dumps([{"op": "add", "path": "/metadata/_enable_encrypt_messages",
                               "value": True}]),
        headers={"Content-Type": PATCH_TYPE},
    )
    assert patched.status_code == 400
    assert patched.json() == error_body("Invalid request body", NO_KEYS)
    # while false stays accepted
    plain = await client.put(f"/v2/queues/{queue}", json={"_enable_encrypt_messages": False})
    assert plain.status_code == 204
