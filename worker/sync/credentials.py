"""Saving a mailbox's refreshed or rotated OAuth tokens, at once and without losing a reconnect.

A provider that refreshes an access token (Google) or is handed a new refresh
token (Microsoft rotates them) calls its `save_credentials` hook with the whole
credentials JSON. `credential_saver` makes that hook for one mailbox: it
encrypts the JSON and writes it with a compare-and-set on the ciphertext the
job started from, in its own transaction, before the provider goes on. If a
person reconnected the mailbox meanwhile, their new credentials win and ours
are dropped ("another process got there first"); the next job starts from
theirs. Tokens are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Mailbox

log = logging.getLogger(__name__)

SaveCredentials = Callable[[dict[str, Any]], None]


def credential_saver(mailbox_id: int, loaded: str) -> SaveCredentials:
    """The `save_credentials` hook for `mailbox_id`, whose stored ciphertext was `loaded`."""
    current = {"ciphertext": loaded}

    def save(credentials: dict[str, Any]) -> None:
        ciphertext = encrypt_json(credentials)
        with session_scope() as session:
            result = session.execute(
                update(Mailbox)
                .where(
                    Mailbox.id == mailbox_id,
                    Mailbox.credentials_encrypted == current["ciphertext"],
                )
                .values(credentials_encrypted=ciphertext)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            current["ciphertext"] = ciphertext
            log.info("credentials_saved mailbox_id=%s", mailbox_id)
        else:
            log.warning("credentials_not_saved mailbox_id=%s reason=changed_since_load", mailbox_id)

    return save
