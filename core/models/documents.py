"""Trackable attachments: documents, their pages and bytes, the links sent, the visits.

Natural keys: `document_pages` (document_id, number); `document_blobs`
(document_id, name, seq); `message_documents` (step_id, document_id) and
(sent_message_id, document_id); `document_links` (document_id, sent_message_id,
recipient), so a retried send reuses its links; `document_page_views`
(visit_id, page).

Indexes: `ix_documents_team_created` (the library), `ix_documents_status_heartbeat`
(claiming and taking over stale processing), `ix_document_visits_document_started`
and `ix_document_visits_link_started` (reports); team and foreign-key columns
marked `index=True` below.

Must never happen: a document's kind decided by its file name; a document still
in an email deleted from under it (RESTRICT); a visitor's address or user agent
stored; an unconfirmed visit counted, shown or sent to Salesforce.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class DocumentStatus(enum.StrEnum):
    QUEUED = "queued"  # uploaded; a `documents` job will pick it up
    CONVERTING = "converting"  # LibreOffice is turning an Office file into a PDF
    RENDERING = "rendering"  # PyMuPDF is rendering pages (`progress` counts them)
    READY = "ready"
    FAILED = "failed"  # `error` says why, in words a user can act on


class Document(Base):
    """A file in a team's content library, and where its processing stands.

    `kind` is decided by the file's content, never its name. Processing is
    claimed with `claim_token` and kept alive by `heartbeat_at`; a claim whose
    heartbeat went stale is taken over (see `worker.documents.pipeline`).
    """

    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_team_created", "team_id", "created_at"),
        Index("ix_documents_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))  # as uploaded; shown to recipients
    kind: Mapped[str] = mapped_column(String(10))  # pdf, doc, docx, ppt, pptx, odt, odp
    content_type: Mapped[str] = mapped_column(String(120))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=DocumentStatus.QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    error: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None]
    # Defaults for the links made when the document goes out in an email.
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_after_days: Mapped[int | None] = mapped_column(Integer)
    # What the PDF (the upload, or the one made from it) holds that a reader could
    # act on: codes from core.documents.findings; NULL: not checked by this version.
    active_content: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    # The blob a download serves ("original", "document.pdf" or "download.pdf", the
    # copy without active content); NULL: none may be offered.
    download_blob: Mapped[str | None] = mapped_column(String(100))
    download_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    # 1 for the upload; each replace adds one (same row, same links, new file and pages).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class DocumentPage(Base):
    """One rendered page: its size at the 800-pixel rendering, and its text."""

    __tablename__ = "document_pages"
    __table_args__ = (UniqueConstraint("document_id", "number", name="uq_document_pages_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1-based
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, default="")


class DocumentBlob(Base):
    """Bytes of a document's files (original, PDF, page images) in 1 MiB chunks.

    Used by the database blob store (`core.documents.storage`), the default.
    """

    __tablename__ = "document_blobs"
    __table_args__ = (
        UniqueConstraint("document_id", "name", "seq", name="uq_document_blobs_chunk"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MessageDocument(Base):
    """A document added to a sequence step (or one message): a tracked link or a plain file."""

    __tablename__ = "message_documents"
    __table_args__ = (
        UniqueConstraint("step_id", "document_id", name="uq_message_documents_step"),
        UniqueConstraint("sent_message_id", "document_id", name="uq_message_documents_sent"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    # RESTRICT: a document still in an email cannot vanish from under it.
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="RESTRICT"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("sequence_steps.id", ondelete="CASCADE"))
    sent_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE")
    )
    tracked: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentLink(Base):
    """One recipient's link to a document, made when the email carrying it was sent.

    Unique per (document, sent message, recipient), so a retried send reuses it.
    """

    __tablename__ = "document_links"
    __table_args__ = (
        UniqueConstraint(
            "document_id", "sent_message_id", "recipient", name="uq_document_links_recipient"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    sent_message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[int] = mapped_column(Integer)  # index into to_addrs + cc_addrs
    prospect_id: Mapped[int | None] = mapped_column(
        ForeignKey("prospects.id", ondelete="CASCADE"), index=True
    )
    # False when the team could not track it (not on the team plan, or tracking off).
    tracked: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentVisit(Base):
    """One opening of a document link, labelled like a tracking hit.

    Only the label is kept, never the address or user agent it was decided
    from. A visit is `confirmed` once the viewer reported time from a visible
    page (a script ran in a browser a person looks at); only confirmed `person`
    visits are counted, shown in the feed and sent to Salesforce.
    """

    __tablename__ = "document_visits"
    __table_args__ = (
        Index("ix_document_visits_document_started", "document_id", "started_at"),
        Index("ix_document_visits_link_started", "link_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    link_id: Mapped[int] = mapped_column(ForeignKey("document_links.id", ondelete="CASCADE"))
    hit_class: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200), default="")
    device_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    current_page: Mapped[int] = mapped_column(Integer, default=1)
    pages_seen: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    downloaded_at: Mapped[datetime | None]
    event_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("events.id", ondelete="SET NULL")
    )
    # The document's version this visit read: its page times are about those pages.
    document_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The viewer's last beacon said the reader left; NULL while reading (or unsaid).
    ended_at: Mapped[datetime | None]


class DocumentPageView(Base):
    """Time on one page during one visit: the largest total the viewer reported."""

    __tablename__ = "document_page_views"
    __table_args__ = (UniqueConstraint("visit_id", "page", name="uq_document_page_views_page"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    visit_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("document_visits.id", ondelete="CASCADE")
    )
    page: Mapped[int] = mapped_column(Integer)
    ms: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
