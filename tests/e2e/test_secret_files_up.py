"""Secrets changed in their files while a real ``up`` runs (``ZAQAR_<NAME>_FILE``, as
Kubernetes mounts a Secret): the pre-signed URL secrets and the message encryption keys are
taken without a restart, each rotation step of docs/operations.md done by writing the files,
over HTTP and WebSocket; content that cannot be used leaves the secrets in use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.servers import service_ports

pytestmark = pytest.mark.e2e

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
EXPIRES = "2030-01-01T00:00:00"


def written(path: Path, text: str) -> None:
    """``text`` as the file's new content, replaced at once (as the kubelet swaps a Secret's
    files), never seen half-written."""
    part = path.with_name(path.name + ".part")
    part.write_text(text + "\n")
    part.replace(path)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout} s: {what}")
        time.sleep(0.05)


def reloads(stack: Stack, service: str) -> int:
    """How many times ``service`` said it took new secret files."""
    return sum(line.startswith(f"[{service}]") and "secret files reloaded" in line
               for line in list(stack.output))


def gauge(http: httpx.Client, name: str) -> float:
    """A ``files="secrets"`` gauge of the gateway's /metrics."""
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"files": "secrets"}:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


class Secrets:
    def __init__(self, folder: Path) -> None:
        self.secret = folder / "secret"
        self.previous = folder / "previous"
        self.keys = folder / "keys"


@pytest.fixture(scope="module")
def secrets_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Secrets]]:
    folder: Path = tmp_path_factory.mktemp("up-secret-files")
    files = Secrets(folder)
    written(files.secret, "first")
    written(files.previous, "")
    written(files.keys, f"a:{KEY_A}")
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(folder / "data"), **service_ports(), "secret_reload_interval": 0.1,
        "signed_url_secret": "first", "message_encryption_keys": f"a:{KEY_A}",
    })
    stack = start_stack(settings, files={
        "signed_url_secret": files.secret, "signed_url_previous_secret": files.previous,
        "message_encryption_keys": files.keys,
    })
    yield stack, files
    assert stack.stop() == 0, "".join(stack.output)


def signature(secret: str, project: str, queue: str) -> str:
    text = f"/v2/queues/{queue}/messages\\nGET,POST\\n{project}\\n{EXPIRES}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def grant(secret: str, project: str, queue: str) -> dict[str, str]:
    """The headers of a URL that ``secret`` signed for GET and POST on the queue's messages."""
    return {
        "Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
        "URL-Signature": signature(secret, project, queue), "URL-Methods": "GET,POST",
        "URL-Paths": f"/v2/queues/{queue}/messages", "URL-Expires": EXPIRES,
    }


def test_the_signed_url_secret_rotates_without_a_restart(
    secrets_stack: tuple[Stack, Secrets],
) -> None:
    stack, files = secrets_stack
    project, queue = "sf-" + uuid.uuid4().hex[:8], "shared"
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    http = httpx.Client(base_url=stack.url, timeout=30)
    ws = connect(f"ws://127.0.0.1:{stack.settings.ws_port}")

    def shared() -> str:
        answer = http.post(f"/v2/queues/{queue}/share", headers=headers,
                           json={"methods": ["GET", "POST"], "expires": EXPIRES})
        assert answer.status_code == 200, answer.text
        given: str = answer.json()["signature"]
        return given

    def status(secret: str) -> int:
        """What a post through a URL signed with ``secret`` gets."""
        return http.post(f"/v2/queues/{queue}/messages", headers=grant(secret, project, queue),
                         json={"messages": [{"body": secret}]}).status_code

    def ws_status(secret: str) -> int:
        ws.send(orjson.dumps({"action": "message_list", "headers": grant(secret, project, queue),
                              "body": {"queue_name": queue}}).decode())
        answer: dict[str, Any] = orjson.loads(ws.recv(timeout=30))
        code: int = answer["headers"]["status"]
        return code

    with http, ws:
        assert http.put(f"/v2/queues/{queue}", headers=headers, json={}).status_code == 201
        # At start, the first secret signs and verifies; no other does
        assert shared() == signature("first", project, queue)
        assert (status("first"), status("second")) == (201, 404)
        assert (ws_status("first"), ws_status("second")) == (200, 404)
        generation = gauge(http, "zaqar_files_generation")
        # Rotation, step 2: the new secret signs, the previous one still verifies
        written(files.previous, "first")
        written(files.secret, "second")
        wait_for(lambda: shared() == signature("second", project, queue),
                 "the gateway signing with the new secret")
        wait_for(lambda: status("first") == 201, "the previous secret verifying")
        assert status("second") == 201
        assert (ws_status("first"), ws_status("second")) == (200, 200)
        # Step 3: the previous secret is dropped, and opens nothing from then on
        written(files.previous, "")
        wait_for(lambda: status("first") == 404, "the dropped secret refused")
        assert (status("second"), ws_status("second"), ws_status("first")) == (201, 200, 404)
        assert gauge(http, "zaqar_files_generation") >= generation + 2
        assert gauge(http, "zaqar_files_refused") == 0
        # A previous secret without a current one cannot be used: the secrets in use stay.
        # (Written in this order, no look can find a usable state between the two writes
        # that differs from the one in use, e.g. no secret at all.)
        written(files.previous, "second")
        written(files.secret, "")
        wait_for(lambda: any("cannot be used" in line and line.startswith("[gateway]")
                             for line in list(stack.output)), "the gateway refusing the files")
        assert shared() == signature("second", project, queue)
        assert (status("second"), ws_status("second")) == (201, 200)
        assert gauge(http, "zaqar_files_refused") == 1
        # Put back as in use: nothing is refused any more
        written(files.secret, "second")
        written(files.previous, "")
        wait_for(lambda: gauge(http, "zaqar_files_refused") == 0, "the refusal lifted")


def test_message_encryption_keys_rotate_without_a_restart(
    secrets_stack: tuple[Stack, Secrets],
) -> None:
    stack, files = secrets_stack
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "sf-" + uuid.uuid4().hex[:8]}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:

        def post(body: str) -> str:
            answer = http.post("/v2/queues/sealed/messages",
                               json={"messages": [{"body": body, "ttl": 600}]})
            assert answer.status_code == 201, answer.text
            return str(answer.json()["resources"][0]).rsplit("/", 1)[1]

        def read(message_id: str) -> httpx.Response:
            return http.get(f"/v2/queues/sealed/messages/{message_id}")

        def took(count: int) -> Callable[[], bool]:
            return lambda: reloads(stack, "message") >= count and reloads(stack, "queue") >= count

        assert http.put("/v2/queues/sealed",
                        json={"_enable_encrypt_messages": True}).status_code == 201
        sealed_a = post("sealed with a")
        before_message, before_queue = reloads(stack, "message"), reloads(stack, "queue")
        assert before_message == before_queue
        # Step 1 and 2 at once here: b added and first, so b seals and a still opens
        written(files.keys, f"b:{KEY_B},a:{KEY_A}")
        wait_for(took(before_message + 1), "message_svc and queue_svc taking the new keys")
        sealed_b = post("sealed with b")
        assert read(sealed_a).json()["body"] == "sealed with a"
        assert read(sealed_b).json()["body"] == "sealed with b"
        # Key a dropped: what it sealed is unreadable, said so; b's still opens
        written(files.keys, f"b:{KEY_B}")
        wait_for(took(before_message + 2), "message_svc and queue_svc dropping key a")
        unreadable = read(sealed_a)
        assert unreadable.status_code == 503, unreadable.text
        assert "key 'a'" in unreadable.json()["description"]
        assert read(sealed_b).json()["body"] == "sealed with b"
        # A malformed key cannot be used: the keys in use stay
        written(files.keys, "b:not-base64!")
        wait_for(lambda: any("cannot be used" in line and line.startswith("[message]")
                             for line in list(stack.output)), "message_svc refusing the keys")
        assert read(post("still b")).json()["body"] == "still b"
        # No key at all: new encrypted queues are refused, as when started without one
        written(files.keys, "")
        wait_for(took(before_message + 3), "message_svc and queue_svc dropping every key")
        refused = http.put("/v2/queues/sealed-too", json={"_enable_encrypt_messages": True})
        assert refused.status_code == 400, refused.text
        assert http.post("/v2/queues/sealed/messages",
                         json={"messages": [{"body": 1}]}).status_code == 503
