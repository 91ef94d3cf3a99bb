"""Google's ID-token signing keys, served as Google serves them, and tokens signed with them.

A Google Workspace add-on on the HTTP runtime is called with two Google ID tokens
(RS256 JWTs, `iss` https://accounts.google.com): the deployment's service account
in the `Authorization` header (`aud` the endpoint URL, `email` the account,
`email_verified`), and the Gmail user's own in the body's
`authorizationEventObject.userIdToken` (`aud` the add-on's OAuth client id,
`email`, `email_verified`). Google publishes the keys at
https://www.googleapis.com/oauth2/v1/certs as `{kid: PEM certificate}` with a
`Cache-Control: max-age`; this fake serves a test key the same way over TLS (the
process's throwaway CA, `tests.fakes.httpfake`) and counts the fetches.

    with FakeGoogleCerts() as google:
        google.certs_url                         # GMAIL_ADDON_CERTS_URL
        google.system_token(audience, account)   # the Authorization header's token
        google.user_token(email, client_id)      # authorizationEventObject.userIdToken
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from tests.fakes.gmail.pubsub import SigningKey
from tests.fakes.httpfake import FakeHttpServer

CERTS_PATH = "/oauth2/v1/certs"
ISSUER = "https://accounts.google.com"


def _numeric_id() -> str:
    return "1" + str(secrets.randbelow(10**20)).zfill(20)


class FakeGoogleCerts:
    def __init__(self) -> None:
        self.key = SigningKey()
        self.server = FakeHttpServer(self._app, name="fake-google-certs")

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != CERTS_PATH or environ.get("REQUEST_METHOD") != "GET":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        environ["fake.label"] = "certs"
        body = json.dumps({self.key.kid: self.key.cert_pem}).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json; charset=UTF-8"),
                ("Cache-Control", "public, max-age=20593, must-revalidate, no-transform"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    def start(self) -> FakeGoogleCerts:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeGoogleCerts:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def certs_url(self) -> str:
        return self.server.url + CERTS_PATH

    def fetches(self) -> int:
        return self.server.calls.count(lambda call: call.label == "certs")

    def sign(self, claims: dict[str, Any], key: SigningKey | None = None) -> str:
        signer = key or self.key
        # The key object, not its PEM: PyJWT would parse and check the PEM on every
        # token (about 40 ms of CPU each, most of a test's call).
        return jwt.encode(claims, signer.key, algorithm="RS256", headers={"kid": signer.kid})

    def system_token(
        self,
        audience: str,
        service_account: str,
        *,
        lifetime: int = 3600,
        issued: float | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """The Authorization header's token (HttpAuthorizationHeader SYSTEM_ID_TOKEN)."""
        now = int(issued if issued is not None else time.time())
        return self.sign(
            {
                "aud": audience,
                "azp": _numeric_id(),
                "email": service_account,
                "email_verified": True,
                "exp": now + lifetime,
                "iat": now,
                "iss": ISSUER,
                "sub": _numeric_id(),
            },
            key,
        )

    def user_token(
        self,
        email: str,
        client_id: str,
        *,
        verified: bool = True,
        lifetime: int = 3600,
        issued: float | None = None,
    ) -> str:
        """The Gmail user's ID token (authorizationEventObject.userIdToken)."""
        now = int(issued if issued is not None else time.time())
        return self.sign(
            {
                "aud": client_id,
                "azp": client_id,
                "email": email,
                "email_verified": verified,
                "exp": now + lifetime,
                "iat": now,
                "iss": ISSUER,
                "sub": _numeric_id(),
            }
        )


__all__ = ["CERTS_PATH", "ISSUER", "FakeGoogleCerts"]
