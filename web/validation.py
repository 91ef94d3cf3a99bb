"""Validation errors in the product's words: what the API, the forms and the pages say.

pydantic words its errors for programmers ("Input should be a valid integer,
unable to parse string as an integer", "Value error, …", "Field required"). Every
place that shows one goes through `field_messages`, which says the same thing
the way a salesperson reads it ("must be a whole number", "is required"): the
API's `fields`, the IMAP form, the Exchange form. A form that labels its fields
passes `labels` and gets sentences ("IMAP port must be a whole number.").

Must never: echo the rejected value (it may be a password), or drop an error
(an error type not named here keeps pydantic's message, minus its prefix).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

_WHOLE_NUMBER = "must be a whole number"
# pydantic's error type → our predicate; `{name}` is filled from the error's context.
_PREDICATES = {
    "missing": "is required",
    "int_parsing": _WHOLE_NUMBER,
    "int_type": _WHOLE_NUMBER,
    "int_from_float": _WHOLE_NUMBER,
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "string_too_long": "must be at most {max_length} characters",
    "too_long": "must have at most {max_length} items",
    "too_short": "must have at least {min_length} items",
    "datetime_parsing": "must be a date and time (ISO 8601, e.g. 2026-12-06T09:30:00Z)",
    "datetime_type": "must be a date and time (ISO 8601, e.g. 2026-12-06T09:30:00Z)",
    "datetime_from_date_parsing": "must be a date and time (ISO 8601, e.g. 2026-12-06T09:30:00Z)",
    "date_parsing": "must be a date (e.g. 2026-12-06)",
    "extra_forbidden": "is not a field we know (check its spelling)",
    "json_invalid": "is not valid JSON",
}


def _expected(error: ErrorDetails) -> str:
    """A literal's choices as pydantic lists them ("'tls', 'starttls' or 'none'")."""
    return str((error.get("ctx") or {}).get("expected", "one of the listed values"))


def predicate(error: ErrorDetails) -> str:
    """What is wrong with the field, as the end of a sentence about it ("must be …")."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "string_too_short":
        minimum = int(ctx.get("min_length") or 1)
        return "is required" if minimum <= 1 else f"must be at least {minimum} characters"
    if kind == "literal_error":
        return f"must be {_expected(error)}"
    if kind == "value_error":
        # Our own validators' words, after pydantic's prefix.
        return str(error["msg"]).removeprefix("Value error, ")
    template = _PREDICATES.get(kind)
    if template is None:
        return str(error["msg"]).removeprefix("Value error, ")
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return template.split(" {", 1)[0]


def field_messages(exc: ValidationError) -> dict[str, str]:
    """Dotted field name → what is wrong with it, first error per field.

    A cross-field check (a model validator) names its field at the start of its
    message ("password: username and password are required …"): that name is
    used, so the error lands on the field it is about, not on the whole body.
    """
    fields: dict[str, str] = {}
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = predicate(error)
        if not location and ": " in message:
            location, _, message = message.partition(": ")
        fields.setdefault(location or "(body)", message)
    return fields


def _is_predicate(message: str) -> bool:
    return message.startswith(("is ", "must ", "has ", "cannot "))


def sentence(label: str, message: str) -> str:
    """One sentence about a labelled field: "IMAP port must be a whole number."."""
    text = f"{label} {message}" if _is_predicate(message) else f"{label}: {message}"
    return text.rstrip(".") + "."


def labelled_messages(exc: ValidationError, labels: Mapping[str, str]) -> dict[str, str]:
    """Like `field_messages`, each message a sentence naming the field by its label."""
    return {
        name: sentence(labels.get(name, name), message)
        for name, message in field_messages(exc).items()
    }
