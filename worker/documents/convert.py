"""Office file → PDF with LibreOffice headless, as a process we can always stop.

    soffice --headless --convert-to pdf --outdir OUT INPUT
        -env:UserInstallation=file://<fresh profile>   (no shared state, no lock
                                                        clash with another job)
        the profile's registrymodifications.xcu        (links never fetched, no
                                                        http/ftp at all, no macros)
        in a network namespace where one can be made   (isolation: no interface)
        in its own process group                        (killpg reaches oosplash
                                                         and soffice.bin too)
        environment: PATH, HOME/TMPDIR in the job's folder, LANG — nothing else
        prlimit --as (address space) when util-linux has it
        wall-clock timeout ─▶ SIGKILL to the group, `ConversionError`

An uploaded document may point at other resources: a linked image
(``<draw:image xlink:href="http://…">``, an OOXML relationship with
``TargetMode="External"``), a linked OLE object, a slide background, its
template. Left alone, LibreOffice 7.4 fetches those over HTTP while converting
(from the worker's network: an SSRF), and includes linked local images. Two
layers stop that, each enough on its own for every case in
tests/security/test_office_links.py:

1. LibreOffice's own settings, written into the fresh profile (`PROFILE`; the
   key names are those of LibreOffice 7.4's configuration schema,
   share/registry/main.xcd): `BlockUntrustedRefererLinks` with no trusted
   location (no document's external references are resolved), links never
   updated on load (Writer `Update/Link` = 0 "never", Calc = 1 "never"),
   macros never run (`MacroSecurityLevel` 3, `DisableMacrosExecution`), and the
   WebDAV (http, https, webdav…), FTP and CMIS content providers removed from
   the Universal Content Broker, so no http or ftp URL can be opened at all —
   that last one also covers what the first two miss in 7.4 (a document's
   template date check, a PPTX slide background, a linked OLE object).
2. A network namespace (`worker.documents.isolation`), where the platform
   allows one. Heroku dynos do not: there, layer 1 is the protection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from worker.documents.isolation import IsolationUnavailableError, without_network

log = logging.getLogger(__name__)

SOFFICE_CANDIDATES = ("soffice", "libreoffice", "/usr/lib/libreoffice/program/soffice")
ADDRESS_SPACE_BYTES = 3 * 1024 * 1024 * 1024

_SCRIPTING = "/org.openoffice.Office.Common/Security/Scripting"
_PROVIDERS = (
    "/org.openoffice.ucb.Configuration/ContentProviders/Local/SecondaryKeys/Office/ProviderData"
)
# The Universal Content Broker's providers that reach the network, by their node
# names in LibreOffice's own configuration (share/registry/main.xcd): WebDAV for
# http, vnd.sun.star.webdav, webdav, https, vnd.sun.star.webdavs, webdavs; FTP; CMIS.
NETWORK_PROVIDERS = (
    "Provider3",
    "Provider4",
    "Provider4a",
    "Provider12",
    "Provider12a",
    "Provider12b",
    "Provider6",
    "Provider43",
)


def _prop(path: str, name: str, value: str) -> str:
    return (
        f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">'
        f"<value>{value}</value></prop></item>"
    )


# What the fresh profile holds before LibreOffice first starts (see the module docstring).
PROFILE = "\n".join(
    [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry"'
        ' xmlns:xs="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
        _prop(_SCRIPTING, "BlockUntrustedRefererLinks", "true"),
        # No trusted locations: an empty list, so no document's folder is exempt.
        f'<item oor:path="{_SCRIPTING}"><prop oor:name="SecureURL" oor:op="fuse">'
        "<value/></prop></item>",
        _prop(_SCRIPTING, "MacroSecurityLevel", "3"),
        _prop(_SCRIPTING, "DisableMacrosExecution", "true"),
        _prop("/org.openoffice.Office.Writer/Content/Update", "Link", "0"),
        _prop("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),
        f'<item oor:path="{_PROVIDERS}">'
        + "".join(f'<node oor:name="{name}" oor:op="remove"/>' for name in NETWORK_PROVIDERS)
        + "</item>",
        "</oor:items>",
        "",
    ]
)


class ConversionError(RuntimeError):
    """LibreOffice could not make a PDF; the message is safe to show a user."""


def find_soffice() -> str:
    for candidate in SOFFICE_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise ConversionError(
        "LibreOffice is not installed on this server, so Word and PowerPoint files cannot "
        "be converted (install libreoffice-writer-nogui and libreoffice-impress-nogui)"
    )


def bare_environment(home: Path) -> dict[str, str]:
    """What a child may see: no database URL, no keys, nothing of ours."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def write_profile(profile: Path) -> None:
    """Prepare a fresh LibreOffice profile folder with our settings in it."""
    user = profile / "user"
    user.mkdir(parents=True, exist_ok=True)
    (user / "registrymodifications.xcu").write_text(PROFILE, encoding="utf-8")


def limited(command: list[str], address_space: int) -> list[str]:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return command
    return [prlimit, f"--as={address_space}", "--core=0", "--", *command]


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def convert_to_pdf(
    source: Path, workdir: Path, *, timeout: float, network_isolation: str = "auto"
) -> Path:
    """Convert `source` to a PDF inside `workdir`; returns the PDF's path.

    `network_isolation` is ``auto``, ``required`` or ``off`` (see
    `worker.documents.isolation`).

    Raises:
        ConversionError: LibreOffice is missing, timed out, crashed or made no PDF,
            or isolation was required and is not available here.
    """
    soffice = find_soffice()
    profile = workdir / "lo-profile"
    home = workdir / "lo-home"
    out = workdir / "lo-out"
    for folder in (profile, home, out):
        folder.mkdir(parents=True, exist_ok=True)
    write_profile(profile)
    command = limited(
        [
            soffice,
            f"-env:UserInstallation={profile.resolve().as_uri()}",
            "--headless",
            "--invisible",
            "--nologo",
            "--norestore",
            "--nolockcheck",
            "--nodefault",
            "--convert-to",
            "pdf",
            "--outdir",
            str(out),
            str(source),
        ],
        ADDRESS_SPACE_BYTES,
    )
    try:
        command = without_network(command, network_isolation)
    except IsolationUnavailableError as exc:
        log.error("libreoffice_not_started isolation=required reason=%r", str(exc))
        raise ConversionError(
            "this server is set to convert Office files only without network access "
            "(SIGHTLINE_DOCUMENT_NETWORK_ISOLATION=required), which it cannot provide; "
            "ask whoever runs Sightline, or upload a PDF"
        ) from None
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - a fixed command; the file is only an argument
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=bare_environment(home),
        cwd=workdir,
        process_group=0,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        log.warning("libreoffice_timeout seconds=%s", timeout)
        raise ConversionError(
            f"converting it to PDF took longer than {timeout:g} s and was stopped"
        ) from None
    finally:
        # Anything it left behind in its group (a stray soffice.bin) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    pdf = out / (source.stem + ".pdf")
    if process.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        detail = output.decode("utf-8", "replace").strip().splitlines()
        last = next((line for line in reversed(detail) if "javaldx" not in line), "")
        log.warning(
            "libreoffice_failed returncode=%s seconds=%.1f output=%r",
            process.returncode,
            elapsed,
            last[:300],
        )
        if process.returncode is not None and process.returncode < 0:
            reason = f"LibreOffice stopped with signal {-process.returncode}"
        else:
            reason = "LibreOffice could not read it (damaged, or password-protected?)"
        raise ConversionError(f"it could not be converted to PDF: {reason}")
    log.info("libreoffice_converted seconds=%.2f bytes=%s", elapsed, pdf.stat().st_size)
    return pdf
