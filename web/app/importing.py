"""Reading a CSV of prospects to enrol: every problem found, with its line number.

The decision: **preview, then confirm.** An upload is read and checked in full
and nothing is written; the page lists the rows that will be enrolled and every
bad row with its line number and what is wrong with it. Confirming enrols the
good rows in **one transaction** — all of them or, if anything changed in the
meantime (someone enrolled one of them), none, and the preview is shown again.
A rep with 500 rows and two typos gets the 498 in now and knows exactly which
two lines were left out; nothing is ever half-imported. The file waits in Redis
(`sightline:import:<team>:<token>`, 30 minutes) between the two steps.

File rules: at most `MAX_BYTES` and `MAX_ROWS` rows; UTF-8 with or without a
byte-order mark (anything else is refused with the line of the first bad byte
and how to re-save the file); comma, semicolon or tab separated (read from the
header line); a header line naming the columns, one of them the email address.
Column names are matched loosely (`Email Address`, `First name`, `Company name`…).
Optional `time_zone` (an IANA name, checked: a bad one is a bad row) sets the
prospect's zone; `phone` is read only for its country code, to guess one.
Optional `do_not_track` (yes/no, empty: left as it is) sets the prospect's flag.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from core.header_text import flatten_header_text
from core.zones.names import ZoneError, check_zone
from web.api.schemas import check_email

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000
FIELD_LIMIT = 200

_COLUMNS: dict[str, tuple[str, ...]] = {
    "email": ("email", "email_address", "e_mail", "e_mail_address", "mail", "work_email"),
    "name": ("name", "full_name", "contact_name", "contact"),
    "first_name": ("first_name", "firstname", "first", "given_name"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name"),
    "company": (
        "company",
        "company_name",
        "organization",
        "organisation",
        "account",
        "account_name",
    ),
    "time_zone": ("time_zone", "timezone", "tz", "zone", "iana_time_zone"),
    "phone": ("phone", "phone_number", "telephone", "tel", "mobile", "mobile_phone", "mobilephone"),
    "do_not_track": ("do_not_track", "dnt", "no_tracking", "untracked"),
}
_YES = frozenset({"yes", "y", "true", "1", "x"})
_NO = frozenset({"no", "n", "false", "0"})


class ImportFileError(ValueError):
    """The file as a whole cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class ImportRow:
    line: int
    email: str
    name: str | None
    company: str | None
    time_zone: str | None = None  # checked IANA name: the prospect's, as if set by hand
    phone: str | None = None  # only read for its country code (core.zones.inference)
    do_not_track: bool | None = None  # None: the column is absent or the cell empty


@dataclass(frozen=True)
class BadRow:
    line: int
    message: str  # names the column: "email: 'dana@' is not a valid email address"


@dataclass
class ParsedFile:
    rows: list[ImportRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # our name → the file's header
    ignored: list[str] = field(default_factory=list)  # headers we do not use


def _normalise(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")


def decode(data: bytes) -> str:
    """The file's text. Raises ImportFileError for anything but UTF-8 text."""
    if not data.strip():
        raise ImportFileError("The file is empty.")
    if len(data) > MAX_BYTES:
        raise ImportFileError(
            f"The file is over the {MAX_BYTES // 1048576} MB limit ({MAX_ROWS:,} rows at most). "
            "Split it and upload the parts."
        )
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError(
            "This is a spreadsheet file (Excel), not CSV text. In Excel choose "
            "File → Save As → “CSV UTF-8”, then upload that file."
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError(
            "The file is UTF-16 text. Save it as “CSV UTF-8” and upload it again."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(
            f"Line {line} is not UTF-8 text (byte 0x{data[exc.start]:02X}). The file was "
            "probably saved in another encoding (e.g. Windows-1252): save it as "
            "“CSV UTF-8” and upload it again."
        ) from None
    if "\x00" in text:
        raise ImportFileError("The file contains binary data, not CSV text.")
    return text


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _columns(header: list[str]) -> tuple[dict[str, int], dict[str, str], list[str]]:
    index: dict[str, int] = {}
    names: dict[str, str] = {}
    ignored: list[str] = []
    for position, raw in enumerate(header):
        key = _normalise(raw)
        ours = next((c for c, aliases in _COLUMNS.items() if key in aliases), None)
        if ours is None or ours in index:
            if raw.strip():
                ignored.append(raw.strip())
            continue
        index[ours] = position
        names[ours] = raw.strip()
    return index, names, ignored


def parse_csv(data: bytes) -> ParsedFile:
    """Every row of the file, good or bad. Raises ImportFileError for the file as a whole."""
    text = decode(data)
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    parsed = ParsedFile()
    try:
        header: list[str] | None = None
        seen: dict[str, int] = {}
        line_end = 0
        for record in reader:
            line = line_end + 1  # where this record started (quoted fields may span lines)
            line_end = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = record
                index, parsed.columns, parsed.ignored = _columns(header)
                if "email" not in index:
                    found = ", ".join(h.strip() for h in header if h.strip()) or "nothing"
                    raise ImportFileError(
                        f"Line {line} must name the columns, one of them “email”. Found: {found}."
                    )
                continue
            if len(parsed.rows) + len(parsed.bad) >= MAX_ROWS:
                raise ImportFileError(
                    f"The file has more than {MAX_ROWS:,} rows. Split it and upload the parts."
                )
            _read_row(parsed, index, header, record, line, seen)
    except csv.Error as exc:
        raise ImportFileError(f"Line {reader.line_num} cannot be read as CSV: {exc}.") from None
    if header is None:
        raise ImportFileError("The file is empty.")
    if not parsed.rows and not parsed.bad:
        raise ImportFileError("The file names its columns but has no rows under them.")
    return parsed


def _read_row(
    parsed: ParsedFile,
    index: dict[str, int],
    header: list[str],
    record: list[str],
    line: int,
    seen: dict[str, int],
) -> None:
    def cell(name: str) -> str:
        position = index.get(name)
        if position is None or position >= len(record):
            return ""
        # One line, no control characters: names end up in subjects ({{first_name}}).
        return " ".join(flatten_header_text(record[position]).split())

    if len(record) > len(header) and any(c.strip() for c in record[len(header) :]):
        parsed.bad.append(
            BadRow(
                line,
                f"{len(record)} values but the first line names {len(header)} columns "
                "(a comma inside a value needs the value in double quotes)",
            )
        )
        return
    raw_email = cell("email")
    if not raw_email:
        parsed.bad.append(BadRow(line, f"{parsed.columns['email']}: no email address"))
        return
    try:
        email = check_email(raw_email).lower()
    except ValueError:
        parsed.bad.append(
            BadRow(line, f"{parsed.columns['email']}: “{raw_email}” is not a valid email address")
        )
        return
    if email in seen:
        parsed.bad.append(BadRow(line, f"{email} is already on line {seen[email]}"))
        return
    name = cell("name") or " ".join(p for p in (cell("first_name"), cell("last_name")) if p)
    company = cell("company")
    for column, value in (("name", name), ("company", company)):
        if len(value) > FIELD_LIMIT:
            header_name = parsed.columns.get(column) or parsed.columns.get("first_name") or column
            parsed.bad.append(
                BadRow(line, f"{header_name}: at most {FIELD_LIMIT} characters ({len(value)})")
            )
            return
    time_zone = cell("time_zone")
    if time_zone:
        try:
            time_zone = check_zone(time_zone)
        except ZoneError as exc:
            parsed.bad.append(BadRow(line, f"{parsed.columns['time_zone']}: {exc}"))
            return
    phone = cell("phone")[:FIELD_LIMIT]
    flag = cell("do_not_track").lower()
    if flag and flag not in _YES | _NO:
        column = parsed.columns["do_not_track"]
        parsed.bad.append(BadRow(line, f"{column}: “{flag[:20]}” is neither yes nor no"))
        return
    seen[email] = line
    parsed.rows.append(
        ImportRow(
            line,
            email,
            name or None,
            company or None,
            time_zone or None,
            phone or None,
            (flag in _YES) if flag else None,
        )
    )
