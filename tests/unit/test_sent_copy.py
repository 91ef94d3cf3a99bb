"""What is read of a Sent-folder copy, and which of our tokens count (no services).

The copy is parsed as a mail client files it (quoted-printable HTML whose soft
line breaks cut our URLs, an attachment never decoded, a message cut off at the
byte bound); tokens count only when signed by us for the mailbox's team, also
inside a gateway's percent-encoded wrapper, and forged ones never.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email.message import EmailMessage
from urllib.parse import quote

import pytest

from config import get_settings
from core.documents.tokens import link_token
from core.tracking.tokens import open_token
from tests.conftest import TEST_SECRET_KEY
from worker.sync.gmail_sent import sent_copy
from worker.sync.sent_copy import MAX_SENT_BYTES, sent_copy_from_bytes
from worker.sync.sent_mail import MAX_TOKENS, token_sent_ids


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def copy_with(html: str, attachment: bytes = b"%PDF-1.4") -> bytes:
    message = EmailMessage()
    message["From"] = "Rep <rep@seller.test>"
    message["To"] = "Dana Scully <Dana@Prospect.test>, fox@prospect.test"
    message["Cc"] = "boss@seller.test"
    message["Subject"] = "=?utf-8?q?Preise_f=C3=BCr_Sie?="
    message["Message-ID"] = "<Abc@Mail.Example>"
    message["Date"] = "Sun, 06 Dec 2026 15:00:00 +0000"
    message.set_content("plain part")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    message.add_attachment(attachment, maintype="application", subtype="pdf", filename="a.pdf")
    return bytes(message)


def test_a_quoted_printable_copy_gives_its_headers_and_every_token_whole() -> None:
    link = f"https://t.test/d/{link_token(9, 2, 41, 0)}"
    pixel = f"https://t.test/o/{open_token(42, 7, 0, 1_800_000_000)}.gif"
    raw = copy_with(f'<p>{"x" * 70}<a href="{link}">doc</a><img src="{pixel}"></p>')
    assert b"=\n" in raw  # soft line breaks run through our URLs
    copy = sent_copy_from_bytes(raw)
    assert (copy.message_id, copy.subject) == ("<Abc@mail.example>", "Preise für Sie")
    assert copy.to == ["dana@prospect.test", "fox@prospect.test"]
    assert copy.cc == ["boss@seller.test"]
    assert "PDF" not in copy.text and "plain part" in copy.text
    assert token_sent_ids(copy.text, team_id=7) == {41, 42}
    # Another team's pixel is not ours to count; a document link names its row (the
    # caller's query holds the team).
    assert token_sent_ids(copy.text, team_id=8) == {41}


def test_forged_mangled_wrapped_and_too_many_tokens() -> None:
    good = open_token(42, 7, 0, 1_800_000_000)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    assert token_sent_ids(f"/o/{forged}.gif /o/{good} /d/not-a-real-token-at-all", 7) == set()
    wrapped = "https://eur.safelinks.test/?url=" + quote(f"https://t.test/o/{good}.gif", safe="")
    assert token_sent_ids(wrapped, 7) == {42}
    noise = " ".join(f"/d/{'A' * 30}{n:04d}" for n in range(MAX_TOKENS))
    assert token_sent_ids(f"{noise} /o/{good}.gif", 7) == set()  # the cap holds


def test_a_copy_cut_at_the_byte_bound_still_reads_its_text() -> None:
    pixel = f"https://t.test/o/{open_token(43, 7, 0, 1_800_000_000)}.gif"
    raw = copy_with(f'<img src="{pixel}">', attachment=b"\0" * (MAX_SENT_BYTES * 2))
    copy = sent_copy_from_bytes(raw[:MAX_SENT_BYTES])
    assert token_sent_ids(copy.text, 7) == {43}


def test_gmail_full_format_parts_are_read_decoded_and_attachments_skipped() -> None:
    pixel = f"https://t.test/o/{open_token(44, 7, 0, 1_800_000_000)}.gif"

    def data(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode("latin-1")).decode()

    message = {
        "id": "m1",
        "threadId": "t1",
        "payload": {
            "mimeType": "multipart/mixed",
            "headers": [
                {"name": "To", "value": "dana@prospect.test"},
                {"name": "Message-ID", "value": "<g1@mail.gmail.test>"},
                {"name": "Subject", "value": "Hi"},
            ],
            "parts": [
                {
                    "mimeType": "text/html",
                    "headers": [{"name": "Content-Type", "value": 'text/html; charset="latin-1"'}],
                    "body": {"data": data(f'<p>Grüße</p><img src="{pixel}">')},
                },
                {
                    "mimeType": "application/pdf",
                    "filename": "a.pdf",
                    "body": {"attachmentId": "att-1"},
                },
            ],
        },
    }
    copy = sent_copy(message)
    assert (copy.message_id, copy.thread_id, copy.to) == (
        "<g1@mail.gmail.test>",
        "t1",
        ["dana@prospect.test"],
    )
    assert "Grüße" in copy.text
    assert token_sent_ids(copy.text, 7) == {44}
