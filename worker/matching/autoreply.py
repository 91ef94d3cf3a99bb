"""Auto-replies (out of office, vacation, "thanks for your message") and the return date.

What this module owns: deciding that a message was written by a machine on a
person's behalf, and reading when that person is back.

Signals, strongest first:

1. Headers that only auto-responders set: RFC 3834 ``Auto-Submitted: auto-replied``,
   ``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``, Apple's
   ``X-Apple-Action: VACATION``.
2. ``Auto-Submitted: auto-generated`` (Exchange's out-of-office sends this) counts
   when the subject or body also reads like an auto-reply, or the message answers
   one of ours (In-Reply-To / References): plain notifications send it too.
3. Subject or body wording in many languages ("Automatic reply:", "Abwesenheitsnotiz",
   "Réponse automatique", "I am out of the office" ...): many out-of-office
   messages carry no header at all.

A headerless notice under a "Re:" subject must also say what happens to the
message meanwhile ("I will reply upon my return", "for urgent matters ..."):
people write "I'm out of the office until Monday, but yes" in real replies.

Not signals on their own: ``X-MS-Exchange-Inbox-Rules-Loop`` (inbox-rule forwards
carry it too) and ``X-Auto-Response-Suppress`` (it asks *others* not to reply).

Return date: the dates written in the subject and new text are read in several
languages and formats; a date right after "back / return / zurück / retour ..."
wins, else the latest date that is not before the message's own Date. A date
without a year is the next such day on or after the message's Date; a bare
weekday after such a word ("back on Monday") is the next such day after it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from email.message import Message

from worker.matching.replytext import REPLY_PREFIX

__all__ = ["is_auto_reply", "mentions_absence", "return_date"]

_SUBJECT = re.compile(
    r"^\s*+(?:\[[^\]]*+\]\s*+)?(?:"
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response|responder)"
    r"|autoreply|auto:|ooo\b|away (?:from|until|till|through)\b|away:|vacation|on leave"
    r"|on holiday|absent|.{1,60} is out of (?:the )?office"
    r"|abwesenheit|automatische antwort|nicht im b[üu]ro|urlaub"
    r"|r[ée]ponse automatique|absence|absent du bureau|message d'absence"
    r"|respuesta autom[áa]tica|fuera de la oficina|ausente|ausencia"
    r"|risposta automatica|fuori sede|fuori ufficio|assente"
    r"|resposta autom[áa]tica|fora do escrit[óo]rio|aus[êe]ncia"
    r"|automatisch antwoord|afwezig|niet aanwezig|buiten kantoor"
    r"|automatiskt svar|fr[åa]nvar(?:o|ande)|autosvar|automatisk svar|frav[æa]r|ferie"
    r"|automaattinen vastaus|poissa|lomalla"
    r"|odpowied[źz] automatyczna|automatyczna odpowied[źz]|nieobecno[śs][ćc]|poza biurem"
    r"|automatick[áa] odpov[ěe]d|mimo kancel[áa][řr]|otomatik yan[ıi]t|ofis d[ıi][şs][ıi]nda"  # noqa: RUF001 - foreign-language wording
    r"|автоматический ответ|автоответ|нет на месте|в отпуске"
    r"|自動応答|自動返信|不在|自动回复|자동 회신|부재중"
    r")",
    re.IGNORECASE,
)
# Wording of an absence notice in the body (first lines of new text).
_BODY = re.compile(
    r"(?:i am|i'm|i will be|i'll be|i am currently|i'm currently) (?:currently )?"
    r"(?:out of (?:the )?office|away from (?:the|my) (?:office|desk)|on (?:vacation|holiday|leave"
    r"|annual leave|parental leave|sick leave|a business trip|maternity leave)|out until"
    r"|ooo\b|absent)"
    r"|(?:limited|no) access to (?:my )?e-?mail|will (?:respond|reply|get back to you)"
    r" (?:to your (?:e-?mail|message) )?(?:upon|when|after|on) (?:my )?return"
    r"|returning to the office|back in the office|currently out of the office"
    r"|thank you for your (?:e-?mail|message)[.,!]? (?:i am|i'm)"
    r"|ich bin (?:derzeit |zurzeit |momentan |vom .{1,30} |bis .{1,30} )?(?:nicht im b[üu]ro"
    r"|abwesend|im urlaub|au[ßs]er haus)|bin ich (?:nicht im b[üu]ro|abwesend|im urlaub)"
    r"|je suis (?:actuellement )?(?:absente?|en (?:cong[ée]s?|vacances|d[ée]placement))"
    r"|estar[ée] fuera|estoy (?:fuera de la oficina|de vacaciones|ausente)"
    r"|sono (?:fuori (?:sede|ufficio)|in ferie|assente)|sar[òo] (?:fuori|assente|in ferie)"
    r"|estou (?:ausente|de f[ée]rias|fora do escrit[óo]rio)|estarei (?:ausente|fora)"
    r"|ik ben (?:momenteel |tot .{1,30} )?(?:afwezig|niet aanwezig|met vakantie|op vakantie)"
    r"|jag är (?:ledig|på semester|borta|frånvarande|tjänstledig)"
    r"|jeg er (?:på ferie|fraværende|ikke på kontoret|bortreist|på barsel)"
    r"|olen (?:lomalla|poissa|vuosilomalla)|jestem (?:na urlopie|nieobecn[ya]|poza biurem)"
    r"|不在にしております|休暇を取得|出張のため|外出しております|休暇中",
    re.IGNORECASE,
)

# What only a notice adds to "I am away": what happens to the message meanwhile.
_NOTICE_DETAIL = re.compile(
    r"(?:will|shall|i'll) (?:respond|reply|get back to you|answer|read|deal with)\b.{0,60}"
    r"\b(?:return|back)|upon my return|limited (?:or no )?access|no access to (?:my )?e-?mail"
    r"|(?:urgent|immediate) (?:matters|issues|requests|enquiries|inquiries|assistance|queries)"
    r"|in my absence|will not be (?:read|forwarded|monitored)|not (?:being )?monitored"
    r"|checking (?:my )?e-?mails? (?:intermittently|periodically|occasionally)|delayed response"
    r"|nach meiner r[üu]ckkehr|in dringenden f[äa]llen|eingeschr[äa]nkte?m? zugriff"
    r"|keinen zugriff|wenden sie sich|nicht weitergeleitet|meine vertretung"
    r"|[àa] mon retour|pour toute urgence|en cas d'urgence|acc[èe]s limit[ée]"
    r"|a mi (?:regreso|vuelta)|en caso de urgencia|asuntos urgentes|acceso limitado"
    r"|al mio (?:rientro|ritorno)|per urgenze|accesso limitato"
    r"|no meu regresso|quando (?:eu )?(?:voltar|regressar|retornar)|em caso de urg[êe]ncia"
    r"|acesso limitado|na mijn terugkomst|bij mijn terugkeer|in dringende gevallen"
    r"|voor dringende zaken|beperkte? toegang|n[äa]r jag (?:[äa]r|kommer) tillbaka"
    r"|(?:vid|i) br[åa]dskande [äa]renden|begr[äa]nsad tillg[åa]ng"
    r"|n[åa]r jeg (?:er|kommer) tilba(?:ke|ge)|ved hastesaker|i hastende tilf[æa]lde"
    r"|begrenset tilgang|begr[æa]nset adgang|palattuani|kiireellisiss[äa] asioissa"
    r"|rajoitetusti|po (?:moim )?powrocie|w pilnych sprawach|ograniczony dost[ęe]p"
    r"|急ぎの|緊急の|戻り次第",
    re.IGNORECASE,
)

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "january jan januar janvier enero gennaio janeiro januari januar tammikuu"
        " tammikuuta stycznia styczeń janv ene gen jänner",
        "february feb februar février fevrier febrero febbraio fevereiro februari"
        " helmikuu helmikuuta lutego luty févr fév",
        "march mar märz maerz mars marts marzo março marco maart maaliskuu maaliskuuta marca"
        " marzec mrt",
        "april apr avril abril aprile huhtikuu huhtikuuta kwietnia kwiecień avr abr",
        "may mai mayo maggio maio mei toukokuu toukokuuta maja maj mag",
        "june jun juni juin junio giugno junho kesäkuu kesäkuuta czerwca czerwiec giu",
        "july jul juli juillet julio luglio julho heinäkuu heinäkuuta lipca lipiec juil lug",
        "august aug août aout agosto augustus augusti elokuu elokuuta sierpnia sierpień ago",
        "september sep sept septembre septiembre settembre setembro syyskuu"
        " syyskuuta września wrzesień",
        "october oct oktober octobre octubre ottobre outubro oktober lokakuu lokakuuta"
        " października październik okt ott out",
        "november nov novembre noviembre novembro marraskuu marraskuuta listopada listopad",
        "december dec dezember décembre decembre diciembre dicembre dezembro december"
        " desember joulukuu joulukuuta grudnia grudzień déc dic dez",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS.setdefault(_name, _number)

_MONTH_NAMES = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
# "3 March", "3. März", "3 de marzo", "3rd of March", "3e mars", "3 maart"
_DAY_MONTH = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th|er|e|º|°)?\.?\s*(?:de\s+|of\s+)?({_MONTH_NAMES})\.?"
    rf"(?:,?\s*(?:de\s+)?(\d{{4}}))?(?![a-zà-ÿ])",
    re.IGNORECASE,
)
# "March 3", "March 3rd, 2027"
_MONTH_DAY = re.compile(
    rf"\b({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s*(\d{{4}}))?",
    re.IGNORECASE,
)
_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUMERIC = re.compile(r"(?<![\d.:/])(\d{1,2})([./-])(\d{1,2})(?:\2(\d{4}|\d{2}))?(?![\d:/]|\.\d)")
# Starts at a digit: a leading optional part before "\s*" let every position of
# a whitespace run start a scan to its end (quadratic on blank lines).
_JAPANESE = re.compile(r"(?:(\d{4})年[ \t]{0,3})?(\d{1,2})月[ \t]{0,3}(\d{1,2})日")
_WEEKDAYS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "monday montag lundi lunes lunedì lunedi segunda-feira segunda maandag måndag mandag"
        " maanantaina maanantai poniedziałek",
        "tuesday dienstag mardi martes martedì martedi terça-feira terça dinsdag tisdag tirsdag"
        " tiistaina tiistai wtorek",
        "wednesday mittwoch mercredi miércoles miercoles mercoledì mercoledi quarta-feira quarta"
        " woensdag onsdag keskiviikkona keskiviikko środa",
        "thursday donnerstag jeudi jueves giovedì giovedi quinta-feira quinta donderdag torsdag"
        " torstaina torstai czwartek",
        "friday freitag vendredi viernes venerdì venerdi sexta-feira sexta vrijdag fredag"
        " perjantaina perjantai piątek",
        "saturday samstag samedi sábado sabato zaterdag lördag lørdag lauantaina lauantai sobota",
        "sunday sonntag dimanche domingo domenica zondag söndag søndag sunnuntaina sunnuntai"
        " niedziela",
    ]
):
    for _name in _names.split():
        _WEEKDAYS.setdefault(_name, _number)
_WEEKDAY = re.compile(
    "\\b(" + "|".join(sorted((re.escape(w) for w in _WEEKDAYS), key=len, reverse=True)) + ")\\b",
    re.IGNORECASE,
)
_RETURN_WORD = re.compile(
    r"back|return|until|till|through|zurück|wieder|bis|retour|jusqu|de vuelta|regres|hasta"
    r"|rientr|fino|ritorn|volta|regress|até|terug|tot en met|tot|tillbaka|åter|tilbake"
    r"|tilbage|takaisin|asti|powr|do dnia|戻|まで|出社",
    re.IGNORECASE,
)


def is_auto_reply(msg: Message, subject: str, new_text: str, quotes_history: bool) -> bool:
    """True if ``msg`` is an automatic reply (see module docstring for the signals).

    ``quotes_history``: the body quotes an earlier message. Absence wording in
    a body counts only without it: people write "I'm away next week" in real
    replies, which quote what they answer; out-of-office notices rarely do.
    """
    headers = {k.lower(): str(v).strip().lower() for k, v in msg.items()}
    auto_submitted = headers.get("auto-submitted", "")
    if auto_submitted.startswith("auto-replied"):
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers or "x-autoreply-from" in headers:
        return headers.get("x-autoreply", "yes") not in ("no", "false", "0")
    if headers.get("precedence", "") in ("auto_reply", "auto-reply"):
        return True
    if "vacation" in headers.get("x-apple-action", ""):
        return True
    body_wording = not quotes_history and bool(_BODY.search(" ".join(new_text[:1500].split())))
    wording = bool(_SUBJECT.search(subject)) or body_wording
    if auto_submitted and auto_submitted != "no":
        answers = "in-reply-to" in headers or "references" in headers
        return wording or answers
    if wording and headers.get("precedence", "") in ("bulk", "junk", "list"):
        return True
    # No header at all: the subject alone, or an absence notice short enough to be one.
    if _SUBJECT.search(subject):
        return True
    if not body_wording or len(new_text) >= 1500:
        return False
    # "I'm out of the office until Monday, but yes - Tuesday at 10" is a person
    # answering: under a "Re:" subject, a notice must also say what happens to
    # the message meanwhile (read on return, urgent matters to a colleague ...).
    return not REPLY_PREFIX.match(subject) or bool(
        _NOTICE_DETAIL.search(" ".join(new_text[:1500].split()))
    )


def mentions_absence(subject: str, new_text: str) -> bool:
    """True if the subject or the new text says someone is away (any language read here)."""
    return bool(_SUBJECT.search(subject) or _BODY.search(" ".join(new_text[:1500].split())))


def return_date(text: str, sent: dt.date | None) -> dt.date | None:
    """The date the absent person is back, read from ``text``; None if not stated."""
    reference = sent or dt.datetime.now(dt.UTC).date()
    found = _dates_in(text, reference)
    if not found:
        return _weekday_return(text, reference)
    # "back on 15 March", "ab dem 15.03. wieder zurück": the word may follow the date.
    after_keyword = [
        date
        for position, date in found
        if _RETURN_WORD.search(text[max(0, position - 40) : position + 30]) and date >= reference
    ]
    if after_keyword:
        return max(after_keyword)
    upcoming = [date for _, date in found if date >= reference]
    return max(upcoming) if upcoming else None


def _weekday_return(text: str, reference: dt.date) -> dt.date | None:
    """ "back on Monday": the next such weekday after ``reference``."""
    for match in _WEEKDAY.finditer(text):
        if not _RETURN_WORD.search(text[max(0, match.start() - 30) : match.end() + 15]):
            continue
        weekday = _WEEKDAYS[match.group(1).lower()]
        days = (weekday - reference.weekday() - 1) % 7 + 1
        return reference + dt.timedelta(days=days)
    return None


def message_date(msg: Message) -> dt.date | None:
    """The Date header as a date, or None if missing or unreadable."""
    value = msg.get("Date")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.date() if parsed else None


def _dates_in(text: str, reference: dt.date) -> list[tuple[int, dt.date]]:
    """(position, date) for every date expression in ``text``."""
    found: list[tuple[int, dt.date]] = []
    for match in _ISO.finditer(text):
        _add(found, match.start(), int(match.group(1)), int(match.group(2)), int(match.group(3)))
    for match in _JAPANESE.finditer(text):
        year = int(match.group(1)) if match.group(1) else None
        _add_yearless(
            found, match.start(), year, int(match.group(2)), int(match.group(3)), reference
        )
    for match in _DAY_MONTH.finditer(text):
        month = _MONTHS.get(match.group(2).lower())
        year = int(match.group(3)) if match.group(3) else None
        if month:
            _add_yearless(found, match.start(), year, month, int(match.group(1)), reference)
    for match in _MONTH_DAY.finditer(text):
        month = _MONTHS.get(match.group(1).lower())
        year = int(match.group(3)) if match.group(3) else None
        if month and len(match.group(1)) >= 3:
            _add_yearless(found, match.start(), year, month, int(match.group(2)), reference)
    for match in _NUMERIC.finditer(text):
        first, second = int(match.group(1)), int(match.group(3))
        year_text = match.group(4)
        if match.group(2) == "-" and not year_text:
            continue
        year = None
        if year_text:
            year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        # Day first, as most of the languages read here write it; month first
        # only when day-first cannot be a date (3/14/2027).
        day, month = (first, second) if second <= 12 else (second, first)
        if year is None and match.group(2) == "." and text[match.end() : match.end() + 1] != ".":
            continue  # "10.30" is a time; a German yearless date is written "03.03."
        _add_yearless(found, match.start(), year, month, day, reference)
    return found


def _add(found: list[tuple[int, dt.date]], position: int, year: int, month: int, day: int) -> None:
    try:
        found.append((position, dt.date(year, month, day)))
    except ValueError:
        return


def _add_yearless(
    found: list[tuple[int, dt.date]],
    position: int,
    year: int | None,
    month: int,
    day: int,
    reference: dt.date,
) -> None:
    """Add a date; without a year, the next such day on or after ``reference``."""
    if year is not None:
        _add(found, position, year, month, day)
        return
    for candidate_year in (reference.year, reference.year + 1):
        try:
            candidate = dt.date(candidate_year, month, day)
        except ValueError:
            continue
        if candidate >= reference:
            found.append((position, candidate))
            return
