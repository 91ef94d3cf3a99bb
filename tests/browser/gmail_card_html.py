"""Card JSON drawn as HTML, for the Gmail add-on's screenshots only.

Gmail draws an add-on's cards in its side panel; there is no public renderer,
so this draws the widgets Sightline sends (header, sections, textParagraph,
decoratedText with switchControl, buttonList, selectionInput) in the panel's
shape: 320 px wide, Google's font stack, its greys. Text values are Google's
"formatted text", already escaped by the add-on (web.addons.gmail.cards.plain),
so they are inserted as they come. A widget this does not know is drawn as a
red box, so a screenshot never hides one.
"""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body { margin: 0; background: #f1f3f4; font: 14px/20px Roboto, Arial, sans-serif; color: #202124; }
.panel { width: 320px; min-height: 480px; background: #fff; border-left: 1px solid #dadce0; }
.header { padding: 16px; border-bottom: 1px solid #e0e0e0; display: flex; gap: 12px; }
.header img { width: 24px; height: 24px; }
.title { font-size: 16px; font-weight: 500; }
.subtitle, .label { color: #5f6368; font-size: 12px; line-height: 16px; }
.section { padding: 8px 16px 12px; border-bottom: 1px solid #e0e0e0; }
.section-header { font-weight: 500; color: #1a73e8; font-size: 13px; margin: 8px 0 4px; }
.widget { margin: 8px 0; }
.buttons { display: flex; flex-wrap: wrap; gap: 8px; }
.button { border: 1px solid #dadce0; border-radius: 4px; padding: 6px 12px; color: #1a73e8;
          font-weight: 500; background: #fff; }
.switch { display: flex; justify-content: space-between; align-items: center; }
.toggle { width: 32px; height: 14px; border-radius: 7px; background: #bdc1c6; position: relative; }
.toggle.on { background: #8ab4f8; }
.toggle::after { content: ""; position: absolute; top: -3px; left: -2px; width: 20px; height: 20px;
                 border-radius: 50%; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.4); }
.toggle.on::after { left: 14px; background: #1a73e8; }
select { width: 100%; padding: 6px; border: 1px solid #dadce0; border-radius: 4px; font: inherit; }
.unknown { border: 2px solid #d93025; color: #d93025; padding: 4px; }
.notification { margin: 12px 16px; padding: 10px 14px; background: #323232; color: #fff;
                border-radius: 4px; }
"""


def _widget(widget: dict[str, Any]) -> str:
    if "textParagraph" in widget:
        return f'<div class="widget">{widget["textParagraph"]["text"]}</div>'
    if "decoratedText" in widget:
        d = widget["decoratedText"]
        top = f'<div class="label">{d["topLabel"]}</div>' if d.get("topLabel") else ""
        bottom = f'<div class="label">{d["bottomLabel"]}</div>' if d.get("bottomLabel") else ""
        body = f"<div>{d['text']}</div>"
        if "switchControl" in d:
            on = " on" if d["switchControl"].get("selected") else ""
            body = f'<div class="switch">{body}<span class="toggle{on}"></span></div>'
        return f'<div class="widget">{top}{body}{bottom}</div>'
    if "buttonList" in widget:
        buttons = "".join(
            f'<span class="button">{escape(b["text"])}</span>'
            for b in widget["buttonList"]["buttons"]
        )
        return f'<div class="widget buttons">{buttons}</div>'
    if "selectionInput" in widget:
        s = widget["selectionInput"]
        options = "".join(
            f"<option{' selected' if i.get('selected') else ''}>{i['text']}</option>"
            for i in s["items"]
        )
        label = f'<div class="label">{escape(s.get("label", ""))}</div>'
        return f'<div class="widget">{label}<select>{options}</select></div>'
    return f'<div class="widget unknown">{escape(str(list(widget)))}</div>'


def card_html(card: dict[str, Any], *, logo_url: str = "", notification: str = "") -> str:
    header = card.get("header", {})
    subtitle = f'<div class="subtitle">{header["subtitle"]}</div>' if header.get("subtitle") else ""
    logo = f'<img src="{escape(logo_url)}" alt="">' if logo_url else ""
    sections = []
    for section in card["sections"]:
        title = (
            f'<div class="section-header">{section["header"]}</div>'
            if section.get("header")
            else ""
        )
        sections.append(
            f'<div class="section">{title}{"".join(_widget(w) for w in section["widgets"])}</div>'
        )
    toast = f'<div class="notification">{escape(notification)}</div>' if notification else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLE}</style></head>"
        f'<body><div class="panel"><div class="header">{logo}<div>'
        f'<div class="title">{header.get("title", "")}</div>{subtitle}</div></div>'
        f"{''.join(sections)}{toast}</div></body></html>"
    )
