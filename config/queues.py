"""RQ queue names, in the order a worker serves them.

Sync comes first: seeing a reply is what stops the next step going out.
"""

from typing import Final

SYNC: Final = "sync"
SEND: Final = "send"
EVENTS: Final = "events"
SALESFORCE: Final = "salesforce"
DOCUMENTS: Final = "documents"
DEFAULT: Final = "default"

ALL: Final[tuple[str, ...]] = (SYNC, SEND, EVENTS, SALESFORCE, DOCUMENTS, DEFAULT)
