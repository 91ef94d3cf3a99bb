"""Hypothesis strategies for inbound mail as the internet writes it: mostly right, often not.

`messages()` builds raw RFC 5322 messages of every shape the classifier reads:
plain and HTML text, multipart trees up to three levels deep, delivery reports
(RFC 3464, with fields right and wrong), feedback reports (RFC 5965), read
receipts, attached originals (`message/rfc822`, `text/rfc822-headers`); with
random charsets (real, bogus, UTF-16), transfer encodings (valid and broken
base64 and quoted-printable, unknown ones), RFC 2047 encoded words, folded and
8-bit headers, NUL bytes, bare LFs, missing boundaries. Each part of the tree is
drawn independently, so shrinking finds the smallest message that fails.
"""

from __future__ import annotations

import base64
import quopri

from hypothesis import strategies as st

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "koi8-r", "gb2312",
            "shift_jis", "x-unknown", "", "utf-8\"; junk=\"", "unicode-1-1-utf-7"]  # fmt: skip
ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "garbage", ""]
NASTY = ["\x00", "\r", "\n", "\r\n", "\t", "\u202e", "\ufeff", "\udcff", "\U0001f600", "=?",
         "?=", "<", ">", "@", "\"", "\\", ";", "--", "..", "\u0130"]  # fmt: skip

words = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs", "S"]), max_size=40
)
nasty_text = st.lists(st.one_of(words, st.sampled_from(NASTY)), max_size=12).map("".join)
any_text = st.one_of(nasty_text, st.text(max_size=200))
local_parts = st.from_regex(r"[a-zA-Z0-9._%+-]{1,20}", fullmatch=True)
domains = st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True)
addresses = st.builds(lambda a, d: f"{a}@{d}", local_parts, domains)
message_ids = st.builds(lambda a, d: f"<{a}@{d}>", local_parts, domains)


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded word, valid or broken."""
    text = draw(any_text)
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "bogus", "utf-16"]))
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        payload = base64.b64encode(raw).decode()
        kind = "B"
    else:
        payload = quopri.encodestring(raw, header=True).decode("ascii", "replace")
        kind = "Q"
    if draw(st.booleans()):
        payload = payload[: draw(st.integers(0, len(payload)))]  # truncated
    return f"=?{charset}?{kind}?{payload}?="


header_values = st.one_of(
    any_text,
    encoded_words(),
    addresses,
    st.builds(lambda n, a: f'"{n}" <{a}>', any_text, addresses),
    st.lists(st.one_of(message_ids, any_text), max_size=6).map(" ".join),
)
HEADER_NAMES = ["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References",
                "Date", "Auto-Submitted", "X-Autoreply", "X-Autorespond", "Precedence",
                "X-Auto-Response-Suppress", "X-MS-Exchange-Inbox-Rules-Loop", "Return-Path",
                "List-Id", "List-Unsubscribe", "Reply-To", "X-Failed-Recipients",
                "Original-Message-ID", "Feedback-Type", "Content-Disposition",
                "Disposition-Notification-To", "Sender", "X-Mailer"]  # fmt: skip


@st.composite
def header_block(draw: st.DrawFn, extra: list[str] | None = None) -> str:
    lines = list(extra or [])
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(HEADER_NAMES))
        value = draw(header_values)
        if draw(st.integers(0, 4)) == 0:  # folded
            value = value.replace(" ", "\r\n\t", 1)
        lines.append(f"{name}: {value}")
    return "\r\n".join(lines)


def _encode_body(text: str, encoding: str, charset: str, broken: bool) -> bytes:
    try:
        raw = text.encode(charset or "utf-8", "surrogateescape")
    except (LookupError, UnicodeError):
        raw = text.encode("utf-8", "surrogatepass")
    if encoding == "base64":
        out = base64.encodebytes(raw)
        return out[: len(out) // 2] + b"!!" if broken else out
    if encoding == "quoted-printable":
        out = quopri.encodestring(raw)
        return out + b"=\r\n=Z" if broken else out
    return raw


DSN_FIELDS = [
    "Final-Recipient: rfc822; {addr}", "Original-Recipient: rfc822;{addr}",
    "Action: {action}", "Status: {status}", "Diagnostic-Code: smtp; {text}",
    "Remote-MTA: dns; {domain}", "Reporting-MTA: dns; {domain}", "Arrival-Date: {text}",
    "Last-Attempt-Date: {text}", "Will-Retry-Until: {text}", "X-Postfix-Queue-ID: {text}",
]  # fmt: skip
ACTIONS = ["failed", "delayed", "delivered", "relayed", "expanded", "", "FAILED", "x"]
statuses = st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)
ARF_FIELDS = [
    "Feedback-Type: {feedback}", "User-Agent: {text}", "Version: 1",
    "Original-Mail-From: <{addr}>", "Original-Rcpt-To: <{addr}>",
    "Arrival-Date: {text}", "Source-IP: 192.0.2.{n}", "Reported-Domain: {domain}",
]  # fmt: skip


@st.composite
def report_fields(draw: st.DrawFn, fields: list[str]) -> str:
    groups = []
    for _ in range(draw(st.integers(0, 3))):
        lines = []
        for template in draw(st.lists(st.sampled_from(fields), max_size=8)):
            lines.append(
                template.format(
                    addr=draw(st.one_of(addresses, any_text)),
                    action=draw(st.sampled_from(ACTIONS)),
                    status=draw(st.one_of(statuses, any_text)),
                    text=draw(any_text),
                    domain=draw(domains),
                    feedback=draw(st.sampled_from(["abuse", "fraud", "not-spam", "virus", ""])),
                    n=draw(st.integers(0, 300)),
                )
            )
        groups.append("\r\n".join(lines))
    return "\r\n\r\n".join(groups)


LEAF_TYPES = ["text/plain", "text/html", "message/delivery-status", "message/feedback-report",
              "message/disposition-notification", "text/rfc822-headers",
              "message/global-delivery-status", "application/octet-stream", "image/png",
              "message/rfc822", "text/enriched", "garbage"]  # fmt: skip
MULTI_TYPES = ["multipart/mixed", "multipart/alternative", "multipart/related",
               "multipart/report; report-type=delivery-status",
               "multipart/report; report-type=feedback-report",
               "multipart/report; report-type=disposition-notification",
               "multipart/report; report-type=\"x\"", "multipart/report",
               "multipart/signed"]  # fmt: skip


@st.composite
def parts(draw: st.DrawFn, depth: int = 0) -> bytes:
    """One MIME entity (headers and body), possibly a multipart tree."""
    multipart = depth < 3 and draw(st.integers(0, 2)) == 0
    if multipart:
        kind = draw(st.sampled_from(MULTI_TYPES))
        boundary = draw(st.sampled_from(["b1", "=_part_" + str(depth), "", "a b", "--"]))
        children = draw(st.lists(parts(depth + 1), max_size=4))
        head = f'Content-Type: {kind}; boundary="{boundary}"'
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + c + b"\r\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\r\n"
        extra = draw(header_block())
        return (head + ("\r\n" + extra if extra else "") + "\r\n\r\n").encode(
            "utf-8", "surrogateescape"
        ) + body
    kind = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    if kind in ("message/delivery-status", "message/global-delivery-status"):
        text = draw(report_fields(DSN_FIELDS))
    elif kind == "message/feedback-report":
        text = draw(report_fields(ARF_FIELDS))
    elif kind in ("message/rfc822", "text/rfc822-headers"):
        text = draw(header_block(extra=[f"Message-ID: {draw(message_ids)}"])) + "\r\n\r\n"
        text += draw(any_text)
    else:
        text = draw(any_text)
    head = f'Content-Type: {kind}; charset="{charset}"\r\nContent-Transfer-Encoding: {encoding}'
    body = _encode_body(text, encoding, charset, broken=draw(st.integers(0, 4)) == 0)
    return (head + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A whole raw message: top-level headers and one entity, with line-end damage now and then."""
    top = draw(header_block(extra=["MIME-Version: 1.0"]))
    entity = draw(parts())
    raw = top.encode("utf-8", "surrogateescape") + b"\r\n" + entity
    damage = draw(st.sampled_from(["none", "lf", "nul", "cut"]))
    if damage == "lf":
        raw = raw.replace(b"\r\n", b"\n")
    elif damage == "nul":
        raw = raw.replace(b" ", b"\x00", 3)
    elif damage == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


REPORTERS = ["MAILER-DAEMON@mx.example", "postmaster@example.org", "fbl@feedback.example", "",
             "Mail Delivery System"]  # fmt: skip


@st.composite
def reports(draw: st.DrawFn) -> bytes:
    """A delivery or feedback report, mostly well formed: the classifier's deepest paths."""
    feedback = draw(st.booleans()) and draw(st.integers(0, 3)) == 0
    report_type = "feedback-report" if feedback else "delivery-status"
    boundary = "rpt_" + draw(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
    original = draw(header_block(extra=[f"Message-ID: {draw(message_ids)}"]))
    fields = draw(report_fields(ARF_FIELDS if feedback else DSN_FIELDS))
    human = draw(any_text)
    sender = draw(st.sampled_from(REPORTERS))
    top = draw(header_block(extra=[
        f"From: {sender}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
    ]))  # fmt: skip
    attached = draw(st.sampled_from(["message/rfc822", "text/rfc822-headers", "text/plain"]))
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{human}\r\n"
        f"--{boundary}\r\nContent-Type: message/{report_type}\r\n\r\n{fields}\r\n"
        f"--{boundary}\r\nContent-Type: {attached}\r\n\r\n{original}\r\n\r\nbody\r\n"
        f"--{boundary}--\r\n"
    )
    return (top + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")
