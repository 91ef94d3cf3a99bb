"""Office file → PDF with LibreOffice headless, as a process we can always stop.

    soffice --headless --convert-to pdf --outdir OUT INPUT
        -env:UserInstallation=file://<fresh profile>   (no shared state, no lock
                                                        clash with another job)
        in its own process group                        (killpg reaches oosplash
                                                         and soffice.bin too)
        environment: PATH, HOME/TMPDIR in the job's folder, LANG — nothing else
        prlimit --as (address space) when util-linux has it
        wall-clock timeout ─▶ SIGKILL to the group, `ConversionError`

LibreOffice does not run document macros in this mode (macro security stays at
its default), and macro-enabled files are refused before this point.
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

log = logging.getLogger(__name__)

SOFFICE_CANDIDATES = ("soffice", "libreoffice", "/usr/lib/libreoffice/program/soffice")
ADDRESS_SPACE_BYTES = 3 * 1024 * 1024 * 1024


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


def convert_to_pdf(source: Path, workdir: Path, *, timeout: float) -> Path:
    """Convert `source` to a PDF inside `workdir`; returns the PDF's path.

    Raises:
        ConversionError: LibreOffice is missing, timed out, crashed or made no PDF.
    """
    soffice = find_soffice()
    profile = workdir / "lo-profile"
    home = workdir / "lo-home"
    out = workdir / "lo-out"
    for folder in (profile, home, out):
        folder.mkdir(parents=True, exist_ok=True)
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
