"""What the server logs of requests: never a secret that travels in a URL (the VNC
console's one-time ticket is in its websocket's query string for clients that
cannot send it as a subprotocol)."""

from __future__ import annotations

import logging
import re

SECRET_QUERY = re.compile(r"((?:^|[?&])(?:ticket|token)=)[^&\s\"']+")


class HideSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = SECRET_QUERY.sub(r"\1***", record.msg)
        return True


def hide_secrets_in_access_log() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(HideSecrets())
