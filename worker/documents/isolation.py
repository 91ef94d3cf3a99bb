"""Running a child cut off from the network and from the machine's files, where the platform allows.

    bwrap --unshare-user-try --unshare-pid --unshare-ipc    bubblewrap works (root, or
          --unshare-uts --unshare-cgroup-try --unshare-net   unprivileged user namespaces):
          --die-with-parent --cap-drop ALL                   a private filesystem view and
          --proc /proc --dev /dev --tmpfs /tmp               no network
          --ro-bind R R          (each of the view's read roots)
          --tmpfs D              (each data path inside a read root)
          --bind W W             (the job's own folder)
          --chdir C -- CMD ...
    unshare --net -- CMD ...                          no bubblewrap, namespaces as root
    unshare --user --map-root-user --net -- CMD ...   ... or as an unprivileged user:
                                                      no network, files shared
    CMD ...                                           neither (a Heroku dyno): nothing added

The filesystem view is an allow-list (`View`): a new root holding only the
read-only system folders the program needs (/usr, a few files of /etc, what the
caller adds: LibreOffice's install and registry, Python's), an empty /tmp, a
/proc that shows only the child's own processes (so no other process's
``environ``), a minimal /dev, and the job's folder, writable. Nothing else
exists in there: not the document storage folder (other teams' page images),
not the project's var/ (secret key, embedded Redis dump, SQLite file), not the
app's folder, /root, /home, other jobs' folders. `DATA_PATHS` that happen to lie
inside a read root (an app installed under /usr/src/app, say) are covered by an
empty tmpfs. Capabilities are dropped, so the child cannot mount its way out.

A network namespace holds one interface, loopback, and it is down: every
connect() fails at once, to 127.0.0.1 as to anywhere. `unshare` execs in place;
bwrap forks but the child stays in the caller's process group (no new session),
so the caller's killpg reaches it all, and ``--die-with-parent`` covers the rest.

What works is found once per process, by running ``true`` under each candidate,
and logged once: ``document_isolation network=namespace files=private
method=bwrap``, or ``files=shared`` / ``network=none`` with the reason. Two
settings say what to do with the answer, each ``auto`` (use it where it works),
``required`` (refuse to start the child without it) or ``off``:
`SIGHTLINE_DOCUMENT_NETWORK_ISOLATION` and `SIGHTLINE_DOCUMENT_FILE_ISOLATION`.

Must never: fail a conversion merely because isolation is missing, unless the
operator asked for ``required``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from config import get_settings
from config.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

MODES = ("auto", "required", "off")
PROBE_SECONDS = 10
NETWORK_SETTING = "SIGHTLINE_DOCUMENT_NETWORK_ISOLATION"
FILE_SETTING = "SIGHTLINE_DOCUMENT_FILE_ISOLATION"

# Top-level system folders: bound read-only, or recreated as the symlinks they are
# on a merged-/usr system (/bin -> usr/bin).
SYSTEM_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a dynamically linked program needs: the loader's cache, the time
# zone, the alternatives' symlinks, fonts. Not the rest (TLS keys, app configs).
SYSTEM_ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/fonts",
)
_NAMESPACES = (
    "--unshare-user-try",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
)


class IsolationUnavailableError(RuntimeError):
    """Isolation was required (`setting` says which) and this machine cannot provide it."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(reason)
        self.setting = setting


@dataclass(frozen=True)
class View:
    """What of the machine's files a child sees: these folders and files, nothing else."""

    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    cwd: Path | None = None


@dataclass(frozen=True)
class Protection:
    """What this machine allows, found once per process."""

    bwrap: str | None = None  # a bubblewrap that works here
    unshare: tuple[str, ...] = ()  # a working `unshare ... --net --` prefix
    files_reason: str = ""
    network_reason: str = ""

    @property
    def network(self) -> bool:
        return self.bwrap is not None or bool(self.unshare)


@dataclass
class _Probe:
    true: str
    reasons: list[str] = field(default_factory=list)


def _works(command: list[str]) -> str:
    """'' if `command` succeeds, else why not (its last line of output)."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode == 0:
        return ""
    output = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
    return output[-1] if output else f"exit status {done.returncode}"


def _find_bwrap(true: str) -> tuple[str | None, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed"
    with tempfile.TemporaryDirectory(prefix="sightline-probe-") as folder:
        view = View(read=system_paths(), write=(Path(folder),), cwd=Path(folder))
        reason = _works([bwrap, *bwrap_arguments(view, network=True), "--", true])
    return (bwrap, "") if not reason else (None, f"bwrap: {reason}")


def _find_unshare(true: str) -> tuple[tuple[str, ...], str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        return (), "unshare (util-linux) is not installed"
    plain = (unshare, "--net", "--")
    as_user = (unshare, "--user", "--map-root-user", "--net", "--")
    reasons = []
    for prefix in [plain, as_user] if os.geteuid() == 0 else [as_user]:
        reason = _works([*prefix, true])
        if not reason:
            return prefix, ""
        reasons.append(f"{' '.join(prefix[1:-1])}: {reason}")
    return (), "; ".join(reasons)


@lru_cache(maxsize=1)
def detect() -> Protection:
    """What this machine allows, found once per process (and logged once)."""
    true = shutil.which("true") or "/bin/true"
    bwrap, files_reason = _find_bwrap(true)
    unshare, network_reason = _find_unshare(true)
    found = Protection(bwrap, unshare, files_reason, network_reason)
    if bwrap is not None:
        log.info("document_isolation network=namespace files=private method=bwrap")
    elif unshare:
        log.warning(
            "document_isolation network=namespace files=shared method=%r reason=%r (links to "
            "local files are cut from the document before conversion: the protection for files)",
            " ".join(("unshare", *unshare[1:-1])),
            files_reason,
        )
    else:
        log.warning(
            "document_isolation network=none files=shared reason=%r (LibreOffice's own settings "
            "and the links cut from the document before conversion are the protection)",
            f"{files_reason}; {network_reason}",
        )
    return found


# -- the view ----------------------------------------------------------------------


def system_paths() -> tuple[Path, ...]:
    """The read roots every child needs: the system's programs and libraries."""
    return tuple(Path(p) for p in (*SYSTEM_ROOTS, *SYSTEM_ETC) if os.path.lexists(p))


def data_paths() -> tuple[Path, ...]:
    """Where this process keeps data no child may see, wherever a read root covers it."""
    settings = get_settings()
    paths = [PROJECT_ROOT, settings.var_dir, Path.home(), Path.cwd(), Path(tempfile.gettempdir())]
    if settings.documents.storage.startswith("/"):
        paths.append(Path(settings.documents.storage))
    return tuple(Path(os.path.realpath(p)) for p in paths)


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _bind(flag: str, path: Path) -> list[str]:
    """Arguments that put `path` in the view as it is here: a symlink stays a symlink."""
    if path.is_symlink() and str(path) in SYSTEM_ROOTS:
        return ["--symlink", os.readlink(path), str(path)]
    real = os.path.realpath(path)
    return [f"{flag}-try", real, real] if real == str(path) else [flag + "-try", real, str(path)]


def bwrap_arguments(view: View, *, network: bool, hide: tuple[Path, ...] = ()) -> list[str]:
    """bubblewrap's arguments for `view` (see the module docstring), without the command."""
    arguments = ["--die-with-parent", "--cap-drop", "ALL", *_NAMESPACES]
    if network:
        arguments.append("--unshare-net")
    # An empty /tmp (other jobs' folders are not there), then the read roots: one
    # that lies under /tmp (a Python unpacked there, say) stays visible.
    arguments += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
    reads = sorted(set(view.read), key=lambda p: len(p.parts))
    for path in reads:
        arguments += _bind("--ro-bind", path)
    # Data inside a read root: covered, then whatever read root lies inside it bound again.
    hidden = [
        p for p in hide if p != Path("/") and _inside(p, reads) and not _inside(p, view.write)
    ]
    for path in sorted(set(hidden), key=lambda p: len(p.parts)):
        arguments += ["--tmpfs", str(path)]
    for path in reads:
        if _inside(path, hidden) and path not in hidden:
            arguments += _bind("--ro-bind", path)
    for path in view.write:
        arguments += ["--bind", str(path), str(path)]
    if view.cwd is not None:
        arguments += ["--chdir", str(view.cwd)]
    return arguments


# -- the one entry point -----------------------------------------------------------


def _check(mode: str, setting: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{setting}: expected one of {MODES}, got {mode!r}")


def isolate(command: list[str], *, network: str, files: str, view: View) -> list[str]:
    """`command`, run with as little of the machine as `network`, `files` and the machine allow.

    Raises:
        IsolationUnavailableError: a mode is ``required`` and this machine cannot
            provide it (`setting` names which).
        ValueError: a mode is not one of `MODES`.
    """
    _check(network, NETWORK_SETTING)
    _check(files, FILE_SETTING)
    if network == "off" and files == "off":
        return command
    found = detect()
    if files != "off" and found.bwrap is not None:
        arguments = bwrap_arguments(view, network=network != "off", hide=data_paths())
        return [found.bwrap, *arguments, "--", *command]
    if files == "required":
        raise IsolationUnavailableError(FILE_SETTING, found.files_reason)
    if network == "off":
        return command
    if found.unshare:
        return [*found.unshare, *command]
    if network == "required":
        raise IsolationUnavailableError(NETWORK_SETTING, found.network_reason)
    return command


def without_network(command: list[str], mode: str) -> list[str]:
    """`command` in a network namespace when `mode` and the machine allow it; files shared.

    Raises:
        IsolationUnavailableError: `mode` is ``required`` and no namespace can be made.
        ValueError: `mode` is not one of `MODES`.
    """
    return isolate(command, network=mode, files="off", view=View())
