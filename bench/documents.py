"""Trackable attachments: pages rendered per second, and the first page painted in Chromium.

Reproduce: `make bench-documents` (or `python -m bench.documents --pages 50 --loads 15`).

Makes a PDF of `--pages` pages (text, a drawn chart, an embedded photo-like
image on each) and measures, on a temporary PostgreSQL database:

1. PyMuPDF alone: open the file and render every page once at 1600 px wide in
   this process, nothing else (the floor any pipeline starts from);
2. PyMuPDF + Pillow doing our per-page work in one process: three renderings
   (1600, 800, 200 px) encoded as JPEG, plus the text; nothing stored;
3. the pipeline end to end: `process_document` as the `documents` job runs it —
   the sandboxed child (start-up included), inspection, rendering in
   SIGHTLINE_DOCUMENT_RENDER_PROCESSES processes, every image and row stored in
   PostgreSQL, progress updates;
4. the viewer: the Procfile's `web` process serves a recipient's link; headless
   Chromium loads it `--loads` times and
   reports when page 1's image was painted (Element Timing `renderTime`, from
   navigation start): in one running browser with its HTTP cache off (as a
   recipient's browser is: running, this document never seen), and from a new
   browser context each time (which also starts a renderer process).

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PAINT_JS = """() => new Promise(resolve => {
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) {
      if (entry.identifier === "first-page") resolve(entry.renderTime || entry.loadTime);
    }
  }).observe({type: "element", buffered: true});
})"""


def bench_pdf(pages: int) -> bytes:
    import pymupdf

    photo = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 600, 400), False)
    samples = bytearray(600 * 400 * 3)
    for y in range(400):
        for x in range(600):
            i = (y * 600 + x) * 3
            samples[i : i + 3] = bytes(((x * 7 + y) % 256, (y * 3) % 256, (x ^ y) % 256))
    photo = pymupdf.Pixmap(pymupdf.csRGB, 600, 400, bytes(samples), False)
    image = photo.tobytes("jpeg")
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page()
        page.insert_text((56, 70), f"Quarterly review — page {number}", fontsize=22)
        for line in range(18):
            page.insert_text(
                (56, 110 + line * 14),
                "Revenue grew in every region while churn fell; the pipeline for next "
                "quarter is the largest we have had.",
                fontsize=9,
            )
        for bar in range(8):
            height = 20 + (bar * 37 + number * 13) % 120
            page.draw_rect(
                pymupdf.Rect(60 + bar * 30, 520 - height, 80 + bar * 30, 520),
                color=None,
                fill=(0.12, 0.37, 0.75),
            )
        page.insert_image(pymupdf.Rect(320, 380, 540, 527), stream=image)
    data: bytes = doc.tobytes(garbage=3, deflate=True)
    return data


def pymupdf_alone(data: bytes) -> float:
    import pymupdf

    started = time.perf_counter()
    doc = pymupdf.open(stream=data, filetype="pdf")
    for number in range(doc.page_count):
        page = doc[number]
        zoom = 1600 / page.rect.width
        page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    return float(doc.page_count) / (time.perf_counter() - started)


def same_work_one_process(data: bytes, folder: Path) -> float:
    from worker.documents import sandbox

    pymupdf = sandbox._pymupdf()
    started = time.perf_counter()
    doc = pymupdf.open(stream=data, filetype="pdf")
    for number in range(1, doc.page_count + 1):
        sandbox.render_page(doc, number, folder)
    return float(doc.page_count) / (time.perf_counter() - started)


def pipeline(data: bytes) -> tuple[float, float]:
    from core.db import session_scope
    from core.documents.storage import get_blob_store
    from core.models import Document, Team
    from worker.documents.pipeline import process_document

    with session_scope() as session:
        team = session.query(Team).filter_by(name="Bench").one_or_none()
        if team is None:
            team = Team(name="Bench", plan="team")
            session.add(team)
            session.flush()
        document = Document(
            team_id=team.id,
            name="review.pdf",
            kind="pdf",
            content_type="application/pdf",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        session.add(document)
        session.flush()
        get_blob_store().put(session, document.id, "original", data)
        document_id = document.id
    started = time.perf_counter()
    outcome = process_document(document_id)
    elapsed = time.perf_counter() - started
    if outcome.status != "ready":
        raise SystemExit(f"the pipeline failed: {outcome}")
    return outcome.pages / elapsed, elapsed


def link_for_last_document() -> str:
    from core.crypto import encrypt_json
    from core.db import session_scope
    from core.documents.tokens import link_token
    from core.models import Document, Mailbox, SendStatus, Sequence, SequenceStep, Team, utcnow
    from worker.documents.outgoing import ensure_link
    from worker.sequences import claiming, enrolling

    hour_ago = utcnow() - timedelta(hours=1)
    with session_scope() as session:
        team = session.query(Team).filter_by(name="Bench").one()
        document = session.query(Document).order_by(Document.id.desc()).first()
        assert document is not None
        mailbox = Mailbox(
            team_id=team.id,
            kind="imap",
            email="rep@bench.test",
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Bench")
        sequence.steps = [SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="x")]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session, sequence=sequence, email="dana@prospect.test", name="Dana", now=hour_ago
        )
        sent = claiming.claim_due_step(session, enrollment.id, utcnow())
        assert sent is not None
        sent.status, sent.sent_at = SendStatus.SENT, hour_ago
        link = ensure_link(session, document, sent, 0, tracked=True)
        return link_token(link.id, document.id, sent.id, 0)


def first_paint(base: str, token: str, loads: int) -> tuple[list[float], list[float]]:
    """Page 1 painted, ms from navigation start: (running browser, no cache; new contexts)."""
    from playwright.sync_api import sync_playwright

    flags = [
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ]
    warm: list[float] = []
    fresh: list[float] = []
    url = f"{base}/d/{token}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        # A browser already running, as a recipient's is: HTTP cache off, so every
        # load fetches the page and its images again.
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        page.goto(f"{base}/healthz")
        for _ in range(loads):
            page.goto(url, wait_until="commit")
            warm.append(float(page.evaluate(PAINT_JS)))
            page.goto("about:blank")
        context.close()
        # A new browser context each time: also pays for a renderer process.
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(url, wait_until="commit")
            fresh.append(float(page.evaluate(PAINT_JS)))
            context.close()
        browser.close()
    return warm, fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each rendering measure")
    parser.add_argument("--loads", type=int, default=15, help="viewer loads in Chromium")
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was

    import requests
    from alembic import command
    from alembic.config import Config
    from cryptography.fernet import Fernet

    from tests.services import postgres, process
    from tests.services import redis as test_redis
    from tests.stack import Stack

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    server_url = test_redis.find_server()
    private = None
    if server_url is None:
        private = test_redis.PrivateRedisServer().start()
        claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
    else:
        claimed = test_redis.claim_database(server_url)
    port = process.free_port()
    base = f"http://127.0.0.1:{port}"
    var_dir = Path(tempfile.mkdtemp(prefix="sightline-bench-docs-"))
    env = {
        "SIGHTLINE_ENV": "test",
        "SIGHTLINE_VAR_DIR": str(var_dir),
        "DATABASE_URL": database.url,
        "REDIS_URL": claimed.url,
        "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
        "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "PUBLIC_BASE_URL": base,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    stack = None
    try:
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")
        from config import get_settings

        processes = get_settings().documents.render_processes
        data = bench_pdf(args.pages)
        alone = [pymupdf_alone(data) for _ in range(args.repeat)]
        with tempfile.TemporaryDirectory() as folder:
            same = [same_work_one_process(data, Path(folder)) for _ in range(args.repeat)]
        runs = [pipeline(data) for _ in range(args.repeat)]

        stack = Stack(env, var_dir / "logs").start("web")

        def answers() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        stack.wait_for("the web process", answers, timeout=30)
        paints, fresh = first_paint(base, link_for_last_document(), args.loads)
    finally:
        if stack is not None:
            stack.stop()
        claimed.release()
        if private is not None:
            private.stop()
        database.drop()

    cpus = os.cpu_count()
    median = statistics.median
    pipeline_rate = median(r for r, _ in runs)
    print(
        f"documents: a {args.pages}-page PDF ({len(data) / 1024:.0f} KB), {cpus} CPUs, "
        f"medians of {args.repeat} runs"
    )
    print(
        f"  pymupdf alone (render at 1600 px, 1 process, no encoding): {median(alone):.0f} pages/s"
    )
    print(
        f"  pymupdf + pillow, our per-page work (1600/800/200 px JPEG + text, 1 process, "
        f"not stored): {median(same):.0f} pages/s"
    )
    print(
        f"  pipeline end to end (sandbox start-up, inspection, {processes} render processes, "
        f"stored in PostgreSQL): {pipeline_rate:.0f} pages/s "
        f"({median(t for _, t in runs):.2f} s for {args.pages} pages)"
    )

    def spread(values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
        return f"median {median(ordered):.0f} ms, p90 {p90:.0f} ms, best {ordered[0]:.0f} ms"

    print(
        f"  first page painted in Chromium, {len(paints)} loads, nothing cached: "
        f"{spread(paints)} (target <= 300 ms)"
    )
    print(f"  the same from a new browser context each time: {spread(fresh)}")
    print(
        f"documents: {pipeline_rate:.0f} pages/s pipeline vs {median(alone):.0f} pages/s "
        f"pymupdf alone; first page painted in {median(paints):.0f} ms (median), "
        f"{load_note(load)}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
