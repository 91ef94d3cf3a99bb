"""Mail domains that name no company: the free-mail providers.

What this module owns: the list in ``core/data/free_mail_domains.txt`` and the
one question asked of it. An address at gmail.com says nothing about where its
owner works, so such a domain never makes two people colleagues.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["domain_of", "is_free_mail"]

_LIST = Path(__file__).resolve().parent / "data" / "free_mail_domains.txt"


@cache
def _free_mail_domains() -> frozenset[str]:
    lines = _LIST.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip()[:1] not in ("", "#"))


def domain_of(address: str) -> str:
    """The domain of ``address``, lower-cased, without a trailing dot ("" if none)."""
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def is_free_mail(domain: str) -> bool:
    """True if ``domain`` is a provider anyone can sign up to (gmail.com, outlook.com ...)."""
    return domain.strip().rstrip(".").lower() in _free_mail_domains()
