"""A Gmail push, checked: the Pub/Sub push's OIDC token must be Google's, for us.

Google's push token is an OIDC ID token signed with one of Google's keys, published
with Cache-Control: max-age at GMAIL_PUSH_CERTS_URL. The certificates are kept for
that max-age (clamped to CERTS_MIN/MAX_SECONDS; CERTS_TTL_SECONDS without one). A
token naming a key id we do not hold may mean Google rotated early, so the list is
fetched again, but at most once per CERTS_REFETCH_SECONDS per process: a stream of
tokens with made-up key ids costs at most one fetch a minute, each refused. When a
fetch fails, certificates already held are used until a later fetch works.

Pub/Sub reuses one push token for about an hour, so a token whose signature and
audience checked out is remembered (by the SHA-256 of the certificates URL, the
audience and the token) with its claims until its own `exp`: the RSA check runs
once per token, not once per push. Only a token that passed is kept, never a
refusal; the issuer and service-account checks still run on every push (they
are dictionary lookups, and follow a settings change at once). A key Google
withdraws mid-hour is still trusted for the tokens it already signed, until they
expire, as any verifier that checked them once would. At most VERIFIED_TOKENS
are kept; a full table drops the expired ones, then the oldest.

The webhook (`web.webhooks`) calls `verify_push_token` before it believes a
push; starting and stopping the watch is the provider's (`worker.sync.gmail`).
This module needs google-auth and requests only, never the Gmail API client,
and never touches the database.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from typing import Any

import google.auth.exceptions
import google.auth.jwt
import requests

from config import get_settings

log = logging.getLogger(__name__)


CERTS_TTL_SECONDS = 3600
CERTS_MIN_SECONDS = 60
CERTS_MAX_SECONDS = 24 * 3600
CERTS_REFETCH_SECONDS = 60.0
VERIFIED_TOKENS = 1024
PUSH_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
_JWT: Any = google.auth.jwt  # untyped functions
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class _CertCache:
    """Google's push certificates per URL, their expiry, and the last fetch attempt."""

    def __init__(self) -> None:
        # Held while deciding and fetching: a request that needs a fetch another one
        # is making waits for it and reads its result instead of fetching again.
        self.fetching = threading.Lock()
        self.certs: dict[str, tuple[float, dict[str, str]]] = {}
        self.fetched_at: dict[str, float] = {}

    def for_key(self, url: str, kid: str) -> dict[str, str]:
        """Certificates that should hold `kid`; fetched only when due and allowed.

        Raises:
            requests.RequestException, ValueError: the fetch failed and nothing is held.
        """
        expires, certs = self.certs.get(url, (0.0, {}))
        if kid in certs and time.monotonic() < expires:
            return certs  # the hot path: no lock
        with self.fetching:
            now = time.monotonic()
            expires, certs = self.certs.get(url, (0.0, {}))
            if kid in certs and now < expires:
                return certs
            last = self.fetched_at.get(url)
            if last is not None and now - last < CERTS_REFETCH_SECONDS:
                return certs  # fetched a moment ago: the key id is not Google's
            self.fetched_at[url] = now
            try:
                fetched, max_age = _fetch_certs(url)
            except (requests.RequestException, ValueError) as exc:
                if certs:
                    log.warning("gmail_push_certs_stale error=%s", type(exc).__name__)
                    return certs
                raise
            self.certs[url] = (now + max_age, fetched)
        log.info("gmail_push_certs_fetched keys=%s max_age=%s", len(fetched), max_age)
        return fetched

    def forget(self) -> None:
        with self.fetching:
            self.certs.clear()
            self.fetched_at.clear()


def _fetch_certs(url: str) -> tuple[dict[str, str], int]:
    """Google's {kid: PEM} and how long its answer says to keep it."""
    answer = requests.get(url, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    if not isinstance(body, dict):
        raise ValueError("the certificates are not a JSON object")
    match = _MAX_AGE.search(answer.headers.get("Cache-Control", ""))
    max_age = int(match.group(1)) if match else CERTS_TTL_SECONDS
    return {str(k): str(v) for k, v in body.items()}, min(
        max(max_age, CERTS_MIN_SECONDS), CERTS_MAX_SECONDS
    )


_CERTS = _CertCache()


class _VerifiedTokens:
    """Claims of tokens whose signature and audience were verified, by digest, until `exp`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.entries: dict[bytes, tuple[float, dict[str, Any]]] = {}

    def get(self, digest: bytes) -> dict[str, Any] | None:
        found = self.entries.get(digest)
        if found is None:
            return None
        expires, claims = found
        if time.time() < expires:
            return claims
        with self.lock:
            self.entries.pop(digest, None)
        return None

    def put(self, digest: bytes, claims: dict[str, Any]) -> None:
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            return  # google-auth requires exp; without one there is nothing to keep it until
        with self.lock:
            if len(self.entries) >= self.limit:
                now = time.time()
                self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
            while len(self.entries) >= self.limit:
                del self.entries[next(iter(self.entries))]
            self.entries[digest] = (float(expires), claims)

    def forget(self) -> None:
        with self.lock:
            self.entries.clear()


_VERIFIED = _VerifiedTokens(VERIFIED_TOKENS)


def google_certs(url: str, kid: str) -> dict[str, str]:
    """Google's certificates at `url` that should hold `kid`, cached and refetched as above.

    The Gmail add-on's ID tokens are Google's too (`web.addons.gmail.auth`): one
    cache per process, keyed by URL, serves both.

    Raises:
        requests.RequestException, ValueError: the fetch failed and nothing is held.
    """
    return _CERTS.for_key(url, kid)


def forget_push_certs() -> None:
    """Drop the cached certificates, fetch times and verified tokens (another fake Google)."""
    _CERTS.forget()
    _VERIFIED.forget()


class PushTokenError(Exception):
    """The push carried no valid Google-signed token for us."""


def verify_push_token(token: str) -> dict[str, Any]:
    """Check a Pub/Sub push's OIDC token: Google's signature, our audience, Google's
    issuer, and the push subscription's service account (GMAIL_PUSH_SERVICE_ACCOUNT,
    with a verified email).

    Without GMAIL_PUSH_SERVICE_ACCOUNT any Google-signed token for our audience would
    do (anyone can mint one with their own Google project): production refuses to
    start that way when push is set up (config.settings) and refuses every token here
    otherwise; development accepts it, with a warning.

    May fetch Google's certificates (blocking I/O): an event loop asks
    `remembered_push_token` first and runs this in a thread only when that says None.
    """
    certs_url, audience = _refuse_unless_allowed()
    return _ours(_signed_claims(token, certs_url, audience))


def remembered_push_token(token: str) -> dict[str, Any] | None:
    """`verify_push_token` without I/O: the claims of a token verified before, else None.

    None means "not known yet", never "refused": the caller then verifies it in full.

    Raises:
        PushTokenError: refused (production without the account, or a remembered
            token whose issuer or account is not, or no longer, ours).
    """
    certs_url, audience = _refuse_unless_allowed()
    known = _VERIFIED.get(_digest(token, certs_url, audience))
    return None if known is None else _ours(dict(known))


def _refuse_unless_allowed() -> tuple[str, str | None]:
    """The certificates URL and audience; refuses every token in production without the account."""
    settings = get_settings()
    providers = settings.providers
    if providers.gmail_push_service_account is None and settings.is_production:
        raise PushTokenError("GMAIL_PUSH_SERVICE_ACCOUNT is not set: signed pushes are refused")
    return providers.gmail_push_certs_url, providers.gmail_push_audience


def _ours(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims, if Google issued them to our push subscription's account (checked every push)."""
    expected = get_settings().providers.gmail_push_service_account
    if claims.get("iss") not in PUSH_ISSUERS:
        raise PushTokenError(f"push token issuer {claims.get('iss')!r} is not Google")
    if expected is None:
        log.warning("gmail_push_unchecked_account reason=GMAIL_PUSH_SERVICE_ACCOUNT unset")
    elif claims.get("email") != expected or claims.get("email_verified") is not True:
        raise PushTokenError(f"push token is for {claims.get('email')!r}, not {expected!r}")
    return claims


def _digest(token: str, certs_url: str, audience: str | None) -> bytes:
    return hashlib.sha256(f"{certs_url}\n{audience}\n{token}".encode()).digest()


def _signed_claims(token: str, certs_url: str, audience: str | None) -> dict[str, Any]:
    """The token's claims once its signature (one of Google's keys), audience and times hold.

    Remembered until the token's `exp` (see the module's docstring); a refusal is not.
    """
    digest = _digest(token, certs_url, audience)
    known = _VERIFIED.get(digest)
    if known is not None:
        return dict(known)
    try:
        header = _JWT.decode_header(token)
        kid = header.get("kid") if isinstance(header, dict) else None
        if not isinstance(kid, str) or not kid:
            raise PushTokenError("push token names no key id")
        certs = _CERTS.for_key(certs_url, kid)
        if kid not in certs:
            raise PushTokenError("push token names a key id Google does not publish")
        claims: dict[str, Any] = _JWT.decode(token, certs=certs, audience=audience)
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise PushTokenError(f"push token rejected: {exc}") from exc
    except requests.RequestException as exc:
        raise PushTokenError(f"Google's push certificates are unreachable: {exc}") from exc
    _VERIFIED.put(digest, dict(claims))
    return claims
