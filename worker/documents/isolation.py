"""Running a child process with no network: a network namespace where the platform allows it.

    unshare --net -- CMD ...                          as root (CAP_SYS_ADMIN)
    unshare --user --map-root-user --net -- CMD ...   unprivileged, where the kernel
                                                      allows user namespaces
    CMD ...                                           elsewhere (a Heroku dyno allows
                                                      neither): nothing is added

A new network namespace holds one interface, loopback, and it is down: every
connect() fails at once, to 127.0.0.1 as to anywhere, and no name resolves.
`unshare` execs the command in place (no fork), so the child keeps its pid, its
process group and the limits set before it: the caller's killpg reaches it all.
The filesystem is shared as before: this stops network access, not local reads.

What works is found once per process, by running ``true`` under each candidate
in turn, and logged once as ``document_isolation network=namespace method=…`` or
``network=none reason=…``. `SIGHTLINE_DOCUMENT_NETWORK_ISOLATION` says what to do
with the answer: ``auto`` uses a namespace where one works and converts without
it elsewhere, ``required`` refuses to start LibreOffice without one, ``off``
never adds one.

Must never: fail a conversion merely because isolation is missing, unless the
operator asked for ``required``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

MODES = ("auto", "required", "off")
PROBE_SECONDS = 10


class IsolationUnavailableError(RuntimeError):
    """Network isolation was required and this machine cannot provide it."""


@dataclass(frozen=True)
class Isolation:
    """How children are cut off from the network here: a command prefix, or none."""

    prefix: tuple[str, ...]
    method: str
    reason: str = ""

    @property
    def available(self) -> bool:
        return bool(self.prefix)


def _candidates(unshare: str) -> list[tuple[str, ...]]:
    plain = (unshare, "--net", "--")
    as_user = (unshare, "--user", "--map-root-user", "--net", "--")
    return [plain, as_user] if os.geteuid() == 0 else [as_user]


def _works(prefix: tuple[str, ...], true: str) -> str:
    """'' if `prefix true` succeeds, else why not (its last line of output)."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [*prefix, true],
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


@lru_cache(maxsize=1)
def detect() -> Isolation:
    """What this machine allows, found once per process (and logged once)."""
    unshare = shutil.which("unshare")
    true = shutil.which("true") or "/bin/true"
    if unshare is None:
        found = Isolation((), "none", "unshare (util-linux) is not installed")
    else:
        reasons = []
        found = Isolation((), "none")
        for prefix in _candidates(unshare):
            reason = _works(prefix, true)
            if not reason:
                found = Isolation(prefix, " ".join(("unshare", *prefix[1:-1])))
                break
            reasons.append(f"{' '.join(prefix[1:-1])}: {reason}")
        if not found.available:
            found = Isolation((), "none", "; ".join(reasons))
    if found.available:
        log.info("document_isolation network=namespace method=%r", found.method)
    else:
        log.warning(
            "document_isolation network=none reason=%r (LibreOffice's own settings are "
            "the protection)",
            found.reason,
        )
    return found


def without_network(command: list[str], mode: str) -> list[str]:
    """`command`, run in a network namespace when `mode` and the machine allow it.

    Raises:
        IsolationUnavailableError: `mode` is ``required`` and no namespace can be made.
        ValueError: `mode` is not one of `MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"network isolation mode: expected one of {MODES}, got {mode!r}")
    if mode == "off":
        return command
    isolation = detect()
    if isolation.available:
        return [*isolation.prefix, *command]
    if mode == "required":
        raise IsolationUnavailableError(isolation.reason)
    return command
