"""Card JSON for Google Workspace add-ons: the few widgets and answers Sightline uses.

Shapes follow Google's card reference for the HTTP runtime (the JSON schemas
in "Build a Google Workspace add-on using HTTP endpoints"), checked by
tests/fixtures/gmail_card.schema.json:

    trigger answer   {"action": {"navigations": [{"pushCard": CARD}]}}
    action answer    {"renderActions": {"action": {"navigations": [...],
                                                   "notification": {"text": "…"}}}}
    draft insert     {"renderActions": {"hostAppAction": {"gmailAction":
                        {"updateDraftActionMarkup": {"updateBody": {
                            "insertContents": [{"content": HTML, "contentType": "MUTABLE_HTML"}],
                            "type": "IN_PLACE_INSERT"}}}}}}

Cards render Google's "formatted text" (a few HTML tags) in textParagraph and
decoratedText, so every value that came from a person or a mailbox goes
through `plain()` first: a prospect named `<b>Boss</b>` shows as typed.
"""

from __future__ import annotations

from html import escape
from typing import Any

Card = dict[str, Any]
Widget = dict[str, Any]

MAX_TEXT = 400  # characters of one value shown in a card


def plain(value: str | None, limit: int = MAX_TEXT) -> str:
    """A value shown as typed: escaped for Google's formatted text, cut to `limit`."""
    text = (value or "").strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return escape(text, quote=False)


def card(title: str, subtitle: str | None, sections: list[dict[str, Any]], name: str) -> Card:
    header: dict[str, Any] = {"title": plain(title, 100)}
    if subtitle:
        header["subtitle"] = plain(subtitle, 200)
    return {"name": name, "header": header, "sections": sections}


def section(widgets: list[Widget], header: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"widgets": widgets}
    if header:
        found["header"] = plain(header, 200)
    return found


def paragraph(text: str) -> Widget:
    """A paragraph of `text` (already made safe by the caller: `plain()` or our own words)."""
    return {"textParagraph": {"text": text}}


def decorated(
    text: str, *, top: str | None = None, bottom: str | None = None, wrap: bool = True
) -> Widget:
    found: dict[str, Any] = {"text": plain(text), "wrapText": wrap}
    if top:
        found["topLabel"] = plain(top, 120)
    if bottom:
        found["bottomLabel"] = plain(bottom, 200)
    return {"decoratedText": found}


def action(function: str, **parameters: str) -> dict[str, Any]:
    found: dict[str, Any] = {"function": function}
    if parameters:
        found["parameters"] = [{"key": k, "value": v} for k, v in parameters.items()]
    return found


def button(text: str, on_click: dict[str, Any]) -> dict[str, Any]:
    return {"text": text, "onClick": on_click}


def buttons(*items: dict[str, Any]) -> Widget:
    return {"buttonList": {"buttons": list(items)}}


def dropdown(name: str, label: str, items: list[tuple[str, str]]) -> Widget:
    """A drop-down of (value, text) pairs, the first selected."""
    return {
        "selectionInput": {
            "name": name,
            "label": label,
            "type": "DROPDOWN",
            "items": [
                {"text": plain(text, 150), "value": value, "selected": i == 0}
                for i, (value, text) in enumerate(items)
            ],
        }
    }


def switch(name: str, text: str, *, selected: bool = False) -> Widget:
    return {
        "decoratedText": {
            "text": plain(text),
            "switchControl": {
                "name": name,
                "value": "on",
                "selected": selected,
                "controlType": "SWITCH",
            },
        }
    }


def push(card_json: Card) -> dict[str, Any]:
    """What a trigger answers: the card to show."""
    return {"action": {"navigations": [{"pushCard": card_json}]}}


def update(
    card_json: Card, notification: str | None = None, *, pop: bool = False
) -> dict[str, Any]:
    """What an action answers: the card it was pressed on, redrawn (after going back one)."""
    navigations: list[dict[str, Any]] = [{"pop": True}] if pop else []
    navigations.append({"updateCard": card_json})
    found: dict[str, Any] = {"navigations": navigations}
    if notification:
        found["notification"] = {"text": notification[:MAX_TEXT]}
    return {"renderActions": {"action": found}}


def notify(text: str) -> dict[str, Any]:
    """An action's answer that changes no card: a notification alone."""
    return {"renderActions": {"action": {"notification": {"text": text[:MAX_TEXT]}}}}


def insert_into_draft(html: str, notification: str | None = None) -> dict[str, Any]:
    """Insert `html` at the cursor of the draft the compose trigger was opened on."""
    found: dict[str, Any] = {
        "hostAppAction": {
            "gmailAction": {
                "updateDraftActionMarkup": {
                    "updateBody": {
                        "insertContents": [{"content": html, "contentType": "MUTABLE_HTML"}],
                        "type": "IN_PLACE_INSERT",
                    }
                }
            }
        }
    }
    if notification:
        found["action"] = {"notification": {"text": notification[:MAX_TEXT]}}
    return {"renderActions": found}
