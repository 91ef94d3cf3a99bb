"""Provider kind → class. The one place that knows every provider module.

Provider modules are imported on first use, so a process that never touches
Exchange never imports exchangelib (each vendor SDK lives in its module only).
"""

from __future__ import annotations

from typing import Any

from worker.sync.base import MailboxProvider, ProviderError
from worker.sync.credentials import SaveCredentials

KINDS = ("imap", "gmail", "exchange", "graph")


def provider_class(kind: str) -> type[MailboxProvider]:
    if kind == "imap":
        from worker.sync.imap import ImapProvider

        return ImapProvider
    if kind == "gmail":
        from worker.sync.gmail import GmailProvider

        return GmailProvider
    if kind == "exchange":
        from worker.sync.exchange import ExchangeProvider

        return ExchangeProvider
    if kind == "graph":
        from worker.sync.graph import GraphProvider

        return GraphProvider
    raise ProviderError(f"no provider for mailbox kind {kind!r}", permanent=True)


def open_provider(
    kind: str,
    email: str,
    credentials: dict[str, Any],
    *,
    save_credentials: SaveCredentials | None = None,
) -> MailboxProvider:
    """A provider for one job. `save_credentials` receives refreshed or rotated tokens."""
    provider = provider_class(kind)(email, credentials)
    provider.save_credentials = save_credentials
    return provider
