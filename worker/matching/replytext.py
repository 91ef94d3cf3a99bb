"""The new text of a reply, and whether it asks us to stop writing.

What this module owns: cutting a reply body down to what its author just wrote —
quoted history ("On … wrote:" in a dozen languages, Outlook's header blocks and
"-----Original Message-----" lines, ``>`` quotes, Gmail/Outlook HTML quote
containers), signatures after ``-- `` and mobile "Sent from my iPhone" lines —
and spotting "please remove me / unsubscribe / stop emailing me" requests in
that new text only (a footer of our own quoted message must never count).

Linear time on any body: the body is read as lines (trailing whitespace and runs
of blank lines collapsed, which changes no result), at most ``MAX_BODY_CHARS`` of
them; every pattern is anchored at a line start, and no two quantifiers in one
can take the same characters (possessive ``*+`` where they touch).
"""

from __future__ import annotations

import re

from worker.matching.budget import check_budget

__all__ = [
    "MAX_BODY_CHARS",
    "QUOTE_MARKER",
    "REPLY_PREFIX",
    "is_unsubscribe_request",
    "new_text",
    "quotes_history",
]

REPLY_PREFIX = re.compile(
    r"^\s*+(?:re|aw|sv|vs|antw|antwort|r|rif|res|odp|ynt|vá|atb|回复|答复)\s*+(?:\[\d+\])?\s*+[:：]",  # noqa: RUF001 - foreign-language wording
    re.IGNORECASE,
)
"""A subject that answers another ("Re:", "AW:", "SV:", "Odp:" ...)."""

QUOTE_MARKER = ">>QUOTE-START<<"
"""Placed by htmltext.html_to_text where an HTML quote container starts."""

MAX_BODY_CHARS = 200_000
"""Characters of a body read (after blank runs are collapsed). A reply's new text
is at the top; what lies 200,000 characters down is quoted history, a long
forward or an attachment pasted inline, none of which decides what it is."""

# A line longer than this is text, never a quote marker (an attribution, a
# separator, a header line): it is not matched against their patterns.
_MAX_MARKER_LINE_CHARS = 1_000
# Characters of new text read for an unsubscribe request (about five pages).
_MAX_UNSUBSCRIBE_CHARS = 20_000
# Lines read between two checks of the time budget.
_CHECK_EVERY_LINES = 2_000
_BLANK_RUN = re.compile(r"\n{3,}")

# "On <date>, <name> wrote:" and its translations; may be wrapped over two lines.
_ATTRIBUTION = re.compile(
    r"^(?:"
    r"on\b.{0,250}\bwrote\s*:"
    r"|le\b.{0,250}\ba [ée]crit\s*:"
    r"|am\b.{0,250}\bschrieb\b.{0,250}:"
    r"|el\b.{0,250}\bescribi[óo]\s*:"
    r"|il\b.{0,250}\bha scritto\s*:"
    r"|em\b.{0,250}\bescreveu\s*:"
    r"|op\b.{0,250}\bschreef\b.{0,250}:"
    r"|den\b.{0,250}\bskrev\b.{0,250}:"
    r"|.{0,250}\bskrev\b.{0,250}:"
    r"|.{0,250}\bkirjoitti\s*:"
    r"|w dniu\b.{0,250}\bnapisa[łl](?:a|\(a\))?\s*:"
    r"|.{0,250}\bnapsal(?:a|\(a\))?\s*:"
    r"|.{0,250}\b(?:пишет|написал(?:а)?)\s*:"  # noqa: RUF001 - foreign-language wording
    r"|\d{4}年\d{1,2}月\d{1,2}日.{0,200}[:：]"  # noqa: RUF001 - foreign-language wording
    r"|.{0,250}\bwrote\s*:"
    r")\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^(?:on|le|am|el|il|em|op|den|w dniu|\d{4}年)\b", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^\s*+(?:(?:-{2,}+|_{2,}+|={2,}+)\s*+)?(?:original message|ursprüngliche nachricht"
    r"|original-nachricht|message d'origine|mensaje original|messaggio originale|mensagem original"
    r"|oorspronkelijk bericht|ursprungligt meddelande|opprinnelig melding|oprindelig meddelelse"
    r"|alkuperäinen viesti|wiadomość oryginalna|původní zpráva|исходное сообщение"
    r"|forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado"
    r"|messaggio inoltrato|doorgestuurd bericht|vidarebefordrat meddelande"
    r"|元のメッセージ|原始邮件)\s*+(?:(?:-{2,}+|_{2,}+|={2,}+)\s*+)?$",
    re.IGNORECASE,
)
_UNDERSCORE_RULE = re.compile(r"^\s*+_{10,}+\s*+$")
_HEADER_FROM = re.compile(
    r"^\s*+\*?(?:from|von|de|da|van|från|fra|lähettäjä|od|от|差出人|发件人|寄件者)\s*+\*?\s*+[:：]",  # noqa: RUF001 - foreign-language wording
    re.IGNORECASE,
)
_HEADER_OTHER = re.compile(
    r"^\s*+\*?(?:sent|date|to|subject|cc|gesendet|datum|an|betreff|envoyé|date|à|objet|enviado"
    r"|fecha|para|asunto|inviato|data|a|oggetto|verzonden|aan|onderwerp|skickat|till|ämne"
    r"|sendt|til|emne|lähetetty|vastaanottaja|aihe|wysłano|do|temat|送信日時|宛先|件名"
    r"|发送时间|收件人|主题)\s*+\*?\s*+[:：]",  # noqa: RUF001 - foreign-language wording
    re.IGNORECASE,
)
_SIGNATURE = re.compile(
    r"^\s*+(?:--|__)\s*+$"
    r"|^\s*+(?:sent from my|sent from (?:outlook|yahoo|mail for|samsung)|get outlook for"
    r"|outlook (?:voor|für|pour|para|per) (?:ios|android)|obtenir outlook|outlook für ios"
    r"|sent via|sent with|von meinem .{1,40} gesendet|gesendet von|envoyé de mon|envoyé depuis"
    r"|enviado desde mi|enviado do meu|enviado de meu|inviato da|verzonden (?:vanaf|met) mijn"
    r"|skickat från min|sendt fra min|lähetetty (?:iphonesta|androidista|laitteesta)"
    r"|wysłane z|отправлено с|iphoneから送信|android\S*から送信)",  # noqa: RUF001 - foreign-language wording
    re.IGNORECASE,
)
_UNSUBSCRIBE = re.compile(
    r"unsubscri|remove me|take me off|opt(?:-| )?(?:me )?out|stop (?:e-?mailing|emailing|sending|"
    r"contacting|writing)|(?:do not|don't|dont|please never) (?:contact|e-?mail|write to|message)"
    r" me|no (?:more|further) e-?mails|not interested[,.;!]? (?:please )?remove"
    r"|abmelden|austragen|keine (?:weiteren )?(?:e-?mails|nachrichten)|entfernen sie mich"
    r"|nicht mehr (?:kontaktieren|anschreiben|schreiben)"
    r"|d[ée]sabonn|d[ée]sinscri|retirez[- ]moi|supprimez[- ]moi|ne (?:plus|pas) me (?:contacter|"
    r"[ée]crire)|ne plus recevoir"
    r"|darme de baja|dar(?:me)? de baja|eliminarme|no me (?:env[íi]e|escrib)|no quiero recibir"
    r"|dejen? de (?:enviar|escribir)"
    r"|cancellami|disiscriv|rimuovetemi|rimuovermi|non (?:inviatemi|scrivetemi|voglio ricevere)"
    r"|descadastr|remova-me|me remova|me remover|n[ãa]o quero receber|parem de enviar"
    r"|uitschrijven|afmelden|verwijder (?:mij|me)|geen (?:e-?mails|berichten) meer"
    r"|avregistrera|avsluta prenumeration|ta bort mig|sluta skicka|sluta maila"
    r"|afmeld mig|meld meg av|fjern (?:mig|meg)|slet mig"
    r"|poista minut|lopettakaa|wypisz mnie|usu[ńn] mnie|nie wysy[łl]a[ćj]"
    r"|配信停止|配信を停止|送らないで|退订",
    re.IGNORECASE,
)


def new_text(body: str) -> str:
    """The part of a reply body its author just wrote (quotes and signature removed)."""
    lines = _lines(body)
    cut = _history_start(lines)
    kept: list[str] = []
    for line in lines[:cut]:
        if _SIGNATURE.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    text = "\n".join(kept).strip()
    return _BLANK_RUN.sub("\n\n", text)


def quotes_history(body: str) -> bool:
    """True if ``body`` quotes an earlier message (attribution, header block or ``>`` lines)."""
    lines = _lines(body)
    if _history_start(lines) < len(lines):
        return True
    return sum(1 for line in lines if line.lstrip().startswith(">")) >= 2


def is_unsubscribe_request(text: str) -> bool:
    """True if the reply's new text asks to stop receiving our emails.

    Reads the first ``_MAX_UNSUBSCRIBE_CHARS``: people ask at the top. A request
    further down still stops the sequence (it is a reply); it only is not read
    as an opt-out.
    """
    return bool(_UNSUBSCRIBE.search(" ".join(text[:_MAX_UNSUBSCRIBE_CHARS].split())))


def _lines(body: str) -> list[str]:
    """The body's lines, right-stripped, blank runs collapsed to one, capped.

    Neither change alters what ``new_text`` returns (it strips lines and
    collapses blank runs itself) or where the history starts (blank lines are
    skipped there); both keep padding from costing anything.
    """
    lines: list[str] = []
    room = MAX_BODY_CHARS
    blank = False
    for number, raw in enumerate(body.replace("\r\n", "\n").replace("\r", "\n").split("\n")):
        if number % _CHECK_EVERY_LINES == 0:
            check_budget()
        line = raw.rstrip()
        if not line:
            if blank:
                continue
            blank = True
        else:
            blank = False
        lines.append(line[:room])
        room -= len(line) + 1
        if room <= 0:
            break
    return lines


def _history_start(lines: list[str]) -> int:
    """Index of the first line of quoted history, or ``len(lines)``."""
    for index, line in enumerate(lines):
        if index % _CHECK_EVERY_LINES == 0:
            check_budget()
        stripped = line.strip()
        if not stripped or len(stripped) > _MAX_MARKER_LINE_CHARS:
            continue
        if stripped == QUOTE_MARKER or _SEPARATOR.match(stripped):
            return index
        if _is_attribution(stripped, lines[index + 1].strip() if index + 1 < len(lines) else ""):
            return index
        if _UNDERSCORE_RULE.match(stripped) and _looks_like_header_block(lines, index + 1):
            return index
        if _HEADER_FROM.match(stripped) and _looks_like_header_block(lines, index):
            return index
    return len(lines)


def _is_attribution(line: str, following: str) -> bool:
    """True if ``line`` (or ``line`` and ``following``) is an "On ... wrote:" line.

    Every attribution ends with a colon, and the lines come stripped: testing
    that first spares the pattern's bounded ``.{0,250}`` scans on other lines.
    """
    if line.endswith((":", "：")) and _ATTRIBUTION.match(line):  # noqa: RUF001 - full-width colon
        return True
    # Gmail wraps a long attribution over two lines.
    return (
        following.endswith((":", "："))  # noqa: RUF001 - full-width colon
        and len(following) <= _MAX_MARKER_LINE_CHARS
        and bool(_ATTRIBUTION_START.match(line))
        and bool(_ATTRIBUTION.match(f"{line} {following}"))
    )


def _looks_like_header_block(lines: list[str], start: int) -> bool:
    """True if a forwarded/quoted header block (From: then Sent:/To:/...) starts here."""
    window = [line for line in lines[start : start + 8] if line.strip()]
    if not window or not _HEADER_FROM.match(window[0]):
        return False
    return sum(1 for line in window[1:5] if _HEADER_OTHER.match(line)) >= 1
