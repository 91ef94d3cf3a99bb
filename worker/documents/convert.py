"""Office file → PDF with LibreOffice headless, as a process we can always stop.

    soffice --headless --convert-to pdf --outdir OUT INPUT
        -env:UserInstallation=file://<fresh profile>   (no shared state, no lock
                                                        clash with another job)
        the profile's registrymodifications.xcu        (links never fetched, no
                                                        http/ftp at all, no macros)
        in a private filesystem view with no network    (isolation: the system's
          where bubblewrap works, else in a network      programs, LibreOffice, and
          namespace where one can be made                 the job's folder — no data)
        in its own process group                        (killpg reaches oosplash
                                                         and soffice.bin too)
        environment: PATH, HOME/TMPDIR in the job's folder, LANG — nothing else
        prlimit --as (address space) when util-linux has it
        wall-clock timeout ─▶ SIGKILL to the group, `ConversionError`

An uploaded document may point at other resources: a linked image
(``<draw:image xlink:href="http://…">``, an OOXML relationship with
``TargetMode="External"``), a linked OLE object, a slide background, its
template. Left alone, LibreOffice 7.4 fetches those over HTTP while converting
(from the worker's network: an SSRF), and draws local files into the PDF — a
PPTX slide background or shape fill, a linked OLE object (a text file shown as
text), an ODP picture, an ODF fill bitmap: another team's page images in the
storage folder, a key, another process's ``/proc/<pid>/environ``. The layers,
and which is enough on its own for what (tests/security/test_office_links.py
for the network, test_office_local_files.py for local files):

                                           network      local files
    1. LibreOffice's profile settings      enough       Writer's links only
    2. the package's local links cut        —           enough (DOCX PPTX ODT ODP)
    3. private filesystem view (bwrap)      enough      enough (every format)
       or a network namespace (unshare)     enough       —

1. LibreOffice's own settings, written into the fresh profile (`PROFILE`; the
   key names are those of LibreOffice 7.4's configuration schema,
   share/registry/main.xcd): `BlockUntrustedRefererLinks` with no trusted
   location (no document's external references are resolved), links never
   updated on load (Writer `Update/Link` = 0 "never", Calc = 1 "never"),
   macros never run (`MacroSecurityLevel` 3, `DisableMacrosExecution`), and the
   WebDAV (http, https, webdav…), FTP and CMIS content providers removed from
   the Universal Content Broker, so no http or ftp URL can be opened at all —
   that last one also covers what the first two miss in 7.4 (a document's
   template date check, a PPTX slide background, a linked OLE object). For
   local files the settings stop Writer's linked pictures, sections and fields,
   and every case tried in the binary .doc and .ppt, not the Impress and
   fill-bitmap cases above: no setting of 7.4 does.
2. The package's references to local files cut before LibreOffice opens it
   (`worker.documents.links`, run by the pipeline in the sandbox): holds
   everywhere, Heroku included, for the ZIP formats.
3. Isolation (`worker.documents.isolation`), where the platform allows it: a
   private filesystem view with no network (bubblewrap: LibreOffice sees the
   system, itself and ``workdir/libreoffice``, nothing else), else a network
   namespace. Heroku dynos allow neither: there, layers 1 and 2 are the
   protection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from worker.documents.isolation import (
    FILE_SETTING,
    IsolationUnavailableError,
    View,
    isolate,
    system_paths,
)

log = logging.getLogger(__name__)

SOFFICE_CANDIDATES = ("soffice", "libreoffice", "/usr/lib/libreoffice/program/soffice")
ADDRESS_SPACE_BYTES = 3 * 1024 * 1024 * 1024
# Fontconfig's cache: without it, every conversion in a private view rescans the fonts.
FONT_CACHES = ("/var/cache/fontconfig",)

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


@lru_cache(maxsize=4)
def libreoffice_paths(soffice: str) -> tuple[Path, ...]:
    """What LibreOffice reads besides the system's folders: its install, and where that links.

    Debian's install links its registry into /etc/libreoffice and its bundled
    extensions into /var/lib and /var/spool: those targets go in the view too.
    Found once per process (a walk of about 2,500 entries, 40 ms here).
    """
    install = Path(os.path.realpath(soffice)).parent.parent
    roots = {install, *(Path(p) for p in FONT_CACHES if os.path.isdir(p))}
    for folder, dirs, files in os.walk(install):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            if os.path.islink(path):
                roots.add(Path(os.path.realpath(path)))
    covered = (*system_paths(), install)
    return tuple(sorted(p for p in roots if p == install or not _under(p, covered)))


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _isolated(
    command: list[str], soffice: str, folder: Path, network: str, files: str
) -> list[str]:
    """`command` with as little of the machine as the settings and the machine allow."""
    view = View(read=(*system_paths(), *libreoffice_paths(soffice)), write=(folder,), cwd=folder)
    try:
        return isolate(command, network=network, files=files, view=view)
    except IsolationUnavailableError as exc:
        log.error(
            "libreoffice_not_started isolation=required setting=%s reason=%r", exc.setting, str(exc)
        )
        cut_off = (
            "with no access to this server's files"
            if exc.setting == FILE_SETTING
            else "without network access"
        )
        raise ConversionError(
            f"this server is set to convert Office files only {cut_off} "
            f"({exc.setting}=required), which it cannot provide; ask whoever runs "
            "Sightline, or upload a PDF"
        ) from None


def _signal(returncode: int | None, *, wrapped: bool) -> int:
    """The signal that stopped LibreOffice, or 0 (bubblewrap, which forks, reports 128 + n)."""
    if returncode is None:
        return 0
    if returncode < 0:
        return -returncode
    return returncode - 128 if wrapped and returncode > 128 else 0


def convert_to_pdf(
    source: Path,
    workdir: Path,
    *,
    timeout: float,
    network_isolation: str = "auto",
    file_isolation: str = "auto",
) -> Path:
    """Convert `source` to a PDF; returns the PDF's path, inside `workdir`.

    LibreOffice works in a folder of its own, ``workdir/libreoffice``: a copy of
    `source`, its profile, its home and its output, and nothing else. Where the
    filesystem is isolated, that folder is all of the machine's data it sees.
    `network_isolation` and `file_isolation` are ``auto``, ``required`` or ``off``
    (see `worker.documents.isolation`).

    Raises:
        ConversionError: LibreOffice is missing, timed out, crashed or made no PDF,
            or isolation was required and is not available here.
    """
    soffice = find_soffice()
    folder = workdir / "libreoffice"
    profile = folder / "profile"
    home = folder / "home"
    out = folder / "out"
    for path in (profile, home, out, folder / "in"):
        path.mkdir(parents=True, exist_ok=True)
    write_profile(profile)
    document = folder / "in" / source.name
    shutil.copyfile(source, document)
    command = _isolated(
        limited(
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
                str(document),
            ],
            ADDRESS_SPACE_BYTES,
        ),
        soffice,
        folder,
        network_isolation,
        file_isolation,
    )
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - a fixed command; the file is only an argument
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=bare_environment(home),
        cwd=folder,
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
        signalled = _signal(process.returncode, wrapped=Path(command[0]).name == "bwrap")
        if signalled:
            reason = f"LibreOffice stopped with signal {signalled}"
        else:
            reason = "LibreOffice could not read it (damaged, or password-protected?)"
        raise ConversionError(f"it could not be converted to PDF: {reason}")
    log.info("libreoffice_converted seconds=%.2f bytes=%s", elapsed, pdf.stat().st_size)
    return pdf
