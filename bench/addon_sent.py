"""What reading a Sent-folder copy for an add-on's token costs, in milliseconds.

Reproduce: `python -m bench.addon_sent` (or `--runs 50`). Pure CPU, no services:
a sent copy of the usual shape (plain + quoted-printable HTML + a 300 KiB PDF
attachment, our link and pixel at the end of the HTML) read the way IMAP and
Graph copies are (`sent_copy_from_bytes` on the first 512 KiB), then the token
scan with its signature checks (`token_sent_ids`); the same scan on 256 KiB of
text with no token, and on 256 KiB of pasted `/d/…` look-alikes (the worst
case the MAX_TOKENS cap bounds). Prints the mean per call; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable
from email.message import EmailMessage

os.environ.setdefault("SECRET_KEY", "bench-secret-key-bench-secret-key-0123456789")

from core.documents.tokens import link_token
from core.tracking.tokens import open_token
from worker.sync.sent_copy import sent_copy_from_bytes
from worker.sync.sent_mail import token_sent_ids


def sent_copy() -> bytes:
    link = f"https://t.example.com/d/{link_token(41, 7, 12345, 0)}"
    pixel = f"https://t.example.com/o/{open_token(12345, 3, 0, 1_800_000_000)}.gif"
    message = EmailMessage()
    message["From"] = "rep@seller.example"
    message["To"] = "Dana Scully <dana@prospect.example>"
    message["Subject"] = "Pricing"
    message["Message-ID"] = "<abc@mail.gmail.com>"
    message.set_content("Hi Dana,\n" + "the numbers you asked for. " * 200)
    html = "<p>" + "the numbers you asked for. " * 400 + "</p>"
    message.add_alternative(
        f'<html><body>{html}<a href="{link}">pricing.pdf</a><img src="{pixel}"></body></html>',
        subtype="html",
        cte="quoted-printable",
    )
    message.add_attachment(
        os.urandom(300 * 1024), maintype="application", subtype="pdf", filename="terms.pdf"
    )
    return bytes(message)


def cases() -> list[tuple[str, Callable[[], object]]]:
    raw = sent_copy()
    text = sent_copy_from_bytes(raw).text
    plain = "Nothing of ours in this sent message, only words. " * 5000
    lookalikes = "/d/" + "A" * 40 + " " * 1
    pasted = lookalikes * (256 * 1024 // len(lookalikes))
    return [
        (f"sent_copy_from_bytes, {len(raw) // 1024} KiB copy", lambda: sent_copy_from_bytes(raw)),
        ("token_sent_ids, that copy's text (2 tokens)", lambda: token_sent_ids(text, 3)),
        ("token_sent_ids, 256 KiB without a token", lambda: token_sent_ids(plain, 3)),
        ("token_sent_ids, 256 KiB of /d/ look-alikes", lambda: token_sent_ids(pasted, 3)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for label, call in cases():
        seconds = timeit.timeit(call, number=args.runs) / args.runs
        print(f"{label:48s} {seconds * 1000:8.3f} ms")


if __name__ == "__main__":
    main()
