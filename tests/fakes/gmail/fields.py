"""Google's partial-response `fields` parameter: `a,b/c,d(e,f/g)`.

A request with `fields` gets only the named parts of the answer (Google API
"Performance tips: partial response"); the client pays only for what it names.
"""

from __future__ import annotations

from typing import Any

Spec = dict[str, "Spec | None"]


class FieldsError(ValueError):
    pass


def _merge(into: Spec, name: str, sub: Spec | None) -> None:
    if name in into and into[name] is not None and sub is not None:
        existing = into[name]
        assert existing is not None
        for key, value in sub.items():
            _merge(existing, key, value)
    elif name in into and (into[name] is None or sub is None):
        into[name] = None
    else:
        into[name] = sub


def parse_fields(text: str) -> Spec:
    spec, rest = _parse_list(text.replace(" ", ""), 0)
    if rest != len(text.replace(" ", "")):
        raise FieldsError(f"Invalid field selection {text}")
    return spec


def _parse_list(text: str, pos: int) -> tuple[Spec, int]:
    spec: Spec = {}
    while pos < len(text):
        pos = _parse_item(text, pos, spec)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        break
    return spec, pos


def _parse_item(text: str, pos: int, spec: Spec) -> int:
    start = pos
    while pos < len(text) and text[pos] not in ",()":
        pos += 1
    path = text[start:pos].split("/")
    if not all(path):
        raise FieldsError(f"Invalid field selection {text}")
    sub: Spec | None = None
    if pos < len(text) and text[pos] == "(":
        sub, pos = _parse_list(text, pos + 1)
        if pos >= len(text) or text[pos] != ")":
            raise FieldsError(f"Invalid field selection {text}")
        pos += 1
    for name in reversed(path[1:]):
        sub = {name: sub}
    _merge(spec, path[0], sub)
    return pos


def select(value: Any, spec: Spec | None) -> Any:
    if spec is None:
        return value
    if isinstance(value, list):
        return [select(v, spec) for v in value]
    if isinstance(value, dict):
        return {k: select(value[k], sub) for k, sub in spec.items() if k in value}
    return value
