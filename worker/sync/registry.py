"""Provider kind → class. The one place that knows every provider module.

The web process and the listener import this module but open few providers
(a connect; IMAP and Exchange watches), so the two providers whose SDKs are
heavy are imported on first use; the `sync` and `worker` processes import
every provider at start anyway (worker/rqsettings.py). Measured as the RSS and
time an import adds after `create_app()` (web) or `import worker.listener`,
best of three (IMAP and Graph before they moved to the top):

    provider   web                 listener
    imap       0.6 MiB, 0.02 s     0.7 MiB, 0.02 s     imported at the top
    graph      0.5 MiB, 0.01 s     0.6 MiB, 0.01 s     imported at the top
    gmail      4.8 MiB, 0.06 s     7.3 MiB, 0.14 s     on first use
    exchange   17.6 MiB, 0.14 s    20.1 MiB, 0.21 s    on first use

Each vendor SDK lives in its provider's modules only.
"""

from __future__ import annotations

from typing import Any

from worker.sync.base import MailboxProvider, ProviderError
from worker.sync.credentials import SaveCredentials
from worker.sync.graph import GraphProvider
from worker.sync.imap import ImapProvider

KINDS = ("imap", "gmail", "exchange", "graph")


def provider_class(kind: str) -> type[MailboxProvider]:
    if kind == "imap":
        return ImapProvider
    if kind == "gmail":
        # lazy import: google-api-python-client costs the web process 4.8 MiB RSS
        # and the listener 7.3 MiB (see the module docstring); only Gmail mailboxes need it.
        from worker.sync.gmail import GmailProvider

        return GmailProvider
    if kind == "exchange":
        # lazy import: exchangelib costs the web process 17.6 MiB RSS and the listener
        # 20.1 MiB (see the module docstring); only Exchange mailboxes need it.
        from worker.sync.exchange import ExchangeProvider

        return ExchangeProvider
    if kind == "graph":
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
