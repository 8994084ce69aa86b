"""Passwords changed in their files while a real ``up`` runs (``ZAQAR_<NAME>_FILE``, as
Kubernetes mounts a Secret), against the real servers they log in to: the Keystone service
user's password (every process) and the SMTP password (notifier_svc) are taken without a
restart, so a password changed in Keystone or on the mail server, then in the Secret, needs
no restart of any process."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.e2e.test_secret_files_up import reloads, wait_for, written
from tests.keystone import DOMAIN, Keystone, admin_client, unique
from tests.servers import free_port

pytestmark = pytest.mark.e2e

SERVICES = ("gateway", "queue", "message", "notifier")


@contextmanager
def running(settings: Settings, files: dict[str, Path]) -> Iterator[Stack]:
    stack = start_stack(settings, files=files)
    try:
        yield stack
    finally:
        assert stack.stop() == 0, "".join(stack.output)


def service_user(keystone: Keystone, password: str) -> str:
    """A new user with the role ``service`` on the project ``service`` (a deployment's service
    user of its own, whose password the test may change); its id."""
    zaqar = keystone.users["zaqar"]
    with admin_client(keystone) as admin:
        domain = admin.get("/domains", params={"name": DOMAIN}).json()["domains"][0]["id"]
        made = admin.post("/users", json={"user": {
            "name": unique("zaqar"), "password": password, "domain_id": domain,
        }})
        assert made.status_code == 201, made.text
        user_id = str(made.json()["user"]["id"])
        role = admin.get("/roles", params={"name": "service"}).json()["roles"][0]["id"]
        granted = admin.put(f"/projects/{zaqar.project_id}/users/{user_id}/roles/{role}")
        assert granted.status_code == 204, granted.text
    return user_id


def test_the_keystone_password_changes_without_a_restart(
    keystone: Keystone, keystone_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given a deployment whose processes log in as their own service user, with the password
    # from a file, and ask Keystone about every token (a revoked one counts at once)
    user_id = service_user(keystone, "first-password")
    with admin_client(keystone) as admin:
        name = admin.get(f"/users/{user_id}").json()["user"]["name"]
    password = tmp_path / "password"
    written(password, "first-password")
    settings = keystone_settings(keystone_username=name, keystone_password="first-password",
                                 token_cache_seconds=0, secret_reload_interval=0.1)
    with running(settings, {"keystone_password": password}) as stack, httpx.Client(
        base_url=stack.url, timeout=60,
        headers={"Client-ID": str(uuid.uuid4()), "X-Auth-Token": keystone.token("user-a")},
    ) as http:
        pids = stack.child_pids()

        def served() -> bool:
            """A new queue, a message and a subscription: calls of every process, each
            with its own token, validated by the process it calls."""
            queue = "kp-" + uuid.uuid4().hex[:8]
            return (http.put(f"/v2/queues/{queue}", json={}).status_code,
                    http.post(f"/v2/queues/{queue}/messages",
                              json={"messages": [{"body": 1}]}).status_code,
                    http.post(f"/v2/queues/{queue}/subscriptions",
                              json={"subscriber": "http://127.0.0.1:9/hook", "ttl": 600},
                              ).status_code) == (201, 201, 201)

        assert served()
        taken = {service: reloads(stack, service) for service in SERVICES}
        # When the password changes in Keystone (which revokes the user's tokens), the
        # processes cannot log in any more: Keystone itself is what refuses
        with admin_client(keystone) as admin:
            changed = admin.patch(f"/users/{user_id}",
                                  json={"user": {"password": "second-password"}})
            assert changed.status_code == 200, changed.text
        wait_for(lambda: http.get("/v2/queues").status_code == 503,
                 "the gateway refused for its own credentials")
        # Then, once the file has the new password, every process logs in with it: the same
        # processes serve again
        written(password, "second-password")
        wait_for(served, "every process serving with its new token")
        assert all(reloads(stack, service) > taken[service] for service in SERVICES)
        assert stack.child_pids() == pids
        assert not any("second-password" in line or "first-password" in line
                       for line in list(stack.output))


class Mailbox:
    """An SMTP server's deliveries, and the one password it lets its user log in with."""

    def __init__(self) -> None:
        self.password = "first-password"
        self.messages: list[Any] = []
        self.logins: list[tuple[str, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        accepted = data.login == b"mailer" and data.password == self.password.encode()
        with self.lock:
            self.logins.append((data.password.decode(), accepted))
        return AuthResult(success=accepted, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(envelope.content.decode())
        return "250 OK"

    def got(self, text: str) -> bool:
        with self.lock:
            return any(text in message for message in self.messages)


def test_the_smtp_password_changes_without_a_restart(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given an SMTP server that lets its user in with one password, and a deployment whose
    # notifier_svc logs in to it with the password from a file
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, authenticator=mailbox,
                            auth_require_tls=False)
    controller.start()
    password = tmp_path / "smtp-password"
    written(password, "first-password")
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=port, smtp_user="mailer",
                             smtp_password="first-password", secret_reload_interval=0.1)
    try:
        with running(settings, {"smtp_password": password}) as stack, httpx.Client(
            base_url=stack.url, timeout=60,
            headers={"Client-ID": str(uuid.uuid4()), "X-Project-ID": "smtp-password"},
        ) as http:

            def post(text: str) -> None:
                answer = http.post("/v2/queues/mailed/messages",
                                   json={"messages": [{"body": text}]})
                assert answer.status_code == 201, answer.text

            subscribed = http.post("/v2/queues/mailed/subscriptions",
                                   json={"subscriber": "mailto:ops@example.com", "ttl": 600})
            assert subscribed.status_code == 201, subscribed.text
            post("first mail")
            wait_for(lambda: mailbox.got("first mail"), "the first mail delivered")
            # When the mail server's password changes, then the file's
            mailbox.password = "second-password"
            written(password, "second-password")
            wait_for(lambda: reloads(stack, "notifier") >= 1, "notifier_svc taking the file")
            # Then the next mail logs in with the new password and is delivered
            post("second mail")
            wait_for(lambda: mailbox.got("second mail"), "the second mail delivered")
            with mailbox.lock:
                assert ("second-password", True) in mailbox.logins
                assert ("first-password", False) not in mailbox.logins
    finally:
        controller.stop()
