"""A small, honest SOQL: parse, check against the schema, evaluate.

Supported::

    SELECT f1, f2 | COUNT() FROM Obj
    [WHERE cond {AND cond} | cond {OR cond} | ( ... ) | NOT cond]
    [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]

    cond := field (= | != | <> | < | <= | > | >=) literal
          | field [NOT] IN (literal, ...)
          | field [NOT] LIKE 'pattern'
    literal := 'string' | true | false | null | number | 2024-01-01 | 2024-01-01T00:00:00Z

As in Salesforce: keywords and field names are case-insensitive; text
comparisons (=, IN, LIKE) are case-insensitive, so ``Email = 'A@x.com'`` finds
``a@x.com``; AND and OR may not be mixed at one level without parentheses;
a datetime or boolean field compared with a quoted string, or an Id field with
something that is not an id, is an error; an unknown field is INVALID_FIELD, an
unknown object INVALID_TYPE, anything else unparseable MALFORMED_QUERY, with
Salesforce's "ERROR at Row:1:Column:N" message.

Not modelled: relationship paths (Account.Name), subqueries, aggregate
functions other than COUNT(), GROUP BY, date literals (TODAY, LAST_N_DAYS),
semi-joins, FOR UPDATE, SOSL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from .errors import ApiError, normalize_id
from .schema import FieldSpec, SObjectSpec
from .store import Record, parse_datetime

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.VERBOSE,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "'": "'",
    '"': '"',
    "\\": "\\",
    "%": "\\%",
    "_": "\\_",
}


@dataclass(frozen=True)
class Token:
    kind: str  # string, datetime, date, number, op, punct, ident, eof
    text: str
    pos: int

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.upper() in words


@dataclass(frozen=True)
class Literal:
    kind: str  # string, datetime, date, number, boolean, null
    value: Any
    pos: int


@dataclass(frozen=True)
class Comparison:
    field: FieldSpec
    op: str  # = != < <= > >= IN NOT IN LIKE NOT LIKE
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class Junction:
    op: str  # AND, OR, NOT
    parts: tuple[Condition, ...]


Condition = Comparison | Junction


@dataclass
class Query:
    sobject: SObjectSpec
    fields: list[FieldSpec]
    count_only: bool = False
    where: Condition | None = None
    order_by: list[tuple[FieldSpec, bool, bool]] = field(default_factory=list)  # desc, nulls_last
    limit: int | None = None
    offset: int = 0


def _error_at(soql: str, pos: int, code: str, detail: str) -> ApiError:
    line = soql.replace("\n", " ")
    return ApiError(400, code, f"\n{line}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n{detail}")


def tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(soql):
        match = _TOKEN_RE.match(soql, pos)
        if match is None:
            raise _error_at(soql, pos, "MALFORMED_QUERY", f"unexpected token: '{soql[pos]}'")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(soql)))
    return tokens


class _Parser:
    def __init__(self, soql: str, lookup: Callable[[str], SObjectSpec | None]) -> None:
        self.soql = soql
        self.tokens = tokenize(soql)
        self.i = 0
        self.lookup = lookup

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: Token | None = None, detail: str | None = None) -> ApiError:
        token = token or self.tok
        return _error_at(
            self.soql, token.pos, "MALFORMED_QUERY", detail or f"unexpected token: '{token.text}'"
        )

    def expect_kw(self, word: str) -> Token:
        if not self.tok.is_kw(word):
            raise self.fail()
        return self.advance()

    def expect_punct(self, char: str) -> Token:
        if self.tok.kind != "punct" or self.tok.text != char:
            raise self.fail()
        return self.advance()

    # grammar
    def parse(self) -> Query:
        self.expect_kw("SELECT")
        selected: list[Token] = []
        count_only = False
        if self.tok.is_kw("COUNT") and self.tokens[self.i + 1].text == "(":
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            count_only = True
        else:
            while True:
                if self.tok.kind != "ident" or self.tok.is_kw("FROM"):
                    raise self.fail()
                selected.append(self.advance())
                if self.tok.text != ",":
                    break
                self.advance()
        self.expect_kw("FROM")
        if self.tok.kind != "ident":
            raise self.fail()
        object_token = self.advance()
        spec = self.lookup(object_token.text)
        if spec is None:
            raise _error_at(
                self.soql,
                object_token.pos,
                "INVALID_TYPE",
                f"sObject type '{object_token.text}' is not supported. If you are attempting to "
                "use a custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            )
        query = Query(
            sobject=spec, fields=[self.field(spec, t) for t in selected], count_only=count_only
        )
        if self.tok.is_kw("WHERE"):
            self.advance()
            query.where = self.condition(spec)
        if self.tok.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            query.order_by = self.order_by(spec)
        if self.tok.is_kw("LIMIT"):
            self.advance()
            query.limit = self.integer()
        if self.tok.is_kw("OFFSET"):
            self.advance()
            query.offset = self.integer()
        if self.tok.kind != "eof":
            raise self.fail()
        return query

    def integer(self) -> int:
        if self.tok.kind != "number" or not self.tok.text.isdigit():
            raise self.fail()
        return int(self.advance().text)

    def field(self, spec: SObjectSpec, token: Token) -> FieldSpec:
        field_spec = spec.field(token.text)
        if field_spec is None:
            if "." in token.text:
                detail = (
                    f"Didn't understand relationship '{token.text.split('.')[0]}' in field "
                    f"path. (The fake models no relationship paths.)"
                )
            else:
                detail = (
                    f"No such column '{token.text}' on entity '{spec.name}'. If you are "
                    "attempting to use a custom field, be sure to append the '__c' after "
                    "the custom field name. Please reference your WSDL or the describe call "
                    "for the appropriate names."
                )
            raise _error_at(self.soql, token.pos, "INVALID_FIELD", detail)
        return field_spec

    def order_by(self, spec: SObjectSpec) -> list[tuple[FieldSpec, bool, bool]]:
        items = []
        while True:
            if self.tok.kind != "ident":
                raise self.fail()
            field_spec = self.field(spec, self.advance())
            descending = False
            if self.tok.is_kw("ASC", "DESC"):
                descending = self.advance().text.upper() == "DESC"
            nulls_last = descending
            if self.tok.is_kw("NULLS"):
                self.advance()
                if not self.tok.is_kw("FIRST", "LAST"):
                    raise self.fail()
                nulls_last = self.advance().text.upper() == "LAST"
            items.append((field_spec, descending, nulls_last))
            if self.tok.text != ",":
                return items
            self.advance()

    def condition(self, spec: SObjectSpec) -> Condition:
        first = self.unary(spec)
        if not self.tok.is_kw("AND", "OR"):
            return first
        op = self.tok.text.upper()
        parts = [first]
        while self.tok.is_kw("AND", "OR"):
            if self.tok.text.upper() != op:
                # SOQL refuses `a AND b OR c`: the grouping must be written out.
                raise self.fail()
            self.advance()
            parts.append(self.unary(spec))
        return Junction(op, tuple(parts))

    def unary(self, spec: SObjectSpec) -> Condition:
        if self.tok.is_kw("NOT"):
            self.advance()
            return Junction("NOT", (self.unary(spec),))
        if self.tok.text == "(":
            self.advance()
            inner = self.condition(spec)
            self.expect_punct(")")
            return inner
        return self.comparison(spec)

    def comparison(self, spec: SObjectSpec) -> Comparison:
        if self.tok.kind != "ident":
            raise self.fail()
        field_spec = self.field(spec, self.advance())
        negate = False
        if self.tok.is_kw("NOT"):
            self.advance()
            negate = True
            if not self.tok.is_kw("IN", "LIKE"):
                raise self.fail()
        if self.tok.is_kw("IN"):
            self.advance()
            self.expect_punct("(")
            values = [self.literal(field_spec)]
            while self.tok.text == ",":
                self.advance()
                values.append(self.literal(field_spec))
            self.expect_punct(")")
            return Comparison(field_spec, "NOT IN" if negate else "IN", tuple(values))
        if self.tok.is_kw("LIKE"):
            self.advance()
            pattern = self.literal(field_spec)
            if pattern.kind != "string":
                raise self.fail()
            return Comparison(field_spec, "NOT LIKE" if negate else "LIKE", (pattern,))
        if self.tok.kind != "op":
            raise self.fail()
        op = self.advance().text
        return Comparison(field_spec, "!=" if op == "<>" else op, (self.literal(field_spec),))

    def literal(self, field_spec: FieldSpec) -> Literal:
        token = self.advance()
        literal = self._read_literal(token)
        self._check_type(field_spec, literal)
        return literal

    def _read_literal(self, token: Token) -> Literal:
        if token.kind == "string":
            return Literal("string", _unescape(token.text[1:-1]), token.pos)
        if token.kind == "datetime":
            return Literal("datetime", parse_datetime(token.text), token.pos)
        if token.kind == "date":
            return Literal("date", date.fromisoformat(token.text), token.pos)
        if token.kind == "number":
            return Literal("number", float(token.text), token.pos)
        if token.is_kw("TRUE", "FALSE"):
            return Literal("boolean", token.text.upper() == "TRUE", token.pos)
        if token.is_kw("NULL"):
            return Literal("null", None, token.pos)
        raise self.fail(token)

    def _check_type(self, field_spec: FieldSpec, literal: Literal) -> None:
        if literal.kind == "null":
            return
        expected = {
            "datetime": "datetime",
            "date": "date",
            "boolean": "boolean",
            "double": "number",
        }.get(field_spec.type, "string")
        if expected == literal.kind:
            if field_spec.type in {"id", "reference"} and normalize_id(literal.value) is None:
                raise _error_at(
                    self.soql,
                    literal.pos,
                    "INVALID_QUERY_FILTER_OPERATOR",
                    f"invalid ID field: {literal.value}",
                )
            return
        type_name = {
            "datetime": "dateTime",
            "date": "date",
            "boolean": "boolean",
            "number": "double",
            "string": "string",
        }[expected]
        quoted = " and should not be enclosed in quotes" if literal.kind == "string" else ""
        raise _error_at(
            self.soql,
            literal.pos,
            "INVALID_FIELD",
            f"value of filter criterion for field '{field_spec.name}' must be of "
            f"type {type_name}{quoted}",
        )


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def parse(soql: str, lookup: Callable[[str], SObjectSpec | None]) -> Query:
    """Parse ``soql`` against the org's schema; raises ApiError as Salesforce would."""
    return _Parser(soql, lookup).parse()


# -- evaluation -----------------------------------------------------------------------


def _comparable(field_spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if field_spec.type in {"id", "reference"}:
        return normalize_id(value) or value
    if isinstance(value, str):
        return value.lower()
    return value


def _like(pattern: str, value: str) -> bool:
    regex = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if char == "%" else "." if char == "_" else re.escape(char)
        i += 1
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def matches(condition: Condition, record: Record) -> bool:
    if isinstance(condition, Comparison):
        return _compare(condition, record)
    if condition.op == "NOT":
        return not matches(condition.parts[0], record)
    results = (matches(part, record) for part in condition.parts)
    return all(results) if condition.op == "AND" else any(results)


def _compare(condition: Comparison, record: Record) -> bool:
    spec = condition.field
    actual = _comparable(spec, record.get(spec.name))
    wanted = [_comparable(spec, lit.value) for lit in condition.values]
    op = condition.op
    if op in {"IN", "NOT IN"}:
        return (actual in wanted) == (op == "IN")
    if op in {"LIKE", "NOT LIKE"}:
        hit = isinstance(actual, str) and _like(str(condition.values[0].value), actual)
        return hit == (op == "LIKE")
    target = wanted[0]
    if op in {"=", "!="}:
        return bool(actual == target) == (op == "=")
    ordered = (
        isinstance(actual, datetime | date | float | str)
        and target is not None
        and type(actual) is type(target)
    )
    return ordered and _ordered(op, actual, target)


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _sort_key(field_spec: FieldSpec) -> Callable[[Record], Any]:
    def key(record: Record) -> Any:
        return _comparable(field_spec, record[field_spec.name])

    return key


def run(query: Query, rows: list[Record]) -> list[Record]:
    """The query's rows, filtered, ordered and limited (not yet projected)."""
    selected = [r for r in rows if query.where is None or matches(query.where, r)]
    for field_spec, descending, nulls_last in reversed(query.order_by):
        present = [r for r in selected if r.get(field_spec.name) is not None]
        missing = [r for r in selected if r.get(field_spec.name) is None]
        present.sort(key=_sort_key(field_spec), reverse=descending)
        selected = present + missing if nulls_last else missing + present
    selected = selected[query.offset :]
    if query.limit is not None:
        selected = selected[: query.limit]
    return selected
