"""Mail that answers nobody: calendar traffic, read receipts, newsletters, transactional mail.

What this module owns: recognising messages a person did not write to answer
us, which come out ``other`` (recorded, nothing done):

- **calendar**: an invitation, a response to one or a cancellation: a
  ``text/calendar`` (or ``application/ics``) part with a ``METHOD``, or a
  response subject ("Accepted: ...", "Abgelehnt: ...") over a short text. Even
  under our thread it is not a reply: a calendar answers an invitation.
- **read and delivery receipts** without RFC 8098/3464 structure (``classify``
  reads those): a "Read: ..." / "Gelesen: ..." / "Delivered: ..." subject over
  text saying the message was read or delivered.
- **bulk and transactional mail** (``is_bulk``): list and mass-mailing headers,
  an email service provider's tracking headers, a no-reply or notification
  sender, or a newsletter's or a receipt's wording. These count only for mail
  that names none of our messages and does not answer one ("Re:"): a person
  replying through a mailing list or from a helpdesk still answered us.
"""

from __future__ import annotations

import re
from email.message import Message

from worker.matching.mimetext import iter_own_parts, part_text

__all__ = ["calendar_method", "is_bulk", "is_calendar_response", "is_read_receipt"]

_TEXT_WINDOW = 3000

_METHOD = re.compile(r"^[ \t]*+method[ \t]*+:[ \t]*+([a-z-]{1,40})", re.IGNORECASE | re.MULTILINE)

_CALENDAR_SUBJECT = re.compile(
    r"^[ \t]*+(?:accepted|declined|tentative(?:ly accepted)?|updated invitation|invitation"
    r"|new event|canceled event|cancelled event|canceled|cancelled|event canceled"
    r"|angenommen|abgelehnt|mit vorbehalt angenommen|vorbehaltlich|einladung|abgesagt"
    r"|accept[ée]|refus[ée]|provisoire|invitation mise [àa] jour|annul[ée]"
    r"|aceptad[oa]|rechazad[oa]|provisional|invitaci[óo]n|cancelad[oa]"
    r"|accettat[oa]|rifiutat[oa]|provvisorio|invito|annullat[oa]"
    r"|aceit[oa]|recusad[oa]|convite"
    r"|geaccepteerd|geweigerd|voorlopig|uitnodiging|geannuleerd"
    r"|accepterat|avb[öo]jt|prelimin[äa]rt|inbjudan|inst[äa]llt"
    r"|accepteret|afsl[åa]et|foreløbig|akseptert|avsl[åa]tt"
    r"|hyv[äa]ksytty|hyl[äa]tty|zaakceptowano|odrzucono|zaproszenie"
    r"|принято|отклонено|приглашение|承諾|辞退|仮承諾|已接受|已拒绝)"
    r"[ \t]*+(?:\([^)\n]{0,40}\))?[ \t]*+[:：]",  # noqa: RUF001 - full-width colon
    re.IGNORECASE,
)

_RECEIPT_SUBJECT = re.compile(
    r"^[ \t]*+(?:read|not read|read receipt|gelesen|ungelesen|lesebest[äa]tigung|lu|non lu"
    r"|le[íi]do|no le[íi]do|letto|non letto|lido|n[ãa]o lido|gelezen|niet gelezen"
    r"|l[äa]st|ej l[äa]st|l[æa]st|lest|ikke lest|luettu|przeczytan[ay]|nieprzeczytan[ay]"
    r"|прочитано|не прочитано|開封済み|已读|읽음|delivered|zugestellt|remis|entregado"
    r"|consegnato|entregue|bezorgd|levererat|leveret|levert)[ \t]*+[:：]",  # noqa: RUF001 - full-width colon
    re.IGNORECASE,
)
_READ_WORDING = re.compile(
    r"was read on|was deleted without being read|has been (?:read|displayed)"
    r"|wurde am .{1,40} gelesen|wurde ungelesen gel[öo]scht|a [ée]t[ée] lu"
    r"|fue le[íi]do|ha sido le[íi]do|[èe] stato letto|foi lido|is gelezen op"
    r"|l[äa]stes|blev l[æa]st|ble lest|luettiin|zosta[łl]a przeczytana|было прочитано"
    r"|開封されました|已被阅读|읽었습니다"
    r"|delivery to these recipients or groups is complete|(?:was|has been) delivered to the"
    r" following|[üu]bermittlung an diese empf[äa]nger .{0,20}abgeschlossen"
    r"|la remise [àa] ces destinataires .{0,30}(?:termin[ée]e|effectu[ée]e)",
    re.IGNORECASE,
)

_LIST_HEADERS = ("list-unsubscribe", "list-id", "list-post", "list-help")
# Headers only email service providers add, to what they send for others. Not
# prefixes that gateways or personal mail services also write: Mimecast adds
# X-MC-Unique to everything it passes, Proton writes X-Pm-*, Amazon WorkMail's
# personal mail leaves through SES (X-SES-Outgoing, Feedback-ID).
_ESP_HEADER_PREFIXES = (
    "x-mailgun-",
    "x-mc-user",
    "x-mandrill-",
    "x-sg-eid",
    "x-sendgrid",
    "x-campaign",
    "x-mailchimp",
    "x-marketo",
    "x-mktmail",
    "x-mailjet-campaign",
    "x-sib-id",
    "x-msfbl",
    "x-klaviyo",
    "x-emarsys",
    "x-sfmc-",
    "x-csa-complaints",
    "x-rpcampaign",
)

_MACHINE_SENDER = re.compile(
    r"(?:^|[<\s\"])(?:no-?reply|do-?not-?reply|donotreply|notifications?|newsletters?|news"
    r"|mailer-daemon|postmaster|bounces?|alerts?|receipts?|billing|invoices?|orders?"
    r"|updates|digest|marketing|mailings?|automated)[@+.-]",
    re.IGNORECASE,
)

_BULK_WORDING = re.compile(
    r"unsubscribe|view (?:this|it|the) (?:e-?mail |message |newsletter )?in (?:your|a|the)"
    r" (?:web )?browser|you (?:are|were) receiving this|manage (?:your )?(?:e-?mail )?"
    r"(?:preferences|subscription)|to stop receiving|opt[- ]out of|update your preferences"
    r"|this (?:e-?mail|message) was sent to|abmelden|abbestellen|newsletter abbestellen"
    r"|se d[ée]sinscrire|se d[ée]sabonner|d[ée]sabonnement|darse de baja"
    r"|cancelar (?:la )?suscripci[óo]n|annulla (?:l'iscrizione|iscrizione)|disiscriviti"
    r"|cancelar (?:a )?inscri[çc][ãa]o|descadastr|uitschrijven|afmelden"
    r"|avregistrera|avsluta prenumeration|afmeld|avmeld|peruuta tilaus|wypisz si[ęe]"
    r"|отписаться|配信停止|退订|수신 거부"
    r"|(?:order|invoice|receipt|booking|reservation|tracking|confirmation|transaction"
    r"|payment) (?:number|no\.|#|id)\b",
    re.IGNORECASE,
)


def calendar_method(msg: Message) -> str | None:
    """The iCalendar METHOD of ``msg`` (REQUEST, REPLY, CANCEL ...), "RESPONSE" for a
    response subject over a short text, or None if it is no calendar message."""
    for part in iter_own_parts(msg):
        if part.get_content_type() in ("text/calendar", "application/ics"):
            found = _METHOD.search(part_text(part)[: _TEXT_WINDOW * 10])
            return found.group(1).upper() if found else "PUBLISH"
    return None


def is_calendar_response(subject: str, new_text: str) -> bool:
    """An invitation answer whose calendar part a server dropped: subject, short text."""
    return bool(_CALENDAR_SUBJECT.search(subject)) and len(new_text.strip()) < 600


def is_read_receipt(subject: str, new_text: str) -> bool:
    """A read receipt written as plain mail ("Read: Hello" / "... was read on ...")."""
    if not _RECEIPT_SUBJECT.search(subject):
        return False
    flat = " ".join(new_text[:_TEXT_WINDOW].split())
    return bool(_READ_WORDING.search(flat)) or len(flat) < 200


def is_bulk(msg: Message, body: str) -> bool:
    """Mailing lists, newsletters, notifications and transactional mail (see module docstring).

    Wording alone counts only when two different phrases appear ("view in your
    browser" and "unsubscribe"): a person's own "please unsubscribe me" is a
    reply asking to stop, which the sequence engine must see.
    """
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return True
    names = {k.lower() for k in msg}
    if any(h in names for h in _LIST_HEADERS):
        return True
    if any(name.startswith(_ESP_HEADER_PREFIXES) for name in names):
        return True
    if _MACHINE_SENDER.search(str(msg.get("From", ""))):
        return True
    flat = " ".join(body[: _TEXT_WINDOW * 4].split()).lower()
    phrases = {m.group(0) for m in _BULK_WORDING.finditer(flat)}
    return len(phrases) >= 2
