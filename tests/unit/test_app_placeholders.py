"""Placeholders, fallbacks and the missing-value rule; the HTML allow-list (core.templates)."""

from __future__ import annotations

from dataclasses import dataclass

from core.templates import (
    plain_to_html,
    render,
    render_all,
    sanitize_html,
    unknown_placeholders,
    used_placeholders,
    values_for,
)


@dataclass
class Person:
    email: str
    name: str | None
    company: str | None


DANA = values_for(Person("dana@acme.test", "Dana  Scully", None), sender_email="rep@s.test")


def test_values_and_fallbacks() -> None:
    out = render(
        "Hi {{first_name}} {{ last_name }} at {{company|your team}} from {{sender_email}}", DANA
    )
    assert out.text == "Hi Dana Scully at your team from rep@s.test"
    assert out.missing == () and out.unknown == ()
    assert render("{{company|}}x", DANA).text == "x"  # an explicit empty fallback


def test_a_missing_value_blocks_and_is_never_sent_raw() -> None:
    out = render("Hi {{first_name}} at {{company}}", DANA)
    assert out.text == "Hi Dana at " and "{{" not in out.text
    assert out.missing == ("company",)
    shown = render("<p>{{company}}</p>", DANA, html_mode=True, preview=True)
    assert shown.text == '<p><mark class="missing-value">[company missing]</mark></p>'
    assert render("Re: {{company}}", DANA, preview=True).text == "Re: [company missing]"


def test_anything_else_in_braces_is_unknown_and_blocks() -> None:
    assert unknown_placeholders("Hi {{frist_name}} and {{ first name }}") == [
        "{{frist_name}}",
        "{{ first name }}",
    ]
    # The editor may split a placeholder with tags: it is still one placeholder.
    assert render("<p>{{<b>first</b>_name}}</p>", DANA, html_mode=True).text == "<p>Dana</p>"
    texts, blocked = render_all([("{{nope}}", False), ("<p>{{company}}</p>", True)], DANA)
    assert texts == ["", "<p></p>"]
    assert blocked == ("{{nope}}", "company")


def test_values_are_escaped_in_html_and_fallbacks_unescaped_once() -> None:
    evil = values_for(Person("x@acme.test", "<b>Eve</b>", 'A & "B"'), sender_email=None)
    out = render(
        "<p>{{first_name}} {{company}} {{sender_email|A &amp; B}}</p>", evil, html_mode=True
    )
    assert out.text == "<p>&lt;b&gt;Eve&lt;/b&gt; A &amp; &quot;B&quot; A &amp; B</p>"


def test_used_placeholders_say_which_have_a_fallback() -> None:
    assert used_placeholders("{{first_name|there}} {{company}} {{first_name|there}}") == [
        ("first_name", True),
        ("company", False),
    ]


def test_the_allow_list_keeps_formatting_and_drops_everything_active() -> None:
    dirty = (
        '<p style="color:red" onclick="x()">Hi <b>there</b> <a href="https://a.test/?e={{email}}" '
        'target="_blank">link</a> <a href="javascript:alert(1)">bad</a></p>'
        "<script>alert(1)</script>"
        '<img src="https://a.test/i.png" onerror="x()"><iframe src="https://a.test"></iframe>'
        "<!-- note --><ul><li>one</li></ul>"
    )
    clean = sanitize_html(dirty)
    assert clean == (
        '<p>Hi <b>there</b> <a href="https://a.test/?e={{email}}">link</a> <a>bad</a></p>'
        '<img src="https://a.test/i.png"><ul><li>one</li></ul>'
    )


def test_plain_text_becomes_paragraphs() -> None:
    assert plain_to_html("Hi {{first_name}},\n\nA & B\nnext") == (
        "<p>Hi {{first_name}},</p><p>A &amp; B<br>next</p>"
    )
    assert plain_to_html("<p>already</p>") == "<p>already</p>"
    assert plain_to_html("Hi <b>there</b>&nbsp;you") == "Hi <b>there</b>&nbsp;you"
