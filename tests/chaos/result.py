"""What a chaos run found: every count, the report, and the one line that sums it up.

    chaos: lost <n>, duplicated <n>, missing tasks <n>, wrong halts <n>, dead letters <n>,
           shed <n>, strangers <n>

All seven must be 0 in a run whose faults are all transient (process kills, a
graceful Redis restart, Salesforce errors that go away): nothing the harness
saw acknowledged may be missing, nothing may exist twice, no Task may be
absent or unexplained, no row may have been given up on, no hit turned away.

- lost: acknowledged hits not stored, injected answers not recorded against
  the step they answer, engagement a Task counts short of the acknowledged hits;
- duplicated: hits stored twice, answers recorded twice, a step delivered twice,
  a Task written twice, engagement counted beyond the hits;
- missing tasks: Tasks the ledger owes that the org does not hold;
- wrong halts: enrolments that did not end as their answer demands;
- dead letters: outbox rows the product gave up on;
- shed: hits answered without being kept (seen in the answers or counted by
  the product, whichever is more);
- strangers: Tasks in the org that nothing the harness did explains.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# With `appendfsync everysec` Redis fsyncs the AOF once a second, and when a fsync
# is slow it delays writes for up to one more second: a crash may lose up to two
# seconds of acknowledged writes (redis.io, "Redis persistence").
FSYNC_WINDOW_SECONDS = 2.0


@dataclass
class ChaosResult:
    size: str
    seconds: float = 0.0
    redis_mode: str = "graceful"
    kills: Counter[str] = field(default_factory=Counter)
    unexpected_exits: list[str] = field(default_factory=list)
    redis_down_seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    api_calls: int = 0
    # hits
    hits_sent: int = 0
    hits_acknowledged: int = 0
    hits_refused: Counter[str] = field(default_factory=Counter)
    hits_lost: int = 0
    hits_lost_in_fsync_window: int = 0
    fsync_loss_oldest: float = 0.0  # seconds before the crash the oldest of those was answered
    hits_duplicated: int = 0
    hits_recorded_unacknowledged: int = 0
    shed_seen: int = 0  # answers carrying X-Sightline-Hit: shed
    shed_counted: int = 0  # the product's own counter
    # answers
    delivered: Counter[str] = field(default_factory=Counter)
    matched: Counter[str] = field(default_factory=Counter)
    answers_lost: int = 0
    answers_duplicated: int = 0
    quarantined: int = 0
    # enrolments and sends
    states: Counter[str] = field(default_factory=Counter)
    paused_and_resumed: int = 0
    wrong_halts: int = 0
    handover_window: int = 0
    # A reply or bounce recorded only after the enrolment had sent its last step
    # (the mailbox's sync was held back by a kill for longer than the step delay):
    # the enrolment rightly stays finished, and the follow-up had gone out.
    halted_after_last_step: Counter[str] = field(default_factory=Counter)
    sends: Counter[int] = field(default_factory=Counter)  # by step, from the SMTP server
    sends_duplicated: int = 0
    # Salesforce
    tasks_expected: int = 0
    tasks_in_org: int = 0
    tasks_missing: int = 0
    tasks_duplicated: int = 0
    strangers: int = 0
    engagement_checked: int = 0
    engagement_short: int = 0  # counted below what the acknowledged hits demand
    engagement_over: int = 0  # counted beyond every hit sent
    dead_letters: list[str] = field(default_factory=list)
    secrets_in_logs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.hits_lost + self.answers_lost + self.engagement_short

    @property
    def duplicated(self) -> int:
        return (
            self.hits_duplicated
            + self.answers_duplicated
            + self.sends_duplicated
            + self.tasks_duplicated
            + self.engagement_over
        )

    @property
    def shed(self) -> int:
        return max(self.shed_seen, self.shed_counted)

    @property
    def engagement_mismatches(self) -> int:
        return self.engagement_short + self.engagement_over

    def line(self) -> str:
        return (
            f"chaos: lost {self.lost}, duplicated {self.duplicated}, "
            f"missing tasks {self.tasks_missing}, wrong halts {self.wrong_halts}, "
            f"dead letters {len(self.dead_letters)}, shed {self.shed}, "
            f"strangers {self.strangers}"
        )

    def report(self) -> list[str]:
        def counts(counter: Counter[Any]) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(counter.items())) or "none"

        kills = sum(self.kills.values())
        refused = sum(self.hits_refused.values())
        lines = [
            f"chaos ({self.size}): {sum(self.sends.values())} sends, {self.hits_sent} hits, "
            f"{sum(self.delivered.values())} answers in {self.seconds:.0f} s",
            f"processes SIGKILLed and restarted: {kills} ({counts(self.kills)}); "
            f"exited on their own: {len(self.unexpected_exits)}",
            self._redis_line(),
            f"salesforce faults injected: {sum(self.faults.values())} ({counts(self.faults)}); "
            f"API calls charged: {self.api_calls}",
            f"hits: {self.hits_sent} sent, {self.hits_acknowledged} acknowledged, "
            f"{refused} not acknowledged ({counts(self.hits_refused)}); lost {self.hits_lost}, "
            f"duplicated {self.hits_duplicated}, recorded though not acknowledged "
            f"{self.hits_recorded_unacknowledged}; shed: {self.shed_seen} answers said so, "
            f"the product counted {self.shed_counted}",
            "answers delivered vs matched: "
            + ", ".join(
                f"{kind} {self.matched[kind]}/{n}" for kind, n in sorted(self.delivered.items())
            )
            + f"; recorded twice {self.answers_duplicated}; quarantined {self.quarantined}",
            f"enrolments: {sum(self.states.values())} ({counts(self.states)}); paused by an "
            f"out-of-office and resumed {self.paused_and_resumed}; wrong halts "
            f"{self.wrong_halts}; steps handed over while a reply was being recorded "
            f"{self.handover_window}; answers recorded only after the last step went "
            f"({counts(self.halted_after_last_step)})",
            f"sends the SMTP server delivered: {counts(self.sends)} (by step); "
            f"delivered twice {self.sends_duplicated}",
            f"salesforce Tasks: owed by the ledger {self.tasks_expected}, in the org "
            f"{self.tasks_in_org}, missing {self.tasks_missing}, duplicated "
            f"{self.tasks_duplicated}, strangers {self.strangers}; engagement counters "
            f"checked {self.engagement_checked}: short of the acknowledged hits "
            f"{self.engagement_short}, beyond the hits {self.engagement_over}",
            f"dead letters: {len(self.dead_letters)}",
            *(f"  {d}" for d in self.dead_letters[:20]),
            f"secrets found in process logs: {len(self.secrets_in_logs)}",
            *(f"  {s}" for s in self.secrets_in_logs[:20]),
            f"problems: {len(self.problems)}",
            *(f"  {p}" for p in self.problems[:40]),
            self.line(),
        ]
        return lines

    def _redis_line(self) -> str:
        if self.redis_mode != "crash":
            return (
                f"redis: restarted once mid-run (SIGTERM: the AOF is flushed, nothing "
                f"acknowledged may be lost), back after {self.redis_down_seconds * 1000:.0f} ms"
            )
        oldest = (
            f", the oldest answered {self.fsync_loss_oldest * 1000:.0f} ms before it"
            if self.hits_lost_in_fsync_window
            else ""
        )
        return (
            f"redis: crashed (SIGKILL) once mid-run, back after "
            f"{self.redis_down_seconds * 1000:.0f} ms; AOF appendfsync everysec: acknowledged "
            f"hits lost in the fsync window (answered at most {FSYNC_WINDOW_SECONDS:.0f} s "
            f"before the crash): {self.hits_lost_in_fsync_window}{oldest}"
        )
