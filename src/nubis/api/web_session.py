"""The web console's session: the API's own bearer token, carried in a cookie.

The browser holds the token in an HttpOnly, SameSite=Strict cookie, so page
scripts never see it. Every request that changes something and authenticates by
that cookie must also carry the CSRF token of the session (header
``X-CSRF-Token``, or the form field ``csrf_token`` of the console's own forms):
an HMAC of the session token under a server key, which a page of another site
can neither read nor compute. Before login there is no session yet: the login
form carries a random token that must match a cookie set with the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from nubis.services.core.errors import Forbidden
from nubis.services.identity import signing

SESSION_COOKIE = "nubis_session"
LOGIN_CSRF_COOKIE = "nubis_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def derive_key(secret: bytes) -> bytes:
    """A key for CSRF tokens only, derived from the platform's secret."""
    return hashlib.sha256(b"nubis-web-csrf\0" + secret).digest()


def csrf_token(key: bytes, session_token: str) -> str:
    return hmac.new(key, session_token.encode(), hashlib.sha256).hexdigest()


def check_csrf(key: bytes, session_token: str, presented: str | None) -> None:
    if not presented:
        raise Forbidden("a change made with the web session needs its CSRF token")
    if not signing.equal(presented, csrf_token(key, session_token)):
        raise Forbidden("the CSRF token does not belong to this session")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def check_login_csrf(cookie: str | None, presented: str | None) -> None:
    if not cookie or not presented or not signing.equal(presented, cookie):
        raise Forbidden("the login form expired or did not come from this site: reload it")
