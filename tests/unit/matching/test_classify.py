"""classify_message and its command line, on our fixtures and the shared corpus."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.matching.classify import classify_message
from worker.matching.dsn import best_status
from worker.matching.reasons import is_hard, reason_for, reason_for_category
from worker.matching.replytext import is_unsubscribe_request, new_text
from worker.matching.return_dates import return_date

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "mail"
CORPUS = REPO.parent / "shared" / "corpus" / "bounces"
FIXTURE_LABELS = json.loads((FIXTURES / "labels.json").read_text(encoding="utf-8"))


def _corpus_or_skip() -> Path:
    if not (CORPUS / "labels.json").is_file():
        pytest.skip(f"shared bounce corpus not found at {CORPUS} (it lives beside the repo)")
    return CORPUS


@pytest.mark.parametrize("name", sorted(FIXTURE_LABELS))
def test_fixture_classification(name):
    expected = dict(FIXTURE_LABELS[name])
    unsubscribe = expected.pop("unsubscribe_request")
    delayed = expected.pop("delayed")
    result = classify_message((FIXTURES / name).read_bytes())
    got = result.as_json(name)
    assert got.pop("path") == name
    assert got == expected
    assert result.unsubscribe_request is unsubscribe
    assert result.delayed is delayed


def test_every_fixture_is_labelled():
    files = {p.name for p in FIXTURES.glob("*.eml")}
    assert files == set(FIXTURE_LABELS)


def test_fixtures_cover_ten_languages_of_out_of_office():
    ooo = [n for n, label in FIXTURE_LABELS.items() if label["kind"] == "auto_reply"]
    languages = {n.removesuffix(".eml").split("-")[2] for n in ooo}
    assert len(languages) >= 10, languages


def _bench():
    spec = importlib.util.spec_from_file_location(
        "classify_accuracy", REPO / "bench" / "classify_accuracy.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while loading
    spec.loader.exec_module(module)
    return module


def test_shared_corpus_accuracy_meets_the_bars():
    corpus = _corpus_or_skip()
    scores = _bench().score(corpus)
    # Delay notices are bounces whose recipients are all soft and "delayed":
    # the sequence engine records them and halts nothing.
    assert scores.delay_notices > 0
    assert scores.delays_flagged == scores.delay_notices
    assert scores.kind_accuracy("bounce") >= 0.98
    assert scores.status_accuracy >= 0.90
    assert scores.hard_accuracy >= 0.90
    assert scores.kind_accuracy("complaint") >= 0.90
    assert scores.kind_accuracy("auto_reply") >= 0.90


def test_human_replies_from_every_client_come_out_reply():
    replies = [n for n, label in FIXTURE_LABELS.items() if n.startswith("reply-")]
    assert len(replies) >= 20
    kinds = {n: classify_message((FIXTURES / n).read_bytes()).kind for n in replies}
    assert {n: k for n, k in kinds.items() if k != "reply"} == {}


def test_bounce_refers_to_the_original_message_in_the_corpus():
    corpus = _corpus_or_skip()
    labels = json.loads((corpus / "labels.json").read_text())
    bounces = [n for n, label in labels.items() if label["kind"] == "bounce"]
    with_ids = [n for n in bounces if classify_message((corpus / n).read_bytes()).refers_to]
    # Most reports carry the original's headers; some MTAs and carriers send none
    # (34 of the 289 training files have no Message-ID of the original at all).
    assert len(with_ids) / len(bounces) >= 0.85


READ_KINDS = ("reply", "auto_reply", "bounce", "complaint", "other")


def _read_without_last_resort(raw: bytes) -> None:
    """Classify ``raw`` and fail if it needed the last resort.

    classify_message catches the errors hostile bytes can raise in the parsers
    and answers ``quarantined`` ("classification failed: ..."); anything else
    propagates. With no time budget, ``quarantined`` can only mean that catch
    was needed: a reader broke on this input.
    """
    result = classify_message(raw, budget=None)
    assert result.kind in READ_KINDS, f"{result.reason} on {raw[:300]!r}"
    json.dumps(result.as_json("x"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_classify_reads_arbitrary_bytes_without_its_last_resort(raw):
    _read_without_last_resort(raw)


def _samples() -> list[bytes]:
    paths = sorted(FIXTURES.glob("*.eml"))
    if (CORPUS / "labels.json").is_file():
        paths += sorted(CORPUS.glob("*.eml"))[::7]
    return [p.read_bytes() for p in paths]


SAMPLES = _samples()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(["flip", "cut", "insert", "dup"])),
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_classify_reads_mutated_messages_without_its_last_resort(
    raw, mutations, rnd: random.Random
):
    data = bytearray(raw)
    for where, how in mutations:
        if not data:
            break
        i = int(where * (len(data) - 1))
        if how == "flip":
            data[i] = rnd.randrange(256)
        elif how == "cut":
            del data[i:]
        elif how == "insert":
            data[i:i] = rnd.choice([b"\r\n", b"\n--", b"=?utf-8?b?", b"<", b"\x00", b"\xff\xfe"])
        else:
            data[i:i] = data[i : i + 200]
    _read_without_last_resort(bytes(data))


def test_cli_prints_one_line_per_file_and_carries_on(tmp_path):
    good = FIXTURES / "ooo-exchange-en.eml"
    missing = tmp_path / "missing.eml"
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(b"\x00\xff" * 100)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.matching",
            "classify",
            str(good),
            str(missing),
            str(tmp_path),
            str(garbage),
        ],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert [line["path"] for line in lines] == [
        str(good),
        str(missing),
        str(tmp_path),
        str(garbage),
    ]
    assert lines[0]["kind"] == "auto_reply"
    assert lines[0]["auto_reply"] == {"until": "2027-03-15"}
    assert [line["kind"] for line in lines[1:3]] == ["other", "other"]
    for line in lines:
        assert list(line) == ["path", "kind", "refers_to", "bounce", "auto_reply", "text"]


def test_cli_lines_survive_any_file_name_and_text(tmp_path):
    # A name that is not UTF-8 (the OS hands it over as lone surrogates) and a
    # reply holding line/paragraph separators: still one ASCII JSON line each.
    odd = os.path.join(os.fsencode(tmp_path), b"reply-\xff.eml")
    with open(odd, "wb") as handle:
        handle.write(
            b"From: Dana <dana@acme.test>\r\nSubject: Re: Hi\r\n"
            b"In-Reply-To: <s.1@seller.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + "Yes\u2028Tuesday\u2029works\u0085ok\r\n".encode()
        )
    proc = subprocess.run(
        [sys.executable, "-m", "worker.matching", "classify", odd, odd],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode("ascii")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["path"] for line in lines] == [os.fsdecode(odd)] * 2
    assert lines[0]["kind"] == "reply"
    assert "Tuesday\u2029works" in lines[0]["text"]


def test_cli_without_files_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", "worker.matching", "classify"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2


@pytest.mark.parametrize(
    ("text", "sent", "expected"),
    [
        ("I am back on Monday 15 March.", dt.date(2027, 3, 2), dt.date(2027, 3, 15)),
        ("Out of office until 14/03/2027", dt.date(2027, 3, 2), dt.date(2027, 3, 14)),
        ("Ich bin ab dem 03.03.2027 wieder zurück.", dt.date(2027, 3, 1), dt.date(2027, 3, 3)),
        ("Je serai de retour le 3 mars.", dt.date(2027, 3, 1), dt.date(2027, 3, 3)),
        ("Ik ben terug op 3 maart.", dt.date(2027, 2, 20), dt.date(2027, 3, 3)),
        ("Estaré de vuelta el 3 de marzo de 2027.", dt.date(2027, 2, 20), dt.date(2027, 3, 3)),
        ("I'm away until March 3rd.", dt.date(2027, 12, 20), dt.date(2028, 3, 3)),
        ("Back 2027-03-03, meeting at 10.30", dt.date(2027, 3, 1), dt.date(2027, 3, 3)),
        ("3月11日より対応いたします", dt.date(2027, 3, 2), dt.date(2027, 3, 11)),
        ("OOO: back Monday", dt.date(2027, 3, 2), dt.date(2027, 3, 8)),
        ("Ich bin ab Montag wieder da.", dt.date(2027, 3, 2), dt.date(2027, 3, 8)),
        ("De retour mardi.", dt.date(2027, 3, 2), dt.date(2027, 3, 9)),
        ("I am out of the office.", dt.date(2027, 3, 2), None),
        ("Back on 31 February.", dt.date(2027, 3, 2), None),
    ],
)
def test_return_date(text, sent, expected):
    assert return_date(text, sent) == expected


def test_new_text_strips_outlook_header_block_and_signature():
    body = (
        "Works for me.\n\n-- \nDana\nContoso\n\n"
        "From: Anna <anna@x.example>\nSent: Monday\nTo: Dana\nSubject: Hi\n\nOld text"
    )
    assert new_text(body) == "Works for me."


def test_new_text_keeps_a_line_that_merely_mentions_writing():
    assert (
        new_text("On reflection, I wrote: yes.\nThanks") == "On reflection, I wrote: yes.\nThanks"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Please unsubscribe me.", True),
        ("Bitte keine weiteren E-Mails.", True),
        ("Merci de me désinscrire.", True),
        ("Graag uitschrijven.", True),
        ("Sounds good, talk Friday.", False),
    ],
)
def test_unsubscribe_request(text, expected):
    assert is_unsubscribe_request(text) is expected


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (("550 5.1.1 <a@b.example>... User unknown",), "5.1.1"),
        (("554 4.4.7 Message expired <421 4.4.2 Connection timed out>",), "4.4.2"),
        (("host 192.0.2.5.1.1 said no",), ""),
        (("5.0.0", "said: 550 5.7.1 blocked"), "5.7.1"),
        (("", "said: 550 5.7.1 blocked"), "5.7.1"),
    ],
)
def test_best_status(texts, expected):
    assert best_status(*texts) == expected


@pytest.mark.parametrize(
    ("text", "status", "reason", "hard"),
    [
        ("550 5.1.1 User unknown", "5.1.1", "userunknown", True),
        ("552 5.2.2 Mailbox full", "5.2.2", "mailboxfull", False),
        ("Host or domain name not found", "5.1.2", "hostunknown", True),
        ("550 Host does not accept mail (null MX)", "5.7.27", "notaccept", True),
        ("451 domain does not accept mail", "4.0.0", "notaccept", False),
        ("550 Unknown user (in reply to end of DATA command)", "5.0.0", "filtered", False),
        (
            "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
            "5.7.1",
            "blocked",
            False,
        ),
        # A transient "host not found" is a DNS lookup that failed this time.
        (
            "Deferred: Name server: example.jp.: host name lookup failure",
            "4.4.7",
            "networkerror",
            False,
        ),
        # X.1.6 says the mailbox moved, whatever words the server chose.
        ("551 not our user", "5.1.6", "hasmoved", True),
        # A remote server's "user unknown" with nothing saying it answered RCPT
        # may be a content filter speaking (sisimai: filtered) ...
        ("550 kijitora@example.com... No such user", "5.0.0", "filtered", False),
        # ... but not when the report says it was the recipient that was refused,
        (
            "550 <a@b.example>: User unknown (in reply to RCPT TO command)",
            "5.0.0",
            "userunknown",
            True,
        ),
        # or the status code is an addressing one (X.1.*), or no server was quoted.
        ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found", "5.1.10", "userunknown", True),
        ("Sorry, no mailbox here by that name.", "", "userunknown", True),
        ("an MX or SRV record indicated no SMTP service", "", "notaccept", True),
        (
            "550 5.2.0 <s@x.example> From: Domain is invalid. Please provide a valid From:",
            "5.2.0",
            "rejected",
            False,
        ),
        (
            "mailbox here by that name. (#5.1.1) --- Enclosed is a copy",
            "5.1.1",
            "userunknown",
            True,
        ),
    ],
)
def test_reason_and_hardness(text, status, reason, hard):
    assert reason_for(text, status) == reason
    assert is_hard(reason, status) is hard


@pytest.mark.parametrize(
    "body",
    [
        "x" * 300_000,  # one huge line of address-like characters
        "a." * 150_000,
        "a@" * 150_000,
        "> quoted\r\n" * 50_000,
    ],
)
def test_pathological_bounce_bodies_are_read(body):
    # Before the address pattern was bounded these took minutes (quadratic
    # backtracking); pytest-timeout turns a regression into a failure.
    raw = f"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\n\r\nerror\r\n{body}\r\n"
    assert classify_message(raw.encode()).kind == "bounce"


def test_an_mta_s_own_bounce_category_wins():
    assert reason_for_category("bad-mailbox") == "userunknown"
    assert reason_for_category("Quota-Issues") == "mailboxfull"
    assert reason_for_category("other") is None


def test_a_delay_notice_is_a_soft_bounce_marked_delayed():
    result = classify_message((FIXTURES / "delay-notice-postfix.eml").read_bytes())
    assert result.kind == "bounce"
    assert result.delayed is True
    assert [(r.address, r.status, r.hard, r.delayed) for r in result.bounce_recipients] == [
        ("tom@slow.example.net", "4.4.1", False, True)
    ]


MIXED_REPORT = b"""From: MAILER-DAEMON@mx.sightline.example
To: anna.sales@sightline.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Delivery to some recipients failed; others are still being tried.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sightline.example

Final-Recipient: rfc822; gone@contoso.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@contoso.example>: Recipient address rejected: User unknown

Final-Recipient: rfc822; slow@fabrikam.example
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; connect to mx.fabrikam.example: Connection timed out

--b
Content-Type: text/rfc822-headers

Message-ID: <sl.1@mail.sightline.example>

--b--
"""


def test_a_mixed_report_lists_failed_and_delayed_recipients_in_order():
    result = classify_message(MIXED_REPORT)
    assert result.kind == "bounce"
    assert result.delayed is False
    assert result.refers_to[0] == "<sl.1@mail.sightline.example>"
    assert [(r.address, r.hard, r.delayed) for r in result.bounce_recipients] == [
        ("gone@contoso.example", True, False),
        ("slow@fabrikam.example", False, True),
    ]
