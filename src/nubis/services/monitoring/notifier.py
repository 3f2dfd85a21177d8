"""Delivers alarm notifications: webhooks (a JSON POST signed with the rule's secret)
and e-mail (SMTP), retried with growing pauses until they succeed or run out of
attempts. Each notification row is one message; its id goes with every attempt
(``X-Nubis-Delivery``) so that a receiver can drop a repeat."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

import httpx
from sqlalchemy import select

from nubis import blocking
from nubis.db.models import utcnow
from nubis.db.models.monitoring import AlarmRule, Notification
from nubis.db.session import Database
from nubis.services.identity.secrets import SecretBox
from nubis.services.monitoring import webhooks

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6
SIGNATURE_HEADER = "X-Nubis-Signature"
DELIVERY_HEADER = "X-Nubis-Delivery"
GENERIC_ERROR = "not delivered: the target could not be reached or did not accept it"


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str


@dataclass(frozen=True)
class Outgoing:
    """What one delivery attempt needs, read before any network call."""

    id: str
    channel: str
    target: str
    payload: str
    secret: str | None  # the rule's webhook signing secret


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    def __init__(
        self, db: Database, box: SecretBox, smtp: Smtp | None, poll_seconds: float = 1.0
    ) -> None:
        self.db = db
        self.box = box
        self.smtp = smtp
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # whether this controller runs the loop's next round (one controller at a
        # time when several share the database: Leadership.gate)
        self.lead: Callable[[], bool] = lambda: True

    def _send(self, note: Outgoing) -> None:
        blocking.check(f"{note.channel} delivery")
        body = note.payload.encode()
        if note.channel == "webhook":
            # checked again now, and sent to the very address checked (see webhooks)
            target = webhooks.check(note.target, webhooks.rules(self.db))
            headers = {"Content-Type": "application/json", DELIVERY_HEADER: note.id}
            if note.secret:
                headers[SIGNATURE_HEADER] = signature(note.secret, body)
            url = httpx.URL(target.url)
            headers["Host"] = url.netloc.decode()
            with httpx.Client(timeout=5, follow_redirects=False) as client:
                resp = client.post(
                    url.copy_with(host=target.address),
                    content=body,
                    headers=headers,
                    extensions={"sni_hostname": target.hostname},
                )
            resp.raise_for_status()
            return
        if self.smtp is None:
            raise RuntimeError("no SMTP server is configured")
        doc = json.loads(note.payload)
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = note.target
        message["Subject"] = f"[Nubis] alarm {doc['alarm']['name']} is {doc['state']}"
        message.set_content(json.dumps(doc, indent=2))
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=10) as smtp:
            smtp.send_message(message)

    def deliver_due(self) -> int:
        """Try every notification that is due once; how many were delivered."""
        now = utcnow()
        with self.db.begin() as s:
            due = s.execute(
                select(Notification, AlarmRule.webhook_secret)
                .join(AlarmRule, AlarmRule.id == Notification.rule_id)
                .where(Notification.status == "pending", Notification.next_attempt_at <= now)
                .order_by(Notification.created_at)
                .limit(50)
            ).all()
            work = [
                Outgoing(
                    n.id,
                    n.channel,
                    n.target,
                    n.payload,
                    self.box.decrypt(sealed)["secret"] if sealed else None,
                )
                for n, sealed in due
            ]
        delivered = 0
        for note in work:
            try:
                self._send(note)
                error = None
            except Exception as exc:  # any failure is retried
                # the details stay in the server's log: the rule's owner sees only that
                # it failed (what a refused connection or an error page says about a
                # network is not theirs to probe)
                log.warning("notification %s to %s: %s", note.id, note.target, exc)
                error = GENERIC_ERROR
            with self.db.begin() as s:
                row = s.get(Notification, note.id)
                if row is None:
                    continue
                row.attempts += 1
                if error is None:
                    row.status, row.last_error = "sent", None
                    delivered += 1
                else:
                    row.last_error = error
                    if row.attempts >= MAX_ATTEMPTS:
                        row.status = "failed"
                        log.warning("notification %s to %s failed for good", note.id, note.target)
                    else:
                        pause = min(300, 2**row.attempts)
                        row.next_attempt_at = utcnow() + timedelta(seconds=pause)
        return delivered

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.lead():
                    self.deliver_due()
            except Exception:
                log.exception("notification delivery failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
