"""E-mail delivery to ``mailto:`` subscribers over SMTP.

As Zaqar's mailto task: a notification is sent as the document's JSON text, ``From`` is
``options.from`` (else the ``smtp_sender`` setting), the subject is the URI's ``?subject=``,
else ``options.subject``. Confirmations get a subject and text of their own with the signed
confirmation data. An SMTP or connection failure is a failed attempt (retried like webhooks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import orjson

from services.common.secret_files import Part
from services.notifier_svc.storage.base import Delivery, DeliveryKind

log = logging.getLogger(__name__)

_SUBJECTS = {
    DeliveryKind.SUBSCRIPTION_CONFIRMATION: "Confirm your subscription to queue {queue}",
    DeliveryKind.UNSUBSCRIBE_CONFIRMATION: "You have unsubscribed from queue {queue}",
}


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    user: str
    password: str
    sender: str
    timeout: float


def compose(delivery: Delivery, default_sender: str) -> EmailMessage:
    """The e-mail for one delivery."""
    parts = urlsplit(delivery.subscriber)
    options: dict[str, Any] = dict(delivery.options)
    params = {k.lower(): v for k, v in parse_qs(parts.query).items()}
    mail = EmailMessage()
    mail["To"] = unquote(parts.path)
    mail["From"] = str(options.get("from") or default_sender)
    if delivery.kind == DeliveryKind.NOTIFICATION:
        subject = params["subject"][0] if "subject" in params else options.get("subject", "")
        mail["Subject"] = str(subject)
        mail.set_content(delivery.document.decode())
        return mail
    document = orjson.loads(delivery.document)
    mail["Subject"] = _SUBJECTS[delivery.kind].format(queue=delivery.queue)
    lines = [str(document.get("Message", "")), ""]
    if "WSGISubscribeURL" in document:
        lines.append(f"Confirmation URL (PUT): {document['WSGISubscribeURL']}")
    lines += [
        "Send a PUT request to the confirmation path with these headers, and the body "
        '{"confirmed": true} to subscribe or {"confirmed": false} to unsubscribe:',
        "",
        orjson.dumps(document, option=orjson.OPT_INDENT_2).decode(),
    ]
    mail.set_content("\n".join(lines))
    return mail


class MailSender:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    def take(self, values: Mapping[str, str]) -> None:
        """Log in with ``values["smtp_password"]`` from the next mail on (its file changed:
        ``secret_files.py``)."""
        self._settings = replace(self._settings, password=values["smtp_password"])

    def secret_part(self) -> Part:
        """The secret this sender takes anew from its file (:meth:`take`)."""
        return ("smtp_password",), self.take

    async def send(self, delivery: Delivery) -> bool:
        s = self._settings
        try:
            await aiosmtplib.send(
                compose(delivery, s.sender),
                hostname=s.host,
                port=s.port,
                start_tls=s.starttls,
                username=s.user or None,
                password=s.password or None,
                timeout=s.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            log.info("mail to %s failed: %s: %s", delivery.subscriber, type(exc).__name__, exc)
            return False
        return True
