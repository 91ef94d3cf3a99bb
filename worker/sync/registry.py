"""Provider kind → class. The one place that knows every provider module."""

from __future__ import annotations

from typing import Any

from worker.sync.base import MailboxProvider, ProviderError


def provider_class(kind: str) -> type[MailboxProvider]:
    if kind == "imap":
        from worker.sync.imap import ImapProvider

        return ImapProvider
    raise ProviderError(f"no provider for mailbox kind {kind!r}", permanent=True)


def open_provider(kind: str, email: str, credentials: dict[str, Any]) -> MailboxProvider:
    return provider_class(kind)(email, credentials)
