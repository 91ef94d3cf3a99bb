"""The data model: what web and worker share, one module per aggregate.

=================  ==============================================================
`base`             `Base`, `UTCDateTime`, `BigId`, `utcnow`: what every table shares
`teams`            teams, users and their roles, API tokens, devices, sign-ins
`invitations`      invitations to join a team (the link's token, hashed)
`mailboxes`        mailboxes, their push channels, inbound messages
`sequences`        prospects, sequences and steps, enrolments and their transitions
`messages`         sent messages and events
`oneoff`           email templates, one-off emails and their attachments
`tracking`         tracking hits
`documents`        documents, pages, blobs, links, visits, page views
`salesforce`       the org connection, engagement summaries, the outbox
`privacy`          erased addresses (a keyed hash, nothing else)
`optouts`          the opt-out list's history (who added or removed, when, why)
`pauses`           sequences the bounce guard paused, and why
`addons`           drafts composed in Gmail or Outlook with our tracking
=================  ==============================================================

Each module's docstring names its natural keys, its indexes and what must never
happen. Natural keys make every write idempotent: a sent message's Message-ID,
an inbound message's (mailbox, provider id), an event's key and an outbox row's
key are unique, so re-running any job writes nothing twice.

Importing this package imports every aggregate, so `Base.metadata` (which
Alembic compares the database with) holds every table; callers import the
names from here: `from core.models import Mailbox`.
"""

from __future__ import annotations

from core.models.addons import DraftSource, ExternalDraft
from core.models.base import Base, BigId, UTCDateTime, utcnow
from core.models.documents import (
    Document,
    DocumentBlob,
    DocumentLink,
    DocumentPage,
    DocumentPageView,
    DocumentStatus,
    DocumentVisit,
    MessageDocument,
)
from core.models.invitations import Invitation
from core.models.mailboxes import (
    InboundMessage,
    Mailbox,
    MailboxKind,
    MailboxPush,
    MailboxStatus,
    PushKind,
)
from core.models.messages import Event, SendStatus, SentMessage
from core.models.oneoff import EmailTemplate, OneOffAttachment, OneOffEmail, OneOffStatus
from core.models.optouts import OptOutChange, OptOutSource
from core.models.pauses import SequencePause
from core.models.privacy import ErasedAddress
from core.models.salesforce import (
    OutboxStatus,
    SalesforceAuthKind,
    SalesforceConnection,
    SalesforceConnectionStatus,
    SalesforceEngagement,
    SalesforceOutbox,
)
from core.models.sequences import (
    FINAL_STATES,
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    Prospect,
    Sequence,
    SequenceStep,
)
from core.models.teams import ApiToken, Device, Plan, Role, SignIn, Team, User
from core.models.tracking import TrackingHit

__all__ = [
    "FINAL_STATES",
    "ApiToken",
    "Base",
    "BigId",
    "Device",
    "Document",
    "DocumentBlob",
    "DocumentLink",
    "DocumentPage",
    "DocumentPageView",
    "DocumentStatus",
    "DocumentVisit",
    "DraftSource",
    "EmailTemplate",
    "Enrollment",
    "EnrollmentState",
    "EnrollmentTransition",
    "ErasedAddress",
    "Event",
    "ExternalDraft",
    "InboundMessage",
    "Invitation",
    "Mailbox",
    "MailboxKind",
    "MailboxPush",
    "MailboxStatus",
    "MessageDocument",
    "OneOffAttachment",
    "OneOffEmail",
    "OneOffStatus",
    "OptOutChange",
    "OptOutSource",
    "OutboxStatus",
    "Plan",
    "Prospect",
    "PushKind",
    "Role",
    "SalesforceAuthKind",
    "SalesforceConnection",
    "SalesforceConnectionStatus",
    "SalesforceEngagement",
    "SalesforceOutbox",
    "SendStatus",
    "SentMessage",
    "Sequence",
    "SequencePause",
    "SequenceStep",
    "SignIn",
    "Team",
    "TrackingHit",
    "UTCDateTime",
    "User",
    "utcnow",
]
