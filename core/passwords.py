"""The password rule every way of choosing one shares: the CLI, an accepted invitation.

OWASP ASVS 4.0 §2.1.1-2.1.2: at least 12 characters, up to 128 allowed (spaces
too), and not the account's own email address. Stored only as werkzeug's
scrypt hash, never logged.
"""

from __future__ import annotations

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128


def password_problem(password: str, email: str) -> str | None:
    """Why `password` may not be used for `email`'s account, or None when it may."""
    if not password.strip():
        return "must not be empty"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters (a few words make a good one)"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if password.strip().lower() in (email.lower(), email.partition("@")[0].lower()):
        return "must not be the email address"
    return None
