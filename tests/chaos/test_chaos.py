"""The chaos run's short form, in every `make test`: real parts failing, every promise checked.

`tests.chaos.harness.CI`: 70 enrolments (~100 sends), 30 replies, 20
out-of-offices, bounces and delay notices, 1,000 tracking hits, workers, the
events consumer and the listener SIGKILLed every few seconds, Redis restarted
once, Salesforce failing 10 % of calls with every kind of error. `make chaos`
runs the full size (10,000 hits, ~1,000 sends) and prints the figures.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.faults import LOCKED_CALLS
from tests.chaos.harness import CI, run_chaos
from tests.fakes.salesforce import FAULT_KINDS

# The run has its own deadlines (load, then drain) and reports what did not settle;
# pytest's 300 s default would cut it off with nothing but a stack trace.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]


def test_nothing_lost_nothing_doubled_through_kills_a_redis_restart_and_salesforce_faults(
    dovecot: Any, smtp_server: Any, tmp_path: Path
) -> None:
    lines: list[str] = []
    started = time.monotonic()

    def say(line: str) -> None:
        lines.append(f"[{time.monotonic() - started:6.1f} s] {line}")

    result = run_chaos(CI, work_dir=tmp_path, dovecot=dovecot, smtp=smtp_server, say=say)
    if result.problems:  # what the processes said about it, kept past pytest's temp rotation
        lines += why_unsettled(tmp_path / "logs", result.problems)
    report = "\n".join(lines + result.report())
    print(report)
    assert result.line() == (
        "chaos: lost 0, duplicated 0, missing tasks 0, wrong halts 0, dead letters 0, "
        "shed 0, strangers 0"
    ), report
    assert result.problems == [], report
    assert result.secrets_in_logs == [], report
    assert result.unexpected_exits == [], report
    # The storm really happened: every killable process died, every fault kind fired,
    # and the traffic went through (a run that did nothing would pass the checks above).
    assert {"events", "listener"} <= set(result.kills), report
    assert result.kills["worker"] + result.kills["worker-2"] + result.kills["sync"] >= 1, report
    assert set(result.faults) == set(FAULT_KINDS), report
    assert result.faults["unable_to_lock_row"] >= 1 + LOCKED_CALLS, report
    assert result.hits_acknowledged >= 0.95 * CI.hits, report
    # The Salesforce and engagement checks had something to check: every step delivered
    # owes a Task, and the counters of the emails that were read were compared.
    assert result.tasks_expected >= CI.enrollments + CI.replies + CI.hard_bounces, report
    assert result.engagement_checked >= CI.enrollments, report
    assert (
        sum(result.matched.values())
        == sum(result.delivered.values())
        == (CI.replies + CI.auto_replies + CI.hard_bounces + CI.delays)
    ), report
    # Every reply and bounce halted its enrolment, unless it was recorded only after the
    # last step had gone (the enrolment is then rightly finished; `_wrong_halt` checks it).
    late = result.halted_after_last_step
    assert result.states["replied"] + late["reply"] == CI.replies, report
    assert result.states["bounced"] + late["bounce"] == CI.hard_bounces, report
    assert result.paused_and_resumed == CI.auto_replies, report


KEPT_LOGS = Path(tempfile.gettempdir()) / "sightline-chaos-logs"


def why_unsettled(log_dir: Path, problems: list[str]) -> list[str]:
    """The last freshness verdicts logged for each enrolment a problem names; the logs kept.

    A follow-up step that never went out is logged by the sequence tick as
    `step_waits_for_sync` with what was known (last sync, push, running sync).
    """
    shutil.rmtree(KEPT_LOGS, ignore_errors=True)
    shutil.copytree(log_dir, KEPT_LOGS)
    said = [
        line
        for path in sorted(log_dir.glob("*.log"))
        for line in path.read_text(errors="replace").splitlines()
    ]
    found = [f"the processes' logs are kept in {KEPT_LOGS}"]
    for enrollment in re.findall(r"\(enrolment (\d+)\)", "\n".join(problems)):
        mine = [line for line in said if f"enrollment_id={enrollment} " in line]
        found += [f"  enrolment {enrollment}: {line}" for line in mine[-2:]] or [
            f"  enrolment {enrollment}: no line of the logs names it"
        ]
    return found
