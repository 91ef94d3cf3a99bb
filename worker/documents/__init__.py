"""Turning an uploaded file into pages a browser can show fast, safely.

    upload (web) ──▶ `documents` job: process_document(id)
        claim (conditional UPDATE, heartbeat) ─ another process got there first? stop
        sniff the content again; ZIP-based Office file? expansion check (safety),
                       then its links to local files cut, in a sandboxed child  (links)
        Office file ─▶ LibreOffice headless in its own process group, own profile
                       that fetches nothing, in a private filesystem view with no
                       network where the machine allows (else no network, where it
                       allows that), bare environment, memory limit, hard timeout
                       (convert, isolation)
        PDF ─▶ inspect in a sandboxed child: password, damage, page count, and the
               active content it holds (reported, not refused)  (sandbox, pdf_active)
            ─▶ render in N sandboxed children: each page at 1600 and 800 px wide and a
               200 px thumbnail (JPEG), plus its text, within a pixel budget  (sandbox)
            ─▶ stored page by page (images + row in one transaction), progress moves
            ─▶ the download copy: the upload, the PDF made from an Office file, or a
               copy without the active content, checked again  (download)
        ready │ failed with a sentence a person can act on

Modules: `safety` (ZIP expansion), `links` (an Office package's links to local
files cut: a sandboxed child's code, lxml lives only there), `convert`
(LibreOffice), `isolation` (private filesystem view, network namespaces),
`children` (starting the sandboxed children), `sandbox` (the renderer child's
code: PyMuPDF and Pillow live only there), `pdf_active` (active
content: found and removed, in the sandbox), `download` (what a download
serves), `pipeline` (the job's steps), `jobs` (RQ entry points and the recovery
tick), `outgoing` (a document in an email: a per-recipient tracked link or a
MIME attachment).

Must never: parse or render an uploaded file in the worker process itself (a
hostile file may crash or exhaust what parses it: that happens in children we
can kill), pass our environment (database URL, keys) to LibreOffice or the
renderer, or leave a document `converting`/`rendering` forever (a stale
heartbeat is taken over; `attempts` bounds the retries).
"""
