"""When the absent person is back: the return date an out-of-office states.

What this module owns: reading dates out of an auto-reply's subject and new
text, in many languages and formats, and choosing the one that says when its
writer is back.

Choice: a date right after (or just before) "back / return / until / zurück /
retour / до ..." wins, else the latest date not before the message's own Date.
A date without a year is the next such day, unless the same day in the last two
months is nearer ("from 1 March to 12 March 2027", sent on 3 March); a bare
weekday after such a word ("back on Monday") is the next such day after it;
"back tomorrow" is the day after; "back on the 15th" is the next 15th.

Formats: year first (2027-03-15, 2027.03.15, 2027/03/15), day-first numerics
(15.03.2027, 15/03, 15.03.) with month-first only when day-first cannot be a
date (03/15/2027), month names in 15+ languages around a day ("15 March",
"March 15th", "15-Mar-2027", "15. března", "15 марта"), and the Japanese,
Chinese and Korean forms (3月15日, 3월 15일).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from email.message import Message

__all__ = ["message_date", "return_date"]

# A yearless date this far back may be the start of the absence, not next year's.
_RECENT_PAST = dt.timedelta(days=62)

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "january jan januar janvier enero gennaio janeiro januari tammikuu tammikuuta"
        " stycznia styczeń janv ene gen jänner января январь січня ocak ledna leden január"
        " januárja ianuarie ιανουαρίου",
        "february feb februar février fevrier febrero febbraio fevereiro februari helmikuu"
        " helmikuuta lutego luty févr fév февраля февраль лютого şubat subat února únor"
        " február februárja februarie φεβρουαρίου",
        "march mar märz maerz mars marts marzo março marco maart maaliskuu maaliskuuta marca"
        " marzec mrt марта март березня mart března březen március márciusi martie μαρτίου",
        "april apr avril abril aprile huhtikuu huhtikuuta kwietnia kwiecień avr abr апреля"
        " апрель квітня nisan dubna duben április aprilie απριλίου",
        "may mai mayo maggio maio mei toukokuu toukokuuta maja maj mag мая май травня mayıs"  # noqa: RUF001 - Turkish month and day names
        " mayis května květen május μαΐου μαιου",
        "june jun juni juin junio giugno junho kesäkuu kesäkuuta czerwca czerwiec giu июня"
        " июнь червня haziran června červen június iunie ιουνίου",
        "july jul juli juillet julio luglio julho heinäkuu heinäkuuta lipca lipiec juil lug"
        " июля июль липня temmuz července červenec július iulie ιουλίου",
        "august aug août aout agosto augustus augusti elokuu elokuuta sierpnia sierpień ago"
        " августа август серпня ağustos agustos srpna srpen augusztus αυγούστου",
        "september sep sept septembre septiembre settembre setembro syyskuu syyskuuta"
        " września wrzesień сентября сентябрь вересня eylül eylul září szeptember"
        " septembrie σεπτεμβρίου",
        "october oct oktober octobre octubre ottobre outubro lokakuu lokakuuta października"
        " październik okt ott out октября октябрь жовтня ekim října říjen október"
        " octombrie οκτωβρίου",
        "november nov novembre noviembre novembro marraskuu marraskuuta listopada listopad"
        " ноября ноябрь листопада kasım kasim listopadu noiembrie νοεμβρίου",  # noqa: RUF001 - Turkish month and day names
        "december dec dezember décembre decembre diciembre dicembre dezembro desember"
        " joulukuu joulukuuta grudnia grudzień déc dic dez декабря декабрь грудня aralık"  # noqa: RUF001 - Turkish month and day names
        " aralik prosince prosinec decembrie δεκεμβρίου",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS.setdefault(_name, _number)

_MONTH_NAMES = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
# "3 March", "3. März", "3 de marzo", "3rd of March", "3e mars", "3 maart", "15-Mar-2027"
_DAY_MONTH = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th|er|e|º|°)?\.?(?:\s*|-)(?:de\s+|of\s+)?({_MONTH_NAMES})\.?"
    rf"(?:(?:,?\s*|-)(?:de\s+)?(\d{{4}}))?(?!\w)",
    re.IGNORECASE,
)
# "March 3", "March 3rd, 2027", "március 15-ig"
_MONTH_DAY = re.compile(
    rf"\b({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s*(\d{{4}}))?",
    re.IGNORECASE,
)
# Year first: 2027-03-15, 2027.03.15, 2027/03/15 (one separator throughout).
_ISO = re.compile(r"\b(\d{4})([-./])(\d{1,2})\2(\d{1,2})\b")
_NUMERIC = re.compile(r"(?<![\d.:/])(\d{1,2})([./-])(\d{1,2})(?:\2(\d{4}|\d{2}))?(?![\d:/]|\.\d)")
# Starts at a digit: a leading optional part before "\s*" let every position of
# a whitespace run start a scan to its end (quadratic on blank lines).
_JAPANESE = re.compile(r"(?:(\d{4})年[ \t]{0,3})?(\d{1,2})月[ \t]{0,3}(\d{1,2})日")
_KOREAN = re.compile(r"(?:(\d{4})년[ \t]{0,3})?(\d{1,2})월[ \t]{0,3}(\d{1,2})일")
# "back on the 15th": a day of the month alone.
_DAY_ONLY = re.compile(r"\bthe (\d{1,2})(?:st|nd|rd|th)\b(?! of\b)", re.IGNORECASE)
_TOMORROW = re.compile(r"\b(?:tomorrow|demain|domani|amanh[ãa]|morgen früh)\b", re.IGNORECASE)

_WEEKDAYS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "monday montag lundi lunes lunedì lunedi segunda-feira segunda maandag måndag mandag"
        " maanantaina maanantai poniedziałek понедельник pazartesi pondělí",
        "tuesday dienstag mardi martes martedì martedi terça-feira terça dinsdag tisdag tirsdag"
        " tiistaina tiistai wtorek вторник salı úterý",  # noqa: RUF001 - Turkish month and day names
        "wednesday mittwoch mercredi miércoles miercoles mercoledì mercoledi quarta-feira quarta"
        " woensdag onsdag keskiviikkona keskiviikko środa среду среда çarşamba středa",
        "thursday donnerstag jeudi jueves giovedì giovedi quinta-feira quinta donderdag torsdag"
        " torstaina torstai czwartek четверг perşembe čtvrtek",
        "friday freitag vendredi viernes venerdì venerdi sexta-feira sexta vrijdag fredag"
        " perjantaina perjantai piątek пятницу пятница cuma pátek",
        "saturday samstag samedi sábado sabato zaterdag lördag lørdag lauantaina lauantai sobota"
        " субботу суббота cumartesi",
        "sunday sonntag dimanche domingo domenica zondag söndag søndag sunnuntaina sunnuntai"
        " niedziela воскресенье pazar neděle",
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
    r"|tilbage|takaisin|asti|powr|do dnia|\bdo\b|до\b|вернусь|возвращ|kadar|dönece|vissza"
    r"|-ig\b|până|έως|μέχρι|επιστρ|戻|まで|出社|까지|복귀",
    re.IGNORECASE,
)


def return_date(text: str, sent: dt.date | None) -> dt.date | None:
    """The date the absent person is back, read from ``text``; None if not stated."""
    reference = sent or dt.datetime.now(dt.UTC).date()
    found = _dates_in(text, reference)
    if not found:
        return _weekday_return(text, reference) or _relative_return(text, reference)
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


def _relative_return(text: str, reference: dt.date) -> dt.date | None:
    """ "back tomorrow", "back on the 15th" (the next 15th after ``reference``)."""
    for match in _TOMORROW.finditer(text):
        if _RETURN_WORD.search(text[max(0, match.start() - 30) : match.end() + 15]):
            return reference + dt.timedelta(days=1)
    for match in _DAY_ONLY.finditer(text):
        if not _RETURN_WORD.search(text[max(0, match.start() - 30) : match.start()]):
            continue
        day = int(match.group(1))
        for months_ahead in range(3):
            month_index = reference.month - 1 + months_ahead
            year, month = reference.year + month_index // 12, month_index % 12 + 1
            try:
                candidate = dt.date(year, month, day)
            except ValueError:
                continue
            if candidate > reference:
                return candidate
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
        _add(found, match.start(), int(match.group(1)), int(match.group(3)), int(match.group(4)))
    for pattern in (_JAPANESE, _KOREAN):
        for match in pattern.finditer(text):
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
    """Add a date; without a year, the next such day on or after ``reference``, or
    one in the last two months when that is nearer.

    "From 1 March to 12 March", sent on 3 March, began this year: reading
    "1 March" as next year's would make it the latest date and the return date.
    A leave "until 15 March" written in August ends next year.
    """
    if year is not None:
        _add(found, position, year, month, day)
        return
    candidates: list[dt.date] = []
    for candidate_year in (reference.year - 1, reference.year, reference.year + 1):
        try:
            candidates.append(dt.date(candidate_year, month, day))
        except ValueError:
            continue
    upcoming = [d for d in candidates if d >= reference]
    recent = [d for d in candidates if dt.timedelta(0) < reference - d <= _RECENT_PAST]
    if recent and (not upcoming or reference - recent[-1] < upcoming[0] - reference):
        found.append((position, recent[-1]))
    elif upcoming:
        found.append((position, upcoming[0]))
