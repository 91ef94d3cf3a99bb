"""Step rendering: placeholders filled, escaped in HTML, never shown raw."""

from __future__ import annotations

from dataclasses import dataclass

from worker.sequences.render import html_to_text, render_template


@dataclass
class Person:
    email: str
    name: str | None
    company: str | None


@dataclass
class Sender:
    email: str


def test_placeholders_are_filled_and_escaped_in_html() -> None:
    dana = Person("dana@acme.test", "Dana <Scully>", "Acme & Co")
    html = render_template(
        "<p>Hi {{ first_name }} at {{company}}</p>", dana, Sender("a@b.c"), html=True
    )
    assert html == "<p>Hi Dana at Acme &amp; Co</p>"
    assert render_template("Hi {{first_name}}", dana, None) == "Hi Dana"


def test_missing_or_unknown_values_never_show_braces() -> None:
    nobody = Person("x@acme.test", None, None)
    assert render_template("Hi {{first_name}}, {{unknown}}!", nobody, None) == "Hi , !"


def test_html_to_text_keeps_paragraphs_and_link_targets() -> None:
    text = html_to_text(
        '<p>Hello</p><p>See <a href="https://x.test/p">pricing</a></p><style>p{color:red}</style>'
    )
    assert text == "Hello\n\nSee pricing (https://x.test/p)\n"
