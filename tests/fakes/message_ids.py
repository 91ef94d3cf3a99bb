"""Message-IDs a mail server assigns itself, for the fakes that model it.

Servers do not always keep the Message-ID a client wrote. Exchange gives an
item its own InternetMessageId in many setups, when the item is created (a
draft saved through Graph or EWS); Gmail's API may replace it on send.
Whatever the server assigned is what the recipient sees, and what their reply
names in In-Reply-To and References.

Through the APIs the id a draft got is the one it is sent with: clients find
their sent mail in Sent Items by the draft's internetMessageId
(msgraph-sdk-dotnet #2947). Classic Outlook on the desktop is reported to
change it at send (office-js #2659, #6066), but that is a MAPI client, not an
API send, and is not modelled.

Policies the Graph and EWS fakes take (`store.message_id_policy`, "keep" after
a reset):

    keep    a well-formed Message-ID given is kept (the fakes' default)
    assign  the server's own id from the moment the draft is created: the
            draft, the copy in Sent Items and the recipient's copy carry it
"""

from __future__ import annotations

import re
import secrets

POLICIES = ("keep", "assign")
_HEADER = re.compile(rb"(?im)^Message-ID:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")


def outlook_message_id() -> str:
    """An id as Exchange Online writes it: `<server + hex@server.namprd11.prod.outlook.com>`."""
    server = f"BY5PR11MB{secrets.randbelow(9000) + 1000}"
    return f"<{server}{secrets.token_hex(16).upper()}@{server}.namprd11.prod.outlook.com>"


def exchange_message_id(host: str = "EXCH01.corp.example") -> str:
    """An id as on-premises Exchange writes it: `<32 hex digits@server's FQDN>`."""
    return f"<{secrets.token_hex(16)}@{host}>"


def replace_message_id(raw: bytes, message_id: str) -> bytes:
    """`raw` with its Message-ID header (folded or not) replaced, or added when missing."""
    line = b"Message-ID: " + message_id.encode("ascii")
    if _HEADER.search(raw):
        return _HEADER.sub(lambda _: line, raw, count=1)
    return line + b"\r\n" + raw


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        wanted = ", ".join(POLICIES)
        raise ValueError(f"message_id_policy: expected one of {wanted}, got {policy!r}")
    return policy
