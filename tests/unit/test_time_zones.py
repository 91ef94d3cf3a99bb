"""A prospect's zone from what we know: strict names, addresses, phones, domains."""

from __future__ import annotations

import pytest

from core.zones.inference import describe, from_domain, from_phone, infer
from core.zones.names import ZoneError, check_zone


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("Europe/Berlin", "Europe/Berlin"), (" europe/berlin ", "Europe/Berlin"), ("UTC", "UTC")],
)
def test_iana_names_are_accepted_in_their_canonical_case(given: str, canonical: str) -> None:
    assert check_zone(given) == canonical


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("CET", "not an abbreviation"),
        ("+02:00", "unknown time zone"),
        ("Etc/GMT-2", "unknown time zone"),
        ("Europe/Atlantis", "unknown time zone"),
        ("../../etc/passwd", "unknown time zone"),
        ("", "empty"),
        ("A" * 65, "too long"),
    ],
)
def test_anything_else_is_refused_with_what_would_do(given: str, words: str) -> None:
    with pytest.raises(ZoneError, match=words):
        check_zone(given)


def test_the_state_decides_in_a_country_with_several_zones() -> None:
    guess = infer(email="x@acme.com", country="USA", state="TX", city="Austin")
    assert guess is not None
    assert (guess.zone, guess.source) == ("America/Chicago", "salesforce")
    assert guess.note == "Salesforce address: Austin, TX, US"
    assert infer(email="x@a.com", country="Canada", state="British Columbia").zone == (  # type: ignore[union-attr]
        "America/Vancouver"
    )
    assert infer(email="x@a.com", country="Brasil", state="AM").zone == "America/Manaus"  # type: ignore[union-attr]
    assert infer(email="x@a.com", country="Australia", state="WA").zone == "Australia/Perth"  # type: ignore[union-attr]
    assert infer(email="x@a.com", country="Mexico", state="Sonora").zone == "America/Hermosillo"  # type: ignore[union-attr]
    assert infer(email="x@a.com", country="Russia", state="Novosibirsk Oblast").zone == (  # type: ignore[union-attr]
        "Asia/Novosibirsk"
    )


def test_a_country_alone_with_several_zones_is_said_to_be_guessed() -> None:
    guess = infer(email="x@acme.com", country="United States")
    assert guess is not None and guess.zone == "America/New_York"
    assert guess.note.endswith("(guessed)")
    one_zone = infer(email="x@acme.com", country="Deutschland")
    assert one_zone is not None and one_zone.zone == "Europe/Berlin"
    assert "guessed" not in one_zone.note


def test_an_address_beats_a_phone_beats_the_domain() -> None:
    both = infer(email="x@acme.de", phone="+33 1 42 68 53 00", country="Japan")
    assert both is not None and (both.zone, both.source) == ("Asia/Tokyo", "salesforce")
    phone = infer(email="x@acme.de", phone="+33 1 42 68 53 00")
    assert phone is not None and (phone.zone, phone.source) == ("Europe/Paris", "phone")
    domain = infer(email="x@acme.de", phone="030 1234567")  # a national number says nothing
    assert domain is not None and (domain.zone, domain.source) == ("Europe/Berlin", "domain")


@pytest.mark.parametrize(
    ("phone", "zone"),
    [
        ("+49 (30) 1234-567", "Europe/Berlin"),
        ("0044 20 7946 0000", "Europe/London"),
        ("+353 1 555 0100", "Europe/Dublin"),
        ("+1 512 555 0100", "America/New_York"),
    ],
)
def test_phone_country_codes(phone: str, zone: str) -> None:
    guess = from_phone(phone)
    assert guess is not None and guess.zone == zone


@pytest.mark.parametrize("email", ["x@acme.com", "x@acme.io", "x@acme.ai", "x@acme.co", "x@a.zz"])
def test_generic_domains_say_nothing(email: str) -> None:
    assert from_domain(email) is None


def test_country_domains() -> None:
    assert from_domain("x@acme.co.uk") is not None
    assert from_domain("x@acme.co.uk").zone == "Europe/London"  # type: ignore[union-attr]
    assert from_domain("x@firma.de").note == "the email domain .de"  # type: ignore[union-attr]


def test_what_the_pages_show() -> None:
    guess = from_domain("x@firma.de")
    assert guess is not None
    assert describe(guess.zone, guess.source, guess.note, "UTC") == (
        "Europe/Berlin — from the email domain .de"
    )
    assert describe("Asia/Tokyo", "set", None, "UTC") == "Asia/Tokyo — set by hand"
    assert describe(None, None, None, "America/Chicago") == (
        "America/Chicago — the sequence's default"
    )
